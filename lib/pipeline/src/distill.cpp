#include "cdk/pipeline/distill.hpp"

#include <cmath>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"

namespace cdk::pipeline {

void validate(const DistillOptions& o) {
    validate(o.train);
    if (o.method == "hicd" || o.method == "kd-msi")
        throw ConfigError("distillation method " + quote(o.method) + " is not implemented yet (available: mtkd)");
    if (o.method != "mtkd") throw ConfigError("unknown distillation method " + quote(o.method) + " (known: mtkd)");
    if (o.teachers.size() < 2) throw ConfigError("MTKD needs at least two teachers (--teachers small=A.cdm,large=B.cdm)");
    if (!o.thresholds.empty()) check_threshold_count(o.teachers.size(), o.thresholds.size());
    if (!(o.kd.weight >= 0) || !(o.kd.kl_weight >= 0) || !std::isfinite(o.kd.weight) || !std::isfinite(o.kd.kl_weight))
        throw ConfigError("distillation weights must be numbers >= 0");
    if (!(o.kd.temperature > 0) || !std::isfinite(o.kd.temperature))
        throw ConfigError("the distillation temperature must be positive");
}

MtkdTerm::MtkdTerm(TeacherSet teachers, nn::KdOptions kd)
    : teachers_(std::move(teachers)), kd_(kd), routed_(teachers_.bundles.size(), 0) {
    // Frozen: evaluation mode, in the inference form (batch norm folded; the same logits to
    // float rounding, fewer passes over memory).
    for (auto& b : teachers_.bundles) nn::prepare_for_inference(*b.model);
}

std::vector<int> MtkdTerm::route(const Batch& batch) const {
    std::vector<int> r;
    for (double car : batch.car) r.push_back(teachers_.route(car));
    return r;
}

torch::Tensor MtkdTerm::teacher_logits(const Batch& batch) const {
    torch::NoGradGuard no_grad;
    const auto routes = route(batch);
    const int64_t n = batch.pre.size(0);
    torch::Tensor out;
    for (size_t t = 0; t < teachers_.bundles.size(); ++t) {
        std::vector<int64_t> idx;
        for (int64_t i = 0; i < n; ++i)
            if (routes[size_t(i)] == int(t)) idx.push_back(i);
        if (idx.empty()) continue;
        routed_[t] += int64_t(idx.size());
        const auto index = torch::tensor(idx, torch::kInt64).to(batch.pre.device());
        auto& model = *teachers_.bundles[t].model;
        model.eval();  // frozen, whatever the caller did
        const auto logits = model.forward(batch.pre.index_select(0, index), batch.post.index_select(0, index)).logits;
        if (!out.defined()) out = torch::empty({n, logits.size(1), logits.size(2), logits.size(3)}, logits.options());
        out.index_copy_(0, index, logits);
    }
    return out;
}

torch::Tensor MtkdTerm::operator()(const Batch& batch, const nn::ChangeOutput& student) const {
    return nn::kd_loss(student.logits, teacher_logits(batch), batch.label, kd_);
}

nlohmann::json distill_model(const DistillOptions& o, const RunContext& ctx) {
    validate(o);
    TrainOptions t = o.train;
    if (!t.init.empty()) {
        // The student is the init bundle's architecture unless one is asked for.
        const auto h = nn::read_bundle_header(t.init);
        const nn::ModelOptions io = nn::model_options_from_json(h.at("model"));
        if (t.model.arch.empty()) t.model = io;
    } else if (t.model.arch.empty()) {
        throw ConfigError("the student needs a start (--student-init ORIGIN.cdm) or an architecture (--arch)");
    }
    const torch::Device device = nn::parse_device(t.device);
    MtkdTerm term(load_teachers(o.teachers, o.thresholds, device), o.kd);
    const auto& ts = term.teachers();
    // The student sees its inputs as the teachers do: the same per-scene standardisation.
    const std::string teachers_scene = Normalization::scene_of(ts.bundles.front().header);
    if (t.scene_norm.empty())
        t.scene_norm = t.init.empty() ? teachers_scene : Normalization::scene_of(nn::read_bundle_header(t.init));
    if (t.scene_norm != teachers_scene)
        throw ConfigError("the teachers' per-scene standardisation is " + quote(teachers_scene) + ", the student's " +
                          quote(t.scene_norm) + ": give --scene-norm " + teachers_scene);
    ctx.info("MTKD: " + std::to_string(ts.bundles.size()) + " teachers, CAR thresholds " +
             nlohmann::json(ts.thresholds).dump() + ", kd weight " + format_number(o.kd.weight) +
             (o.kd.kl_weight > 0 ? ", KL weight " + format_number(o.kd.kl_weight) + " at T " +
                                       format_number(o.kd.temperature)
                                 : std::string()));
    const nlohmann::json distillation = {{"method", "mtkd"},
                                         {"teachers", ts.describe()},
                                         {"thresholds", ts.thresholds},
                                         {"kd_weight", o.kd.weight},
                                         {"kd_temperature", o.kd.temperature},
                                         {"kd_kl_weight", o.kd.kl_weight},
                                         {"student_init", t.init.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.init)}};
    t.header_extra["distillation"] = distillation;
    nlohmann::json summary = train_model(t, ctx, [&](const Batch& b, const nn::ChangeOutput& out) { return term(b, out); });
    summary["distillation"] = distillation;
    nlohmann::json routed = nlohmann::json::object();
    for (size_t i = 0; i < ts.names.size(); ++i) routed[ts.names[i]] = term.routed()[i];
    summary["distillation"]["samples_routed"] = routed;
    return summary;
}

}  // namespace cdk::pipeline
