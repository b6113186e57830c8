#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace cdk::nn {

/// What a change model is built from; stored in model bundles so a model can be rebuilt.
struct ModelOptions {
    std::string arch = "fc-siam-diff";  ///< registry name (see model_names())
    int in_bands = 3;                   ///< bands of each date
    int width = 16;                     ///< base channel count (family-specific meaning)
    nlohmann::json extra = nlohmann::json::object();  ///< family-specific options (depth, heads ...)
};

/// {"arch", "in_bands", "width", "extra"}.
nlohmann::json to_json(const ModelOptions& o);
/// Parse the JSON form; throws ModelError on missing or ill-typed fields.
ModelOptions model_options_from_json(const nlohmann::json& j);

/// What a change model returns: logits at input resolution and the intermediate features
/// the distillation methods need.
struct ChangeOutput {
    torch::Tensor logits;                      ///< [N, 2, H, W], class 1 = change
    std::vector<torch::Tensor> features_pre;   ///< per depth, date 1 ([N, C_d, H_d, W_d])
    std::vector<torch::Tensor> features_post;  ///< per depth, date 2 (empty for early fusion)
    std::vector<torch::Tensor> features_fused; ///< per depth, fused/difference features
    torch::Tensor cam;                         ///< class activation map [N, 1, h, w] (CAM classifiers only: KD-MSI's student)
    torch::Tensor cam_teacher;                 ///< the jointly trained classifier's map (KD-MSI's teacher)
    torch::Tensor image_logits;                ///< [N] image-level change logit (classifiers only)
};

/// Base of every change model: forward(pre, post) with [N, in_bands, H, W] inputs of any
/// H, W (models pad internally when they need a multiple of their stride).
class ChangeModelImpl : public torch::nn::Module {
public:
    /// Run the model on a batch of pairs.
    virtual ChangeOutput forward(const torch::Tensor& pre, const torch::Tensor& post) = 0;
    /// The options it was built from.
    const ModelOptions& options() const { return options_; }
    /// Whether each output pixel depends only on the input within a bounded neighbourhood
    /// (convolutions and local pooling; no pooling or attention over the whole input). Then
    /// the window a scene is mapped in is only a compute plan, and cd-infer may choose
    /// windows larger than the tiles the model was trained on. False unless the family says so.
    virtual bool local() const { return false; }

protected:
    explicit ChangeModelImpl(ModelOptions o) : options_(std::move(o)) {}
    ModelOptions options_;
};

/// Shared handle to a change model (modules are reference types in LibTorch).
using ChangeModel = std::shared_ptr<ChangeModelImpl>;

/// Build a model by name; throws ConfigError for an unknown name (listing the known ones)
/// or options the family cannot take.
ChangeModel create_model(const ModelOptions& options);

/// Names in the registry, sorted.
std::vector<std::string> model_names();

/// Store every 4-D parameter and buffer of `model` channels-last (NHWC strides), where
/// oneDNN's CPU convolutions run faster; values are unchanged.
void to_channels_last(torch::nn::Module& model);

/// Put `model` in evaluation mode in its fastest inference form: batch norms folded into
/// the convolutions before them, transposed convolutions run as sub-pixel convolutions.
/// The function is the same (to float rounding). Call it after the weights are loaded and
/// the model is on its device and in its memory format; train(true) undoes it.
void prepare_for_inference(torch::nn::Module& model);

/// Trainable parameter count.
int64_t parameter_count(torch::nn::Module& model);

/// FLOPs (2 x multiply-accumulates of every convolution, transposed convolution, linear
/// layer and attention product; normalisation, activations and pooling not counted) of one
/// forward pass on a single pair of `height` x `width` images, counted while running it.
int64_t estimate_flops(const ModelOptions& options, int height, int width);

}  // namespace cdk::nn
