#pragma once
// Building blocks shared by the model families (private to lib/nn).

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cdk/nn/models.hpp"
#include "onednn.hpp"

namespace cdk::nn::detail {

/// Multiply-accumulate counter of the current thread; null when nobody is counting.
int64_t*& mac_counter();

/// Add `macs` multiply-accumulates to the current thread's counter, if one is active.
void add_macs(int64_t macs);

/// Counts the multiply-accumulates of the forward passes run while it lives (this thread).
class MacCounterGuard {
public:
    /// Start counting into `target` (set to 0).
    explicit MacCounterGuard(int64_t& target);
    ~MacCounterGuard();
    MacCounterGuard(const MacCounterGuard&) = delete;
    MacCounterGuard& operator=(const MacCounterGuard&) = delete;

private:
    int64_t* previous_;
};

/// Convolution forward that also counts its multiply-accumulates. `fast`, when given, is the
/// same convolution as a OneDnnConv, tried first; a 3x3, stride-1, bias-free convolution in
/// training tries onednn_train_conv3x3() (Winograd) next.
torch::Tensor conv(torch::nn::Conv2d& c, const torch::Tensor& x, const OneDnnConv* fast = nullptr);
/// Transposed-convolution forward that also counts its multiply-accumulates.
torch::Tensor conv_t(torch::nn::ConvTranspose2d& c, const torch::Tensor& x);
/// Linear forward (last dimension) that also counts its multiply-accumulates.
torch::Tensor linear(torch::nn::Linear& l, const torch::Tensor& x);
/// Batched matrix product that also counts its multiply-accumulates.
torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b);

/// A module with an inference form that computes the same function with fewer passes over
/// memory (batch norm folded into the convolution before it, transposed convolutions as
/// sub-pixel convolutions). prepare_for_inference() calls fold() on every such module;
/// the folded form is used in evaluation mode only, and train(true) drops it, so a folded
/// model can still be trained (and folded again afterwards).
struct Foldable {
    virtual ~Foldable() = default;
    /// Build the inference form from the current weights (evaluation statistics).
    virtual void fold() = 0;
};

/// Options of a ConvBnRelu block.
struct ConvBnReluOptions {
    int64_t in = 1;         ///< input channels
    int64_t out = 1;        ///< output channels
    int64_t kernel = 3;     ///< square kernel size (padding keeps the size at stride 1)
    int64_t stride = 1;     ///< stride
    double dropout = 0.0;   ///< Dropout2d probability after the ReLU (0 = none)
    bool relu = true;       ///< apply ReLU
};

/// Conv (no bias) + BatchNorm + optional ReLU + optional Dropout2d. Folded, in evaluation
/// mode: one convolution with bias, the ReLU fused into it (oneDNN, channels-last) or in place.
struct ConvBnReluImpl : torch::nn::Module, Foldable {
    /// Build from options.
    explicit ConvBnReluImpl(const ConvBnReluOptions& o);
    /// Apply the block.
    torch::Tensor forward(const torch::Tensor& x);
    /// Fold the batch norm's running statistics and affine into the convolution.
    void fold() override;
    /// Switch mode; training drops the folded form.
    void train(bool on = true) override;

    torch::nn::Conv2d conv_{nullptr};      ///< the convolution
    torch::nn::BatchNorm2d bn_{nullptr};   ///< its batch norm
    torch::nn::Dropout2d drop_{nullptr};   ///< dropout (p may be 0)
    ConvBnReluOptions o_;                  ///< options
    torch::Tensor folded_weight_;          ///< conv weight x BN scale (undefined: not folded)
    torch::Tensor folded_bias_;            ///< BN shift
    OneDnnConv fast_;                      ///< the folded convolution + ReLU through oneDNN
};
TORCH_MODULE(ConvBnRelu);

/// A stride-2 transposed convolution (kernel 3, padding 1, output padding 1) as a 2x2
/// convolution into 4x the channels followed by a pixel shuffle: the same output without
/// the zero-inserted input. `weight` [in, out, 3, 3], `bias` [out]; returns {kernel, bias},
/// differentiable with respect to both (the training form uses it too).
std::pair<torch::Tensor, torch::Tensor> subpixel_from_transposed(const torch::Tensor& weight,
                                                                 const torch::Tensor& bias);
