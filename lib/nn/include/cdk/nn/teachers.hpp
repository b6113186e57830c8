#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "cdk/nn/bundle.hpp"

namespace cdk::nn {

/// Models for the CAR partitions of Origin-Partition: bundles in CAR order with the
/// thresholds between them (O-P two-pass inference and MTKD distillation).
struct TeacherSet {
    std::vector<std::string> names;   ///< partition names (small, medium, large ...)
    std::vector<std::string> paths;   ///< bundle paths
    std::vector<Bundle> bundles;  ///< loaded, in evaluation mode, gradients off
    std::vector<double> thresholds;   ///< CAR upper bounds between consecutive teachers
    /// Index of the teacher whose partition holds `car` (cdk::partition_of, as cd-partition).
    int route(double car) const;
    /// [{"name", "bundle", "arch", "width", "car_range"}] for summaries and bundle headers.
    nlohmann::json describe() const;
};

/// Run `run(g, index)` for every group g that holds samples (`group_of`: each sample's group;
/// `index`: int64 positions of the group's samples, on `device`) and put each result back at
/// its samples' positions of `out` along dimension 0 (created like the first result, N
/// long, when undefined). Returns the samples of each group. MTKD's routed teachers and
/// Origin-Partition inference share it.
std::vector<int64_t> run_grouped(const std::vector<int>& group_of, size_t groups, const torch::Device& device,
                                 const std::function<torch::Tensor(size_t group, const torch::Tensor& index)>& run,
                                 torch::Tensor& out);

/// Throw ConfigError unless `thresholds` separate `teachers` partitions (one fewer).
void check_threshold_count(size_t teachers, size_t thresholds);

/// Load NAME=BUNDLE items on `device`. Items named as cd-partition names partitions
/// (small, large / small, medium, large / p1 … pK) are put in CAR order; other names keep
/// the given order. `thresholds` empty = read from the bundles'
/// training.train.partition.thresholds. Throws ConfigError/ModelError naming the culprit:
/// malformed items, fewer than two teachers, thresholds missing or of the wrong count,
/// teachers whose bands or normalisation differ. `ctx`, when given, hears a warning for
/// each bundle without a checksum.
TeacherSet load_teachers(const std::vector<std::string>& items, std::vector<double> thresholds,
                         const torch::Device& device, const RunContext* ctx = nullptr);

}  // namespace cdk::nn
