#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace cdk::nn {

/// Weights of the MTKD distillation term (JL1-CD paper, docs/methods.md).
struct KdOptions {
    double weight = 0.1;       ///< λ of MSE(student logits, teacher logits); 0.1 from the OSCD benchmark
    double temperature = 1.0;  ///< T of the optional KL term
    double kl_weight = 0.0;    ///< weight of T² · KL(softmax(t/T) ‖ softmax(s/T)); 0 = off
};

/// Options of MTKD with Origin-Partition (cd-distill --method mtkd).
struct MtkdOptions {
    std::vector<std::string> teachers;  ///< NAME=BUNDLE per CAR partition (small=s.cdm,medium=m.cdm,large=l.cdm)
    std::vector<double> thresholds;     ///< CAR thresholds between the teachers; empty = from their bundles
    KdOptions kd;                       ///< λ, temperature and KL weight of the distillation term
};

/// Throws ConfigError unless there are two teachers or more, as many thresholds as needed
/// (when given), and usable weights and temperature.
void validate(const MtkdOptions& options);

/// The logit-distillation loss over valid pixels (target != 255):
///   weight · mean_{valid pixels, 2 classes} (s − t)²
///   + kl_weight · T² · mean_{valid pixels} Σ_c softmax(t/T)_c (log softmax(t/T)_c − log softmax(s/T)_c).
/// `student` and `teacher` are [N, 2, H, W] logits, `target` [N, H, W]; the teacher gets no
/// gradient. 0 when no pixel is valid.
torch::Tensor kd_loss(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& target,
                      const KdOptions& options);

}  // namespace cdk::nn
