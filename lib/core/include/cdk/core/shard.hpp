#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace cdk {

/// One of N equal shares of a list of jobs: job i belongs to shard i mod N.
struct Shard {
    int index = 0;  ///< 0-based shard index, < count
    int count = 1;  ///< number of shards

    /// Whether job `i` (0-based position in the list) belongs to this shard.
    bool holds(size_t i) const { return static_cast<int>(i % static_cast<size_t>(count)) == index; }
    /// "I/N".
    std::string text() const { return std::to_string(index) + "/" + std::to_string(count); }
};

/// Parse "I/N" (0 <= I < N); throws ConfigError naming the text.
Shard parse_shard(const std::string& text);

/// The shard a job runs: `text` when given ("I/N"), else a Slurm job array's task
/// (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), else the whole
/// list (0/1). `getenv` is replaceable for tests.
Shard resolve_shard(const std::string& text,
                    const std::function<const char*(const char*)>& getenv = nullptr);

}  // namespace cdk
