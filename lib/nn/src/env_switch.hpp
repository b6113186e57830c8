#pragma once
// A process-wide on/off switch of lib/nn (private): on unless the environment sets it to 0.

#include <cstdlib>
#include <string>

namespace cdk::nn::detail {

/// False when the environment variable `name` is "0", true otherwise (read once by callers).
inline bool env_switch_on(const char* name) {
    const char* e = std::getenv(name);
    return !(e != nullptr && std::string(e) == "0");
}

}  // namespace cdk::nn::detail
