#pragma once
// Training-mode batch norm + ReLU + Dropout2d in one autograd node (private to lib/nn).
//
// LibTorch runs the three as separate operators: in a training step of an FC model at width
// 16 they pass over every activation nine times (batch-norm statistics and output, the
// ReLU, the dropout product, and backward the dropout product, the ReLU mask and batch
// norm's two passes), about a sixth of the step on a 2-core CPU. Fused, the forward pass
// reads the input twice and writes the output once, and the backward pass reads the
// gradient and the input twice and writes the input's gradient once; the ReLU mask is
// recomputed from the input, so nothing beyond the input is kept for backward.

#include <torch/torch.h>

namespace cdk::nn::detail {

/// Whether the fused path is on (default; environment CDK_FUSED_BN=0 or
/// set_fused_bn_enabled(false) switches it off).
bool fused_bn_enabled();
/// Switch the fused path on or off for this process (tests and benchmarks compare both);
/// returns the previous setting.
bool set_fused_bn_enabled(bool on);

/// `bn` in training mode on `x`, then ReLU when `relu`, then Dropout2d with probability
/// `dropout` (0 = none), as one differentiable operation: the same values, gradients,
/// running-statistics update and random numbers as the three LibTorch modules one after
/// the other. Returns an undefined tensor, leaving everything untouched, when the input does
/// not qualify: fused path off, `bn` not training, without affine weights or running
/// statistics, or `x` not a CPU float32 4-D channels-last tensor with more than one value
/// per channel; the caller then runs the modules.
torch::Tensor fused_bn_relu_dropout(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, bool relu,
                                    double dropout);

}  // namespace cdk::nn::detail
