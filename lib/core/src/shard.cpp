#include "cdk/core/shard.hpp"

#include <cstdlib>
#include <regex>

#include "cdk/core/error.hpp"

namespace cdk {

namespace {

// A non-negative decimal integer that fits an int, or -1.
int parse_count(const std::string& s) {
    static const std::regex digits("[0-9]{1,9}");
    return std::regex_match(s, digits) ? std::stoi(s) : -1;
}

}  // namespace

Shard parse_shard(const std::string& text) {
    const auto slash = text.find('/');
    const int i = slash == std::string::npos ? -1 : parse_count(text.substr(0, slash));
    const int n = slash == std::string::npos ? -1 : parse_count(text.substr(slash + 1));
    if (i < 0 || n < 1 || i >= n)
        throw ConfigError("shard " + quote(text) + " must be I/N with 0 <= I < N, e.g. 0/4");
    return {i, n};
}

Shard resolve_shard(const std::string& text, const std::function<const char*(const char*)>& getenv) {
    if (!text.empty()) return parse_shard(text);
    auto env = [&](const char* name) -> std::string {
        const char* v = getenv ? getenv(name) : std::getenv(name);
        return v ? std::string(v) : std::string();
    };
    const std::string id = env("SLURM_ARRAY_TASK_ID"), count = env("SLURM_ARRAY_TASK_COUNT");
    if (id.empty() || count.empty()) return {};
    const std::string min = env("SLURM_ARRAY_TASK_MIN");
    const int i = parse_count(id), n = parse_count(count), m = min.empty() ? 0 : parse_count(min);
    if (i < 0 || n < 1 || m < 0 || i - m < 0 || i - m >= n)
        throw ConfigError("Slurm array task " + quote(id) + " (min " + quote(min.empty() ? "0" : min) + ", count " +
                          quote(count) + ") does not name a shard; use --shard I/N");
    return {i - m, n};
}

}  // namespace cdk
