#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/nn/distill.hpp"
#include "cdk/nn/hicd.hpp"
#include "cdk/nn/kdmsi.hpp"
#include "cdk/nn/objective.hpp"
#include "cdk/pipeline/teachers.hpp"
#include "cdk/pipeline/train.hpp"

namespace cdk::pipeline {

/// Options of cd-distill: the training options every method shares, the method, and the
/// options of each method (only the chosen method's are read and checked).
struct DistillOptions {
    TrainOptions train;        ///< everything training takes; `train.init` = the student's start (the origin)
    std::string method = "mtkd";  ///< mtkd | hicd | kd-msi
    nn::MtkdOptions mtkd;      ///< --method mtkd: teachers per CAR partition, thresholds, KD weights
    nn::HicdOptions hicd;      ///< --method hicd: the clean-pair teacher and the correlation terms' weights
    nn::KdMsiOptions kdmsi;    ///< --method kd-msi: the KD weight, the student's own classification term, model selection
};

/// Cross-option checks: the training options', the method's name, and the chosen
/// method's own validate().
void validate(const DistillOptions& options);

using nn::MtkdTerm;

/// Distil teachers into one student with the training loop of cd-train-teacher
/// (train_objective: validation, best-by-F1, JSON lines, resume). mtkd: nn::MtkdObjective,
/// loss = task loss + kd_loss(student, routed teacher). hicd: nn::HicdObjective, the student
/// on pairs with one date degraded (train.degrade, required) copies the correlations of a
/// frozen teacher that sees the clean pairs; the student is the teacher's architecture
/// unless --arch or --student-init says otherwise. The student bundle's header records the
/// method, its teachers and weights. kd-msi: nn::KdMsiObjective on image-level labels alone
/// (tiles.csv's `changed`, or CAR > 0 of a pixel label), a kd-msi-cam model whose teacher
/// and student train together; the best epoch by image-level validation accuracy unless
/// kdmsi.select is "pixel". Returns the training summary plus "distillation".
nlohmann::json distill_model(const DistillOptions& options, const RunContext& ctx = {});

}  // namespace cdk::pipeline
