#include "cdk/nn/distill.hpp"

#include <cmath>

#include "cdk/core/error.hpp"
#include "cdk/nn/losses.hpp"
#include "cdk/nn/teachers.hpp"

namespace cdk::nn {

void validate(const MtkdOptions& o) {
    if (o.teachers.size() < 2) throw ConfigError("MTKD needs at least two teachers (--teachers small=A.cdm,large=B.cdm)");
    if (!o.thresholds.empty()) check_threshold_count(o.teachers.size(), o.thresholds.size());
    if (!(o.kd.weight >= 0) || !(o.kd.kl_weight >= 0) || !std::isfinite(o.kd.weight) || !std::isfinite(o.kd.kl_weight))
        throw ConfigError("distillation weights must be numbers >= 0");
    if (!(o.kd.temperature > 0) || !std::isfinite(o.kd.temperature))
        throw ConfigError("the distillation temperature must be positive");
}

torch::Tensor kd_loss(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& target,
                      const KdOptions& o) {
    if (!student.sizes().equals(teacher.sizes()) || student.dim() != 4)
        throw ConfigError("student logits " + c10::str(student.sizes()) + " and teacher logits " +
                          c10::str(teacher.sizes()) + " differ");
    if (!(o.temperature > 0)) throw ConfigError("the distillation temperature must be positive");
    const auto t = teacher.detach().to(student.scalar_type());
    const auto valid = target.ne(kIgnoreIndex).unsqueeze(1).to(student.scalar_type());  // [N,1,H,W]
    const auto n_valid = valid.sum().clamp_min(1.0);
    torch::Tensor loss = torch::zeros({}, student.options());
    if (o.weight != 0) {
        const auto sq = (student - t).pow(2) * valid;
        loss = loss + o.weight * sq.sum() / (n_valid * double(student.size(1)));
    }
    if (o.kl_weight != 0) {
        const double T = o.temperature;
        const auto log_ps = torch::log_softmax(student / T, 1);
        const auto log_pt = torch::log_softmax(t / T, 1);
        const auto kl = (log_pt.exp() * (log_pt - log_ps)).sum(1, true) * valid;
        loss = loss + o.kl_weight * T * T * kl.sum() / n_valid;
    }
    return loss;
}

}  // namespace cdk::nn
