#include "cdk/pipeline/distill.hpp"

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"
#include "cdk/geo/degrade.hpp"

namespace cdk::pipeline {

void validate(const DistillOptions& o) {
    validate(o.train);
    if (o.method == "mtkd") return nn::validate(o.mtkd);
    if (o.method == "kd-msi") {
        nn::validate(o.kdmsi);
        if (!o.train.model.arch.empty() && o.train.model.arch != "kd-msi-cam")
            throw ConfigError("kd-msi trains a kd-msi-cam model (a pair of CAM classifiers), not " +
                              quote(o.train.model.arch));
        if (o.train.augment.crop > 0)
            throw ConfigError("kd-msi learns from each tile's image-level label, which a random crop (--crop) may not keep; "
                              "tile at the size to train on instead");
        if (!o.train.degrade.empty()) throw ConfigError("--degrade goes with --method hicd, not kd-msi");
        return;
    }
    if (o.method != "hicd")
        throw ConfigError("unknown distillation method " + quote(o.method) + " (known: mtkd, hicd, kd-msi)");
    nn::validate(o.hicd);
    if (o.train.degrade.empty())
        throw ConfigError("HiCD trains its student on a degraded date: give --degrade SPEC (e.g. res=4 or random)");
}

namespace {

// The student's training options: the architecture is the start bundle's unless one is
// asked for, and its per-scene standardisation must be the teachers'.
TrainOptions student_options(const DistillOptions& o, const std::string& teachers_scene) {
    TrainOptions t = o.train;
    if (!t.init.empty()) {
        // Only the name: the trainer keeps the start bundle's model options.
        if (t.model.arch.empty()) t.model.arch = nn::read_bundle_info(t.init).model.arch;
    } else if (t.model.arch.empty()) {
        throw ConfigError("the student needs a start (--student-init ORIGIN.cdm) or an architecture (--arch)");
    }
    // The student sees its inputs as the teachers do: the same per-scene standardisation.
    if (t.scene_norm.empty()) t.scene_norm = t.init.empty() ? teachers_scene : nn::read_bundle_info(t.init).scene_norm();
    if (t.scene_norm != teachers_scene)
        throw ConfigError("the teachers' per-scene standardisation is " + quote(teachers_scene) + ", the student's " +
                          quote(t.scene_norm) + ": give --scene-norm " + teachers_scene);
    return t;
}

nlohmann::json distill_mtkd(const DistillOptions& o, const RunContext& ctx) {
    if (o.train.init.empty() && o.train.model.arch.empty())
        throw ConfigError("the student needs a start (--student-init ORIGIN.cdm) or an architecture (--arch)");
    const nn::MtkdOptions& m = o.mtkd;
    // Teachers are loaded before the trainer seeds the generator: loading draws from it.
    nn::MtkdTerm term(nn::load_teachers(m.teachers, m.thresholds, nn::parse_device(o.train.device), &ctx), m.kd);
    const auto& ts = term.teachers();
    const TrainOptions t = student_options(o, ts.bundles.front().info.scene_norm());
    ctx.info("MTKD: " + std::to_string(ts.bundles.size()) + " teachers, CAR thresholds " +
             nlohmann::json(ts.thresholds).dump() + ", kd weight " + format_number(m.kd.weight) +
             (m.kd.kl_weight > 0 ? ", KL weight " + format_number(m.kd.kl_weight) + " at T " +
                                       format_number(m.kd.temperature)
                                 : std::string()));
    const nlohmann::json record = {{"method", "mtkd"},
                                   {"teachers", ts.describe()},
                                   {"thresholds", ts.thresholds},
                                   {"kd_weight", m.kd.weight},
                                   {"kd_temperature", m.kd.temperature},
                                   {"kd_kl_weight", m.kd.kl_weight},
                                   {"student_init", t.init.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.init)}};
    return train_objective(
        t,
        [&](nn::ChangeModel student) {
            return std::make_unique<nn::MtkdObjective>(student, t.loss, std::move(term), record);
        },
        ctx);
}

nlohmann::json distill_hicd(const DistillOptions& o, const RunContext& ctx) {
    const nn::HicdOptions& h = o.hicd;
    // The teacher is loaded before the trainer seeds the generator: loading draws from it.
    nn::Bundle teacher = nn::load_bundle(h.teacher, nn::parse_device(o.train.device), ctx);
    DistillOptions with_arch = o;
    if (with_arch.train.init.empty() && with_arch.train.model.arch.empty()) with_arch.train.model = teacher.info.model;
    const TrainOptions t = student_options(with_arch, teacher.info.scene_norm());
    const geo::DegradeSpec spec = geo::DegradeSpec::parse(t.degrade);
    ctx.info("HiCD: teacher " + quote(h.teacher) + " (" + teacher.info.model.arch + ") on clean pairs, student on date " +
             t.degrade_date + " degraded by " + spec.text() + "; weights self " + format_number(h.self_weight) +
             ", cross " + format_number(h.cross_weight) + ", global " + format_number(h.global_weight) +
             ", feature MSE " + format_number(h.feature_mse_weight));
    const nlohmann::json record = {{"method", "hicd"},
                                   {"teacher", h.teacher},
                                   {"teacher_arch", teacher.info.model.arch},
                                   {"teacher_width", teacher.info.model.width},
                                   {"self_weight", h.self_weight},
                                   {"cross_weight", h.cross_weight},
                                   {"global_weight", h.global_weight},
                                   {"feature_mse_weight", h.feature_mse_weight},
                                   {"pool", h.pool},
                                   {"depths", h.depths},
                                   {"degrade", spec.text()},
                                   {"degrade_date", t.degrade_date},
                                   {"student_init", t.init.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.init)}};
    return train_objective(
        t,
        [&](nn::ChangeModel student) {
            return std::make_unique<nn::HicdObjective>(student, t.loss, std::move(teacher), h, record);
        },
        ctx);
}

