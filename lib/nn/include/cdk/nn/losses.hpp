#pragma once

#include <torch/torch.h>

#include <vector>

#include "cdk/core/metrics.hpp"

namespace cdk::nn {

/// Targets use 0 = no change, 1 = change, 255 = ignored (nodata).
inline constexpr int64_t kIgnoreIndex = 255;

/// Options of the segmentation loss.
struct LossOptions {
    double ce_weight = 1.0;               ///< weight of the cross-entropy term
    double dice_weight = 0.0;             ///< weight of the Dice term (change class)
    std::vector<double> class_weights{};  ///< per-class CE weights {no change, change}; empty = 1, 1
};

/// Throws ConfigError unless the weights are usable: two class weights >= 0 (or none),
/// term weights >= 0 and not both 0.
void validate(const LossOptions& options);

/// Class-weighted cross-entropy over valid pixels; logits [N,2,H,W], target [N,H,W] int64.
torch::Tensor cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& target,
                                 const std::vector<double>& class_weights = {});

/// Soft Dice loss of the change class over valid pixels (1 - Dice).
torch::Tensor dice_loss(const torch::Tensor& logits, const torch::Tensor& target);

/// ce_weight * CE + dice_weight * Dice.
torch::Tensor segmentation_loss(const torch::Tensor& logits, const torch::Tensor& target,
                                const LossOptions& options);

/// Confusion of argmax(logits) against target, valid pixels only — same definitions as
/// cd-eval (cdk::Confusion / cdk::compute_metrics).
cdk::Confusion confusion_from_logits(const torch::Tensor& logits, const torch::Tensor& target);

/// Confusions of "change probability (softmax of the change class) >= t" against target,
/// valid pixels only, one per threshold of `thresholds` (ascending, each in (0, 1)).
std::vector<cdk::Confusion> confusion_at_thresholds(const torch::Tensor& logits, const torch::Tensor& target,
                                                    const std::vector<double>& thresholds);

}  // namespace cdk::nn
