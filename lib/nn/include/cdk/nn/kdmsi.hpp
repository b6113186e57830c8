#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/nn/models.hpp"
#include "cdk/nn/objective.hpp"
#include "cdk/nn/predictor.hpp"

namespace cdk::nn {

// KD-MSI (Lu et al., arXiv 2403.05796): change maps from image-level labels. Our
// reimplementation; every difference from the authors' code is listed in docs/methods.md.

/// The model of KD-MSI ("kd-msi-cam" in the registry): two Siamese classifiers with a class
/// activation head, trained together. Each is a ResNet encoder shared by the dates (output
/// stride 16), a fusion of the dates' deepest features (abs = |f2 - f1|, minus = f2 - f1,
/// cat = [f2, f1]) and a 1x1 convolution without bias to one channel: the class activation
/// map F. The teacher (default fusion abs; the authors use minus or abs, and a minus teacher
/// trained from scratch on OSCD stayed at chance, docs/methods.md) is the image classifier,
/// its image logit the spatial mean of F_T; the student (default fusion abs; the authors'
/// cat mapped worse here, docs/methods.md) is the pixel mapper. minus and cat are
/// order-sensitive: cd-distill trains KD-MSI without date swaps. forward()
/// returns the student's F upsampled to the input as logits [-F/2, F/2] (so the softmax's
/// change class is sigmoid(F)), `cam` = F_S, `cam_teacher` = F_T (stride 16, cropped to
/// the input's extent) and `image_logits` = mean F_T. Model options (extra): teacher_fusion,
/// student_fusion (abs | minus | cat), teacher_width (default: width), blocks (per stage, 2),
/// stages (4 = output stride 16; 3 = 8).
class CamPairModelImpl : public ChangeModelImpl {
public:
    /// The student's F ([N, 1, h, w], h = ceil(H / stride)) of inputs whose sides are
    /// multiples of stride() (no padding here).
    virtual torch::Tensor student_cam(const torch::Tensor& pre, const torch::Tensor& post) = 0;
    /// The teacher's F, the same way.
    virtual torch::Tensor teacher_cam(const torch::Tensor& pre, const torch::Tensor& post) = 0;
    /// The CAMs' stride (16 with 4 stages).
    virtual int64_t stride() const = 0;

protected:
    using ChangeModelImpl::ChangeModelImpl;
};

/// The fusion a kd-msi-cam model's teacher (and student) uses: options.extra's
/// teacher_fusion (student_fusion), else the default abs; throws ConfigError for another name.
std::string teacher_fusion(const ModelOptions& options);
std::string student_fusion(const ModelOptions& options);

/// maxnorm(x): each map of [N, 1, h, w] divided by its spatial maximum + 1e-5 (the input is
/// expected >= 0; an all-zero map stays 0).
torch::Tensor maxnorm(const torch::Tensor& x);

/// Options of cd-distill --method kd-msi.
struct KdMsiOptions {
    double kd_weight = 10.0;          ///< w of the student's term
    double student_cls_weight = 0.0;  ///< weight of BCE(mean F_S, y) for the student (authors: none)
    std::string kd_loss = "mse";      ///< the student's term: mse (authors': MSE(sigmoid(F_S), target)) | bce (BCE(F_S, target), soft targets)
    std::string select = "image";     ///< best epoch by: image (accuracy of the teacher's image label) | pixel (F1 on pixel-labelled validation tiles)
};

/// Throws ConfigError for negative weights or an unknown `select`.
void validate(const KdMsiOptions& options);

/// KD-MSI's joint objective. Both networks of the CamPairModel train, with one optimiser:
///   L = BCE(mean F_T, y)                                  (term "teacher_cls")
///     + kd_weight · MSE(sigmoid(F_S), stopgrad(maxnorm(ReLU(F_T))) · y)   (term "kd")
///     [+ student_cls_weight · BCE(mean F_S, y)]          (term "student_cls")
/// where y is each tile's image-level label (Batch::changed). Pixel labels are never read.
class KdMsiObjective : public Objective {
public:
    /// `model` must be a CamPairModel; `record` is the bundle header's "distillation" entry.
    KdMsiObjective(ChangeModel model, KdMsiOptions options, nlohmann::json record);
    std::string name() const override { return "kd-msi"; }
    ChangeModelImpl& model() override { return *model_; }
    Loss loss(const Batch& batch, const StepContext& step) override;
    bool needs_pixel_labels() const override { return false; }
    std::string selection() const override { return options_.select; }
    nlohmann::json describe() const override { return record_; }

private:
    ChangeModel model_;
    KdMsiOptions options_;
    nlohmann::json record_;
};

/// Which network's map multiscale inference averages.
enum class MsiBranch {
    kStudent,  ///< sigmoid(F_S): KD-MSI
    kTeacher,  ///< maxnorm(ReLU(F_T)): plain multiscale CAM of the classifier (the baseline)
};

/// Options of multiscale sigmoid inference.
struct MsiOptions {
    std::vector<double> scales = {0.5, 1.0, 1.25, 2.0};  ///< input scales
    bool flip = true;            ///< also each scale mirrored horizontally (mirrored back)
    MsiBranch branch = MsiBranch::kStudent;
    bool gate = true;            ///< windows whose teacher image logit (scale 1) is < 0 become all "no change"
    bool window_norm = false;    ///< divide each window's averaged map by its maximum (over valid pixels)
};

/// Throws ConfigError unless 1..8 scales in (0, 4].
void validate(const MsiOptions& options);

/// Multiscale sigmoid inference (MSI): for each scale s (and its horizontal mirror) the
/// window is resized by s (bilinear), replicate-padded to a multiple of the stride, the map
/// computed (branch), upsampled bilinearly to the padded size, cropped, resized to the
/// window and averaged over the 2·|scales| passes. With `gate`, a window whose predicted
/// image label is "unchanged" (the teacher's mean F at scale 1 < 0, i.e. probability < 0.5)
/// becomes all 0. Not local: the gate depends on the whole window.
class MsiPredictor : public WindowPredictor {
public:
    /// `model` must be a CamPairModel in evaluation mode on `device`.
    MsiPredictor(ChangeModel model, const torch::Device& device, bool amp, MsiOptions options);
    torch::Tensor predict(const torch::Tensor& pre, const torch::Tensor& post, const torch::Tensor& valid) override;
    double memory_factor() const override;
    bool local() const override { return false; }
    void begin_scene() override;
    /// {"mode": "msi", "scales", "flip", "branch", "gate", "windows", "windows_gated"}.
    nlohmann::json summary() const override;
    /// The predicted image label's logit of each window of the last predict() call with the
    /// gate on ([N], CPU; without the gate the teacher's pass is not run).
    const torch::Tensor& last_image_logits() const { return last_logits_; }
    /// Gate each window of the next predict() calls by these labels instead of the teacher's
    /// prediction (1 changed, 0 not; a known image-level label, e.g. for pseudo-masks of
    /// training tiles; -1 = predict that one); empty = predict all.
    void set_known_labels(std::vector<int> labels) { known_ = std::move(labels); }

private:
    torch::Tensor map_at(const torch::Tensor& pre, const torch::Tensor& post, double scale, bool flip);

    ChangeModel model_;
    CamPairModelImpl* cam_;
    torch::Device device_;
    bool amp_;
    MsiOptions options_;
    torch::Tensor last_logits_;
    std::vector<int> known_;
    int64_t windows_ = 0, gated_ = 0;
};

}  // namespace cdk::nn
