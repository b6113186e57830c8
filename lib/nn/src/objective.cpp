#include "cdk/nn/objective.hpp"

#include "cdk/nn/device.hpp"

namespace cdk::nn {

ChangeOutput forward_for_loss(ChangeModelImpl& model, const Batch& batch, const StepContext& step) {
    ChangeOutput out;
    {
        AutocastGuard autocast(step.amp, step.device);
        out = model.forward(batch.pre, batch.post);
    }
    if (step.amp) out.logits = out.logits.to(torch::kFloat32);  // losses in float32
    return out;
}

// ---------------------------------------------------------------------------------------
// Supervised

SupervisedObjective::SupervisedObjective(ChangeModel model, LossOptions loss, ExtraLoss extra)
    : model_(std::move(model)), loss_(std::move(loss)), extra_(std::move(extra)) {}

torch::Tensor SupervisedObjective::task_loss(const ChangeOutput& out, const Batch& batch) const {
    return segmentation_loss(out.logits, batch.label, loss_);
}

Loss SupervisedObjective::loss(const Batch& batch, const StepContext& step) {
    const ChangeOutput out = forward_for_loss(*model_, batch, step);
    Loss l;
    l.total = task_loss(out, batch);
    l.terms.emplace_back("task", l.total);
    if (extra_) {
        const torch::Tensor e = extra_(batch, out);
        l.terms.emplace_back("extra", e);
        l.total = l.total + e;
    }
    return l;
}

// ---------------------------------------------------------------------------------------
// MTKD

MtkdTerm::MtkdTerm(TeacherSet teachers, KdOptions kd)
    : teachers_(std::move(teachers)), kd_(kd), routed_(teachers_.bundles.size(), 0) {
    // Frozen: evaluation mode, in the inference form (batch norm folded; the same logits to
    // float rounding, fewer passes over memory).
    for (auto& b : teachers_.bundles) prepare_for_inference(*b.model);
}

std::vector<int> MtkdTerm::route(const Batch& batch) const {
    std::vector<int> r;
    for (double car : batch.car) r.push_back(teachers_.route(car));
    return r;
}

torch::Tensor MtkdTerm::teacher_logits(const Batch& batch) const {
    torch::NoGradGuard no_grad;
    torch::Tensor out;
    const auto counts = run_grouped(route(batch), teachers_.bundles.size(), batch.pre.device(),
                                    [&](size_t t, const torch::Tensor& index) {
                                        auto& model = *teachers_.bundles[t].model;
                                        model.eval();  // frozen, whatever the caller did
                                        return model
                                            .forward(batch.pre.index_select(0, index),
                                                     batch.post.index_select(0, index))
                                            .logits;
                                    },
                                    out);
    for (size_t t = 0; t < counts.size(); ++t) routed_[t] += counts[t];
    return out;
}

torch::Tensor MtkdTerm::operator()(const Batch& batch, const ChangeOutput& student) const {
    return kd_loss(student.logits, teacher_logits(batch), batch.label, kd_);
}

MtkdObjective::MtkdObjective(ChangeModel model, LossOptions loss, MtkdTerm term, nlohmann::json record)
    : SupervisedObjective(std::move(model), std::move(loss)), term_(std::move(term)), record_(std::move(record)) {}

Loss MtkdObjective::loss(const Batch& batch, const StepContext& step) {
    const ChangeOutput out = forward_for_loss(*model_, batch, step);
    Loss l;
    const torch::Tensor task = task_loss(out, batch);
    const torch::Tensor kd = term_(batch, out);
    l.terms = {{"task", task}, {"kd", kd}};
    l.total = task + kd;
    return l;
}

nlohmann::json MtkdObjective::summary() const {
    nlohmann::json s = record_;
    nlohmann::json routed = nlohmann::json::object();
    const auto& ts = term_.teachers();
    for (size_t i = 0; i < ts.names.size(); ++i) routed[ts.names[i]] = term_.routed()[i];
    s["samples_routed"] = routed;
    return s;
}

}  // namespace cdk::nn
