#pragma once

#include <stdexcept>
#include <string>

namespace cdk {

/// Base of every error the library throws: one sentence naming the culprit.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A file could not be opened, read, written, renamed or closed.
class IoError : public Error {
public:
    using Error::Error;
};

/// Options or inputs that do not fit together (grids, band counts, thresholds ...).
class ConfigError : public Error {
public:
    using Error::Error;
};

/// A model or model bundle that cannot be loaded or does not fit its input.
class ModelError : public Error {
public:
    using Error::Error;
};

/// The user asked to stop (progress callback returned false).
class Cancelled : public Error {
public:
    Cancelled() : Error("interrupted") {}
};

/// Quote a user-supplied name for an error message: 'name'.
inline std::string quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace cdk
