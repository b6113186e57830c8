#pragma once

#include <functional>
#include <string>

namespace cdk {

/// Progress callback, GDAL-style: fraction done in [0, 1] and a message; return false to stop.
using ProgressFn = std::function<bool(double done, const std::string& message)>;

/// Severity of a log line.
enum class LogLevel { Debug = 0, Info = 1, Warning = 2, Error = 3 };

/// Sink for log lines; the library's default discards them.
using LogFn = std::function<void(LogLevel level, const std::string& message)>;

/// What a library function reports through: a logger and a progress callback.
/// The library never prints; only programs install sinks that write to stderr.
class RunContext {
public:
    RunContext() = default;
    /// Context with the given sinks (either may be empty).
    RunContext(LogFn log, ProgressFn progress);

    /// Log a line at a level.
    void log(LogLevel level, const std::string& message) const;
    /// Log at debug level.
    void debug(const std::string& message) const { log(LogLevel::Debug, message); }
    /// Log at info level.
    void info(const std::string& message) const { log(LogLevel::Info, message); }
    /// Log at warning level.
    void warn(const std::string& message) const { log(LogLevel::Warning, message); }

    /// Report progress; throws cdk::Cancelled when the callback asks to stop.
    void progress(double done, const std::string& message = {}) const;

    /// A context whose progress covers [begin, end] of this one's range (sub-steps).
    RunContext scaled(double begin, double end) const;

    /// The log sink (may be empty).
    const LogFn& log_fn() const { return log_; }

private:
    LogFn log_;
    ProgressFn progress_;
};

}  // namespace cdk