nlohmann::json distill_kdmsi(const DistillOptions& o, const RunContext& ctx) {
    TrainOptions t = o.train;
    if (t.model.arch.empty()) t.model.arch = "kd-msi-cam";
    const nn::KdMsiOptions& k = o.kdmsi;
    // The CAM heads are linear in the fused features: minus (f2 - f1) and cat ([f2, f1]) tell
    // date 2 from date 1, so a change has a direction. Swapping the dates would ask the same
    // map to call both directions change and cancels it (the teacher's BCE stays at ln 2).
    if (t.augment.swap_dates) {
        t.augment.swap_dates = false;
        ctx.info("KD-MSI: no date swaps (its minus and cat fusions are order-sensitive, as the authors' models)");
    }
    // What the model will be: --student-init's options, else these ones.
    const nn::ModelOptions mo = t.init.empty() ? t.model : nn::read_bundle_info(t.init).model;
    const std::string teacher = nn::teacher_fusion(mo), student = nn::student_fusion(mo);
    ctx.info("KD-MSI: teacher (" + teacher + " fusion) and student (" +
             student + " fusion) trained together on image-level labels; kd weight " +
             format_number(k.kd_weight) +
             (k.student_cls_weight > 0 ? ", student classification weight " + format_number(k.student_cls_weight)
                                       : std::string()) +
             "; best epoch by " + (k.select == "image" ? "image-level validation accuracy" : "pixel F1 on the validation tiles"));
    const nlohmann::json record = {{"method", "kd-msi"},
                                   {"kd_weight", k.kd_weight},
                                   {"student_cls_weight", k.student_cls_weight},
                                   {"kd_loss", k.kd_loss},
                                   {"select", k.select},
                                   {"teacher_fusion", teacher},
                                   {"student_fusion", student},
                                   {"labels", "image-level"},
                                   {"student_init", t.init.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.init)}};
    return train_objective(
        t, [&](nn::ChangeModel model) { return std::make_unique<nn::KdMsiObjective>(model, k, record); }, ctx);
}

}  // namespace

nlohmann::json distill_model(const DistillOptions& o, const RunContext& ctx) {
    validate(o);
    std::vector<NamedInput> teachers{{"--teacher", o.hicd.teacher}};
    for (const auto& t : o.mtkd.teachers) teachers.push_back({"--teachers", t.substr(t.find('=') + 1)});
    for (const auto& out : {o.train.out, o.train.out + ".ckpt", o.train.out + ".log.jsonl", o.train.save_last})
        if (!o.train.out.empty()) check_not_input(out, teachers);
    if (o.method == "kd-msi") return distill_kdmsi(o, ctx);
    return o.method == "hicd" ? distill_hicd(o, ctx) : distill_mtkd(o, ctx);
}

}  // namespace cdk::pipeline
