#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/nn/distill.hpp"
#include "cdk/pipeline/teachers.hpp"
#include "cdk/pipeline/train.hpp"

namespace cdk::pipeline {

/// Options of cd-distill.
struct DistillOptions {
    TrainOptions train;                 ///< everything training takes; `train.init` = the student's start (the origin)
    std::string method = "mtkd";        ///< mtkd (hicd and kd-msi are planned)
    std::vector<std::string> teachers;  ///< NAME=BUNDLE per CAR partition (small=s.cdm,medium=m.cdm,large=l.cdm)
    std::vector<double> thresholds;     ///< CAR thresholds between the teachers; empty = from their bundles
    nn::KdOptions kd;                   ///< λ, temperature and KL weight of the distillation term
};

/// Cross-option checks (the training options' too).
void validate(const DistillOptions& options);

/// The MTKD term of one batch: each sample's teacher is the one whose CAR range holds the
/// sample's ground-truth CAR (computed on the augmented crop over valid pixels; a crop
/// without valid pixels has CAR 0). Teachers run frozen: evaluation mode, no gradient.
class MtkdTerm {
public:
    /// Take over loaded teachers.
    MtkdTerm(TeacherSet teachers, nn::KdOptions kd);
    /// Teacher index of each sample of a batch.
    std::vector<int> route(const Batch& batch) const;
    /// Logits of each sample's teacher, [N, 2, H, W], without gradient.
    torch::Tensor teacher_logits(const Batch& batch) const;
    /// kd_loss(student, routed teacher logits, labels).
    torch::Tensor operator()(const Batch& batch, const nn::ChangeOutput& student) const;
    /// The teachers.
    const TeacherSet& teachers() const { return teachers_; }
    /// Samples routed to each teacher so far.
    const std::vector<long long>& routed() const { return routed_; }

private:
    TeacherSet teachers_;
    nn::KdOptions kd_;
    mutable std::vector<long long> routed_;
};

/// Distil CAR-specialised teachers into one student with the training loop of
/// cd-train-teacher (validation, best-by-F1, JSON lines, resume): loss = task loss +
/// kd_loss(student, routed teacher). The student bundle's header records the method, the
/// teachers and thresholds, and the KD weights. Returns the training summary plus
/// "distillation".
nlohmann::json distill_model(const DistillOptions& options, const RunContext& ctx = {});

}  // namespace cdk::pipeline
