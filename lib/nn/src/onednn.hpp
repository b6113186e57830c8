#pragma once
// Inference-form convolutions run straight through oneDNN (private to lib/nn).
//
// LibTorch 1.13 runs a CPU convolution through the same oneDNN library, but as a bare
// convolution: the ReLU after it is a second pass over memory (slow in bfloat16), under
// autocast the weight is cast to bfloat16 on every call, and the kernel's padding for the
// sub-pixel form is a copy. Called directly, oneDNN applies the ReLU as a post-op while
// the output is still in registers, takes asymmetric padding, and keeps the weight in its
// preferred layout and type from the first call. Same library (Debian's libdnnl, the one
// LibTorch links) and the same direct algorithm, except float32 3x3 convolutions with 64+
// channels, which run as Winograd: float32 results equal LibTorch's up to rounding
// (docs/benchmarks.md).

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <memory>

namespace cdk::nn::detail {

/// Whether this build calls oneDNN directly (libdnnl-dev found at configure time) and it is
/// not switched off (environment CDK_ONEDNN=0, or set_onednn_enabled(false)).
bool onednn_enabled();
/// Switch the direct oneDNN path on or off for this process (tests and benchmarks compare
/// both); returns the previous setting. A build without oneDNN stays off.
bool set_onednn_enabled(bool on);

/// 2x2 max pooling with stride 2 (floor) through oneDNN, without the indices LibTorch's CPU
/// max_pool2d computes and drops; the same conditions as OneDnnConv (any float32 or
/// bfloat16 input, no autocast rule applies). Undefined when `x` does not qualify.
torch::Tensor onednn_max_pool2(const torch::Tensor& x);

/// A 3x3 convolution (stride 1, padding 1, no bias) of a CPU float32 channels-last `x` while
/// an autograd graph is recorded (training), as oneDNN's Winograd F(4x4, 3x3) forward,
/// backward-data and backward-weights passes: one autograd node with LibTorch's values and
/// gradients up to Winograd's rounding. Only when input and output channels reach the
/// training Winograd floor (32; CDK_ONEDNN_WINOGRAD) and the weight is dense; not under
/// autocast.
/// Undefined otherwise, or when oneDNN has no Winograd kernel on this CPU (it needs
/// AVX-512): the caller runs LibTorch.
torch::Tensor onednn_train_conv3x3(const torch::Tensor& x, const torch::Tensor& weight);

/// A fixed-weight 2-D convolution (+ bias, + optional ReLU) for evaluation. forward() runs
/// it through oneDNN when the input qualifies: CPU, 4-D, channels-last contiguous, no
/// autograd graph recorded, float32 (or bfloat16 under CPU bfloat16 autocast, which it
/// follows: bfloat16 output). Otherwise, or when oneDNN has no implementation for it on
/// this CPU, it returns an undefined tensor and the caller runs LibTorch.
class OneDnnConv {
public:
    OneDnnConv() = default;
    /// `weight` [out, in, kh, kw], `bias` [out] (may be undefined); `padding` top, left,
    /// bottom, right.
    OneDnnConv(const torch::Tensor& weight, const torch::Tensor& bias, int64_t stride,
               std::array<int64_t, 4> padding, bool relu);
    /// The convolution of `x`, or an undefined tensor when `x` does not qualify.
    torch::Tensor forward(const torch::Tensor& x) const;
    /// Whether this holds a convolution (default-constructed: no).
    explicit operator bool() const { return static_cast<bool>(impl_); }

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace cdk::nn::detail
