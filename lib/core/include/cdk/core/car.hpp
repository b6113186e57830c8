#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace cdk {

// The Origin-Partition rule shared by cd-partition (lib/geo), O-P inference and MTKD
// teacher routing (lib/pipeline, lib/nn): one definition so that a tile, a window and a
// training sample with the same CAR always land in the same partition.

/// Partition index of a CAR: the first k with car <= thresholds[k], else thresholds.size()
/// (partition k holds thresholds[k-1] < car <= thresholds[k]).
int partition_of(double car, const std::vector<double>& thresholds);

/// Names of the partitions that `threshold_count` thresholds make: 1 → small, large;
/// 2 → small, medium, large; otherwise p1 … pK.
std::vector<std::string> partition_names(std::size_t threshold_count);

/// Read a manifest's CAR cell (spaces around it allowed): true when it is a number in
/// [0, 1]; false for junk, NaN, inf or a value outside. cd-partition and the training
/// loader read the column with this one rule.
bool parse_car(const std::string& cell, double& car);

}  // namespace cdk
