#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/nn/bundle.hpp"

namespace cdk::pipeline {

/// Models for the CAR partitions of Origin-Partition: bundles in CAR order with the
/// thresholds between them (O-P two-pass inference and MTKD distillation).
struct TeacherSet {
    std::vector<std::string> names;   ///< partition names (small, medium, large ...)
    std::vector<std::string> paths;   ///< bundle paths
    std::vector<nn::Bundle> bundles;  ///< loaded, in evaluation mode, gradients off
    std::vector<double> thresholds;   ///< CAR upper bounds between consecutive teachers
    /// Index of the teacher whose partition holds `car` (cdk::partition_of, as cd-partition).
    int route(double car) const;
    /// [{"name", "bundle", "arch", "width", "car_range"}] for summaries and bundle headers.
    nlohmann::json describe() const;
};

/// Throw ConfigError unless `thresholds` separate `teachers` partitions (one fewer).
void check_threshold_count(size_t teachers, size_t thresholds);

/// Load NAME=BUNDLE items on `device`. Items named as cd-partition names partitions
/// (small, large / small, medium, large / p1 … pK) are put in CAR order; other names keep
/// the given order. `thresholds` empty = read from the bundles'
/// training.train.partition.thresholds. Throws ConfigError/ModelError naming the culprit:
/// malformed items, fewer than two teachers, thresholds missing or of the wrong count,
/// teachers whose bands or normalisation differ.
TeacherSet load_teachers(const std::vector<std::string>& items, std::vector<double> thresholds,
                         const torch::Device& device);

}  // namespace cdk::pipeline
