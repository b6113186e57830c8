// KD-MSI: the joint teacher/student objective on image-level labels and multiscale sigmoid
// inference (cdk/nn/kdmsi.hpp; docs/methods.md).
#include "cdk/nn/kdmsi.hpp"

#include <algorithm>
#include <cmath>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/nn/device.hpp"
#include "layers.hpp"

namespace cdk::nn {

namespace F = torch::nn::functional;

torch::Tensor maxnorm(const torch::Tensor& x) {
    const auto peak = std::get<0>(x.flatten(2).max(2)).unsqueeze(-1).unsqueeze(-1);  // [N, C, 1, 1]
    return x / (peak + 1e-5);
}

void validate(const KdMsiOptions& o) {
    if (!(o.kd_weight >= 0) || !std::isfinite(o.kd_weight))
        throw ConfigError("--kdmsi-weight must be >= 0, not " + format_number(o.kd_weight));
    if (!(o.student_cls_weight >= 0) || !std::isfinite(o.student_cls_weight))
        throw ConfigError("--kdmsi-student-cls must be >= 0, not " + format_number(o.student_cls_weight));
    if (o.kd_loss != "mse" && o.kd_loss != "bce")
        throw ConfigError("unknown --kdmsi-loss " + quote(o.kd_loss) + " (known: mse, bce)");
    if (o.select != "image" && o.select != "pixel")
        throw ConfigError("unknown --select " + quote(o.select) + " (known: image, pixel)");
}

void validate(const MsiOptions& o) {
    if (o.scales.empty() || o.scales.size() > 8)
        throw ConfigError("multiscale inference takes 1 to 8 scales, not " + std::to_string(o.scales.size()));
    for (const double s : o.scales)
        if (!(s > 0 && s <= 4)) throw ConfigError("scale " + format_number(s) + " of --msi-scales must lie in (0, 4]");
}

namespace {

CamPairModelImpl* as_cam_pair(const ChangeModel& model) {
    auto* cam = dynamic_cast<CamPairModelImpl*>(model.get());
    if (!cam)
        throw ConfigError("KD-MSI needs a kd-msi-cam model (a pair of CAM classifiers), not " +
                          quote(model->options().arch));
    return cam;
}

// Image-level labels of a batch as a float tensor on `device`; throws for unknown ones.
torch::Tensor image_labels(const Batch& batch, const torch::Device& device) {
    std::vector<float> y;
    y.reserve(batch.changed.size());
    for (size_t i = 0; i < batch.changed.size(); ++i) {
        if (batch.changed[i] < 0)
            throw ConfigError("tile " + quote(batch.ids[i]) + " has no image-level label (a `changed` value or a pixel label)");
        y.push_back(float(batch.changed[i]));
    }
    return torch::tensor(y, torch::kFloat32).to(device);
}

}  // namespace

KdMsiObjective::KdMsiObjective(ChangeModel model, KdMsiOptions options, nlohmann::json record)
    : model_(std::move(model)), options_(std::move(options)), record_(std::move(record)) {
    validate(options_);
    as_cam_pair(model_);
}

Loss KdMsiObjective::loss(const Batch& batch, const StepContext& step) {
    ChangeOutput out;
    {
        AutocastGuard autocast(step.amp, step.device);
        out = model_->forward(batch.pre, batch.post);
    }
    const auto ft = out.cam_teacher.to(torch::kFloat32);
    const auto fs = out.cam.to(torch::kFloat32);
    const auto y = image_labels(batch, ft.device());
    Loss l;
    const auto cls = torch::binary_cross_entropy_with_logits(ft.mean({1, 2, 3}), y);
    l.terms.emplace_back("teacher_cls", cls);
    // The teacher's map, normalised to a peak of 1, where the tile changed; 0 elsewhere.
    auto target = maxnorm(torch::relu(ft)).detach() * y.view({-1, 1, 1, 1});
    if (target.sizes() != fs.sizes())
        target = F::interpolate(target, F::InterpolateFuncOptions()
                                            .size(std::vector<int64_t>{fs.size(2), fs.size(3)})
                                            .mode(torch::kBilinear)
                                            .align_corners(false));
    // mse: the authors' term. bce: the same target as soft labels of a logistic loss, whose
    // gradient (sigmoid(F_S) - target) does not vanish where the sigmoid saturates.
    const auto kd = options_.kd_loss == "bce" ? torch::binary_cross_entropy_with_logits(fs, target)
                                              : torch::mse_loss(torch::sigmoid(fs), target);
    l.terms.emplace_back("kd", kd);
    l.total = cls + options_.kd_weight * kd;
    if (options_.student_cls_weight > 0) {
        const auto scls = torch::binary_cross_entropy_with_logits(fs.mean({1, 2, 3}), y);
        l.terms.emplace_back("student_cls", scls);
        l.total = l.total + options_.student_cls_weight * scls;
    }
    return l;
}

// ---------------------------------------------------------------------------------------
// Multiscale sigmoid inference

MsiPredictor::MsiPredictor(ChangeModel model, const torch::Device& device, bool amp, MsiOptions options)
    : model_(std::move(model)), cam_(as_cam_pair(model_)), device_(device), amp_(amp), options_(std::move(options)) {
    validate(options_);
}

double MsiPredictor::memory_factor() const {
    const double top = *std::max_element(options_.scales.begin(), options_.scales.end());
    return std::max(1.0, top * top);  // the passes run one after another: the largest counts
}

// The branch's map of the windows at one scale, resized back to the windows: [N, H, W].
torch::Tensor MsiPredictor::map_at(const torch::Tensor& pre, const torch::Tensor& post, double scale, bool flip) {
    const int64_t h = pre.size(2), w = pre.size(3);
    const int64_t hs = std::max<int64_t>(1, std::llround(double(h) * scale));
    const int64_t ws = std::max<int64_t>(1, std::llround(double(w) * scale));
    auto resize = [](const torch::Tensor& x, int64_t th, int64_t tw) {
        if (x.size(2) == th && x.size(3) == tw) return x;
        return F::interpolate(x, F::InterpolateFuncOptions()
                                     .size(std::vector<int64_t>{th, tw})
                                     .mode(torch::kBilinear)
                                     .align_corners(false));
    };
    auto a = resize(pre, hs, ws), b = resize(post, hs, ws);
    if (flip) a = a.flip({3}), b = b.flip({3});
    a = detail::pad_to_multiple(a, cam_->stride());
    b = detail::pad_to_multiple(b, cam_->stride());
    torch::Tensor m;
    {
        AutocastGuard autocast(amp_, device_);
        m = options_.branch == MsiBranch::kStudent ? cam_->student_cam(a, b) : cam_->teacher_cam(a, b);
    }
    m = m.to(torch::kFloat32);
    m = options_.branch == MsiBranch::kStudent ? torch::sigmoid(m) : maxnorm(torch::relu(m));
    m = detail::crop(resize(m, a.size(2), a.size(3)), hs, ws);  // to the padded input, then its extent
    if (flip) m = m.flip({3});
    return resize(m, h, w).squeeze(1);
}

torch::Tensor MsiPredictor::predict(const torch::Tensor& pre, const torch::Tensor& post, const torch::Tensor& valid) {
    torch::NoGradGuard no_grad;
    torch::Tensor sum;
    int passes = 0;
    for (const double s : options_.scales)
        for (const bool flip : {false, true}) {
            if (flip && !options_.flip) continue;
            const auto m = map_at(pre, post, s, flip);
            sum = sum.defined() ? sum + m : m;
            ++passes;
        }
    auto p = (sum / double(passes)).to(torch::kCPU);
    const int64_t n = pre.size(0);
    if (options_.window_norm) {
        const auto peak = std::get<0>((p * valid.to(p.dtype())).flatten(1).max(1)).view({-1, 1, 1});
        p = p / (peak + 1e-5);
    }
    windows_ += n;
    if (!options_.gate) return p.contiguous();
    {
        // The predicted image label: the teacher's mean F on the window as it is (an extra
        // teacher pass, run only for the gate).
        const auto a = detail::pad_to_multiple(pre, cam_->stride()), b = detail::pad_to_multiple(post, cam_->stride());
        torch::Tensor ft;
        {
            AutocastGuard autocast(amp_, device_);
            ft = cam_->teacher_cam(a, b);
        }
        ft = detail::crop_feature(ft.to(torch::kFloat32), pre.size(2), pre.size(3), cam_->stride());
        last_logits_ = ft.mean({1, 2, 3}).to(torch::kCPU);
    }
    if (!known_.empty() && int64_t(known_.size()) != n)
        throw Error("MSI: " + std::to_string(known_.size()) + " known labels for " + std::to_string(n) + " windows");
    for (int64_t k = 0; k < n; ++k) {
        const int known = known_.empty() ? -1 : known_[size_t(k)];
        const bool changed = known >= 0 ? known > 0 : last_logits_[k].item<float>() >= 0;
        if (!changed) {
            p[k].zero_();
            ++gated_;
        }
    }
    return p.contiguous();
}

void MsiPredictor::begin_scene() { windows_ = gated_ = 0; }

nlohmann::json MsiPredictor::summary() const {
    return {{"mode", "msi"},
            {"scales", options_.scales},
            {"flip", options_.flip},
            {"branch", options_.branch == MsiBranch::kStudent ? "student" : "teacher"},
            {"gate", options_.gate},
            {"window_norm", options_.window_norm},
            {"windows", windows_},
            {"windows_gated", gated_}};
}

}  // namespace cdk::nn