/// Apply subpixel_from_transposed()'s kernel and bias to `x` (counts the transposed
/// convolution's multiply-accumulates, so FLOP figures do not depend on the form).
/// `fast`, when given, is that kernel as a OneDnnConv (padding 0, 0, 1, 1), tried first.
/// With `skip`, returns cat({upsampled, skip}, 1) through shuffle_concat() (and `workspace`).
torch::Tensor subpixel_up(const torch::Tensor& x, const torch::Tensor& kernel, const torch::Tensor& bias,
                          const OneDnnConv* fast = nullptr, const torch::Tensor& skip = {},
                          torch::Tensor* workspace = nullptr);
/// The 2x upsampling of a sub-pixel output `y` [N, 4C, H, W] whose channels are ordered
/// (py, px, c) (subpixel_onednn()'s order, not pixel_shuffle's (c, py, px)), concatenated
/// with `skip` [N, Cs, 2H, 2W] (may be undefined) in one pass: each output pixel's C values
/// are one contiguous run of `y`. Channels-last, same dtype. `workspace`, when given, is a
/// buffer kept between calls: reused when it has the output's shape and type and nobody
/// else holds it or a view of it, replaced otherwise (a buffer above glibc's 32 MiB mmap ceiling would be
/// mapped and page-faulted afresh on every call).
torch::Tensor shuffle_concat(const torch::Tensor& y, const torch::Tensor& skip, torch::Tensor* workspace = nullptr);
/// subpixel_from_transposed()'s kernel and bias as a OneDnnConv (bottom/right padding 1),
/// its output channels reordered from (c, py, px) to (py, px, c) for shuffle_concat().
OneDnnConv subpixel_onednn(const std::pair<torch::Tensor, torch::Tensor>& kb);

/// Whether in-place operations on fresh activations are safe: no autograd graph is recorded.
inline bool inference_only() { return !torch::GradMode::is_enabled(); }

/// |a - b|, in place on the difference when no autograd graph is recorded.
inline torch::Tensor abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
    return inference_only() ? (a - b).abs_() : torch::abs(a - b);
}

/// Replicate-pad the bottom/right of a [N,C,H,W] tensor to multiples of `m`.
torch::Tensor pad_to_multiple(const torch::Tensor& x, int64_t m);
/// The top-left [h, w] of a [N,C,H,W] tensor.
torch::Tensor crop(const torch::Tensor& x, int64_t h, int64_t w);
/// ceil(a / b) for positive integers.
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
/// Crop a feature map of stride `stride` to the unpadded extent ceil(h/stride) x ceil(w/stride).
torch::Tensor crop_feature(const torch::Tensor& x, int64_t h, int64_t w, int64_t stride);

/// Check a pair of inputs: 4-D, same shape, `bands` channels; throws ModelError.
void check_pair(const torch::Tensor& pre, const torch::Tensor& post, int bands,
                const std::string& arch);

/// Read an integer from options.extra with a default; throws ConfigError when ill-typed or < min.
int extra_int(const ModelOptions& o, const std::string& key, int fallback, int min_value = 1);
/// Read a boolean from options.extra with a default; throws ConfigError when ill-typed.
bool extra_bool(const ModelOptions& o, const std::string& key, bool fallback);
/// Read a number from options.extra with a default; throws ConfigError unless lo <= v < hi.
double extra_number(const ModelOptions& o, const std::string& key, double fallback, double lo, double hi);
/// Read a string from options.extra with a default; throws ConfigError when ill-typed.
std::string extra_string(const ModelOptions& o, const std::string& key, const std::string& fallback);

/// Throw ConfigError when options.extra has a key not in `known` (catches typos).
void check_extra_keys(const ModelOptions& o, const std::vector<std::string>& known);

/// Factories of the families defined outside models.cpp.
ChangeModel make_resnet_fpn(const ModelOptions& o);
/// BIT-like model (Siamese CNN + token transformer).
ChangeModel make_bit(const ModelOptions& o);
/// KD-MSI's pair of CAM classifiers (cdk/nn/kdmsi.hpp).
ChangeModel make_cam_pair(const ModelOptions& o);

}  // namespace cdk::nn::detail
