#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/nn/bundle.hpp"
#include "cdk/nn/objective.hpp"

namespace cdk::nn {

/// Options of HiCD (cd-distill --method hicd): a frozen teacher sees the clean pair, the
/// student the pair with one date degraded; the student copies the teacher's correlations.
/// Our formulation (the paper's formulas are not public; docs/methods.md):
///   pool(F): adaptive average pooling to at most `pool` x `pool` positions, then each
///            position's channel vector divided by its L2 norm: f [N, C, M]
///   self(F)        = f^T f               [N, M, M]  position x position, one date
///   cross(F1, F2)  = f1^T f2             [N, M, M]  date-1 positions x date-2 positions
///   global(F)      = g g^T, g = L2-normalised spatial mean of F   [N, N]  sample x sample
///   L = task(student) + self_weight   · mean over terms of MSE(self(S), self(T))
///                     + cross_weight  · mean over depths of MSE(cross(S_pre, S_post), cross(T_pre, T_post))
///                     + global_weight · mean over terms of MSE(global(S), global(T))
///                     + feature_mse_weight · mean over terms of MSE(S, T)   (the plain baseline)
/// where "terms" are, at each of the `depths` deepest feature levels, the date-1 and
/// date-2 encoder features (semantic) and the fused change features. A weight of 0 leaves
/// its term out entirely (not computed).
struct HicdOptions {
    std::string teacher;              ///< bundle trained on clean pairs (frozen)
    double self_weight = 1.0;         ///< weight of the self-correlation term
    double cross_weight = 1.0;        ///< weight of the cross-correlation term
    double global_weight = 1.0;       ///< weight of the sample x sample term
    double feature_mse_weight = 0.0;  ///< weight of plain feature MSE (needs equal feature shapes)
    int pool = 16;                    ///< positions per side after pooling (2 .. 32)
    int depths = 2;                   ///< the deepest feature levels used (>= 1)
};

/// Throws ConfigError unless a teacher is named, weights are >= 0, pool is in 2..32 and
/// depths >= 1.
void validate(const HicdOptions& options);

/// pool(F) above: [N, C, H, W] -> [N, C, M] with unit channel vectors, M <= pool².
torch::Tensor pooled_positions(const torch::Tensor& features, int pool);
/// self(F): [N, M, M].
torch::Tensor self_correlation(const torch::Tensor& features, int pool);
/// cross(F1, F2): [N, M, M].
torch::Tensor cross_correlation(const torch::Tensor& f1, const torch::Tensor& f2, int pool);
/// global(F): [N, N] cosine similarity of the samples' mean feature vectors.
torch::Tensor global_correlation(const torch::Tensor& features);

/// HiCD: task loss of the student on the degraded pair plus the correlation terms against
/// the frozen teacher on the clean pair (terms "task", "self", "cross", "global", "feature_mse").
class HicdObjective : public SupervisedObjective {
public:
    /// The student `model`, trained with `loss`, taught by the loaded `teacher`; `record`
    /// is the bundle header's "distillation" entry.
    HicdObjective(ChangeModel model, LossOptions loss, Bundle teacher, HicdOptions options, nlohmann::json record);
    std::string name() const override { return "hicd"; }
    bool needs_clean_inputs() const override { return true; }
    Loss loss(const Batch& batch, const StepContext& step) override;
    nlohmann::json describe() const override { return record_; }

private:
    ChangeOutput teacher_output(const Batch& batch, const StepContext& step);

    Bundle teacher_;
    HicdOptions options_;
    nlohmann::json record_;
};

}  // namespace cdk::nn
