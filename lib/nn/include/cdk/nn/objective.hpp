#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cdk/nn/batch.hpp"
#include "cdk/nn/distill.hpp"
#include "cdk/nn/losses.hpp"
#include "cdk/nn/models.hpp"
#include "cdk/nn/teachers.hpp"

namespace cdk::nn {

/// The loss of one batch: the total that is minimised and every term, named, so that the
/// trainer's JSON lines log each one ("terms": {"task": ..., "kd": ...}).
struct Loss {
    torch::Tensor total;                                        ///< scalar, float32
    std::vector<std::pair<std::string, torch::Tensor>> terms;  ///< named terms (scalars) that make it up
};

/// How a training step runs.
struct StepContext {
    torch::Device device = torch::kCPU;  ///< where the batch and the models are
    bool amp = false;                    ///< bfloat16 autocast around the forward passes
};

/// What a training method is to the trainer: which parameters the optimiser updates, the
/// loss of a batch, the model that is validated and saved as the bundle, any state of its
/// own a checkpoint must keep (a jointly trained teacher), and its record in the bundle
/// header. The trainer (schedules, weight average, validation, best-by-F1, JSON lines,
/// --resume) knows no method; a new method is one new class.
class Objective {
public:
    virtual ~Objective() = default;
    /// Name in logs and summaries (supervised, mtkd ...).
    virtual std::string name() const = 0;
    /// The model that is validated each epoch and saved as the bundle.
    virtual ChangeModelImpl& model() = 0;
    /// The parameters the optimiser updates (default: the model's).
    virtual std::vector<torch::Tensor> parameters() { return model().parameters(); }
    /// Put every network this objective trains in training mode (frozen ones stay in
    /// evaluation mode).
    virtual void train() { model().train(); }
    /// The loss of a batch that is already on the step's device.
    virtual Loss loss(const Batch& batch, const StepContext& step) = 0;
    /// Whether every training tile needs a pixel label (false: image-level labels suffice).
    virtual bool needs_pixel_labels() const { return true; }
    /// What the trainer chooses the best epoch by: "pixel" (change-class F1 against the
    /// validation tiles' pixel labels) or "image" (accuracy of the model's image logits
    /// against the tiles' image-level labels).
    virtual std::string selection() const { return "pixel"; }
    /// Whether batches must carry the clean inputs beside degraded ones (Batch::pre_clean).
    virtual bool needs_clean_inputs() const { return false; }
    /// State of its own beyond model() for a checkpoint (nothing by default).
    virtual void save_state(torch::serialize::OutputArchive& archive) { (void)archive; }
    /// Restore what save_state wrote; throws ModelError naming `path` when it is missing.
    virtual void load_state(torch::serialize::InputArchive& archive, const std::string& path) {
        (void)archive;
        (void)path;
    }
    /// The bundle header's record of the method ("distillation"); null for plain training.
    virtual nlohmann::json describe() const { return nullptr; }
    /// What the run summary adds under "distillation" (describe() plus run statistics).
    virtual nlohmann::json summary() const { return describe(); }
};

/// The model's forward pass under the step's autocast, logits back in float32 for the losses.
ChangeOutput forward_for_loss(ChangeModelImpl& model, const Batch& batch, const StepContext& step);

/// An extra term added to the task loss at every step, computed from the batch and the
/// model's output (a hook for experiments and tests; a method is an Objective).
using ExtraLoss = std::function<torch::Tensor(const Batch& batch, const ChangeOutput& out)>;

/// Plain supervised training: the segmentation loss of the model's logits against the
/// pixel labels (LossOptions: cross-entropy and Dice), plus an optional extra term.
class SupervisedObjective : public Objective {
public:
    /// Train `model` with `loss`; `extra` (optional) is added as the term "extra".
    SupervisedObjective(ChangeModel model, LossOptions loss, ExtraLoss extra = {});
    std::string name() const override { return "supervised"; }
    ChangeModelImpl& model() override { return *model_; }
    Loss loss(const Batch& batch, const StepContext& step) override;

protected:
    /// The task term: segmentation_loss(logits, label).
    torch::Tensor task_loss(const ChangeOutput& out, const Batch& batch) const;

    ChangeModel model_;
    LossOptions loss_;
    ExtraLoss extra_;
};

/// The MTKD term of one batch: each sample's teacher is the one whose CAR range holds the
/// sample's ground-truth CAR (computed on the augmented crop over valid pixels; a crop
/// without valid pixels has CAR 0). Teachers run frozen: evaluation mode, no gradient.
class MtkdTerm {
public:
    /// Take over loaded teachers.
    MtkdTerm(TeacherSet teachers, KdOptions kd);
    /// Teacher index of each sample of a batch.
    std::vector<int> route(const Batch& batch) const;
    /// Logits of each sample's teacher, [N, 2, H, W], without gradient.
    torch::Tensor teacher_logits(const Batch& batch) const;
    /// kd_loss(student, routed teacher logits, labels).
    torch::Tensor operator()(const Batch& batch, const ChangeOutput& student) const;
    /// The teachers.
    const TeacherSet& teachers() const { return teachers_; }
    /// Samples routed to each teacher so far.
    const std::vector<long long>& routed() const { return routed_; }

private:
    TeacherSet teachers_;
    KdOptions kd_;
    mutable std::vector<long long> routed_;
};

/// MTKD with Origin-Partition (JL1-CD paper, docs/methods.md): the student's loss is the
/// task loss plus the routed teachers' distillation term,
///   L = segmentation_loss(s, y) + kd_loss(s, t_route(CAR(y)), y)   (terms "task", "kd").
class MtkdObjective : public SupervisedObjective {
public:
    /// The student `model` (started from the origin), trained with `loss` and taught by `term`.
    MtkdObjective(ChangeModel model, LossOptions loss, MtkdTerm term, nlohmann::json record);
    std::string name() const override { return "mtkd"; }
    Loss loss(const Batch& batch, const StepContext& step) override;
    nlohmann::json describe() const override { return record_; }
    /// describe() plus "samples_routed" per teacher.
    nlohmann::json summary() const override;
    /// The routing term.
    const MtkdTerm& term() const { return term_; }

private:
    MtkdTerm term_;
    nlohmann::json record_;
};

}  // namespace cdk::nn
