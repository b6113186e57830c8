#include "cdk/nn/losses.hpp"

#include <algorithm>
#include <stdexcept>

#include "cdk/core/error.hpp"

namespace cdk::nn {

void validate(const LossOptions& o) {
    if (!o.class_weights.empty() && o.class_weights.size() != 2)
        throw ConfigError("class weights take two values (no change, change), not " +
                          std::to_string(o.class_weights.size()));
    for (double w : o.class_weights)
        if (!(w >= 0)) throw ConfigError("class weights must be >= 0");
    if (!(o.dice_weight >= 0) || !(o.ce_weight >= 0)) throw ConfigError("loss weights must be >= 0");
    if (o.dice_weight == 0 && o.ce_weight == 0)
        throw ConfigError("the cross-entropy and Dice weights cannot both be 0");
}

namespace {

// logits [N,2,H,W] and target [N,H,W] must agree; throws ConfigError.
void check_shapes(const torch::Tensor& logits, const torch::Tensor& target) {
    if (logits.dim() != 4 || logits.size(1) != 2)
        throw ConfigError("logits must be [N, 2, H, W], got " + std::to_string(logits.dim()) + "-D " +
                          c10::str(logits.sizes()));
    if (target.dim() != 3 || target.size(0) != logits.size(0) || target.size(1) != logits.size(2) ||
        target.size(2) != logits.size(3))
        throw ConfigError("target " + c10::str(target.sizes()) + " does not fit logits " +
                          c10::str(logits.sizes()));
}

}  // namespace

torch::Tensor cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& target,
                                 const std::vector<double>& class_weights) {
    check_shapes(logits, target);
    if (!class_weights.empty() && class_weights.size() != 2)
        throw ConfigError("class weights must be two numbers {no change, change}, got " +
                          std::to_string(class_weights.size()));
    const auto t = target.to(torch::kLong);
    const auto valid = t != kIgnoreIndex;
    const auto safe = torch::where(valid, t, torch::zeros_like(t));  // ignored -> class 0, weight 0
    const auto logp = torch::log_softmax(logits, 1);
    const auto nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1);
    auto w = valid.to(logits.scalar_type());
    if (!class_weights.empty()) {
        const auto cw = torch::tensor({class_weights[0], class_weights[1]},
                                      torch::TensorOptions().dtype(logits.scalar_type()).device(logits.device()));
        w = w * cw.index_select(0, safe.flatten()).view_as(w);
    }
    // Weighted mean as in torch's cross_entropy(weight, ignore_index); 0 when nothing counts.
    return (nll * w).sum() / w.sum().clamp_min(1e-12);
}

torch::Tensor dice_loss(const torch::Tensor& logits, const torch::Tensor& target) {
    check_shapes(logits, target);
    constexpr double kSmooth = 1.0;  // keeps 1 - Dice defined (0) when no change is present
    const auto t = target.to(torch::kLong);
    const auto valid = (t != kIgnoreIndex).to(logits.scalar_type());
    const auto p = torch::softmax(logits, 1).select(1, 1) * valid;
    const auto g = (t == 1).to(logits.scalar_type()) * valid;
    const auto inter = (p * g).sum();
    const auto denom = p.sum() + g.sum();
    return 1.0 - (2.0 * inter + kSmooth) / (denom + kSmooth);
}

torch::Tensor segmentation_loss(const torch::Tensor& logits, const torch::Tensor& target,
                                const LossOptions& options) {
    torch::Tensor loss;
    auto add = [&](const torch::Tensor& term) { loss = loss.defined() ? loss + term : term; };
    if (options.ce_weight != 0) add(options.ce_weight * cross_entropy_loss(logits, target, options.class_weights));
    if (options.dice_weight != 0) add(options.dice_weight * dice_loss(logits, target));
    if (!loss.defined()) throw ConfigError("loss has neither a cross-entropy nor a Dice weight");
    return loss;
}

cdk::Confusion confusion_from_logits(const torch::Tensor& logits, const torch::Tensor& target) {
    check_shapes(logits, target);
    torch::NoGradGuard no_grad;
    // Same counting code as cd-eval: argmax prediction and target as uint8 masks.
    const auto pred = logits.argmax(1).to(torch::kCPU, torch::kUInt8).contiguous();
    const auto t = target.to(torch::kCPU, torch::kLong);
    const auto ref = torch::where(t == kIgnoreIndex, torch::full_like(t, 255), (t != 0).to(torch::kLong))
                         .to(torch::kUInt8)
                         .contiguous();
    return cdk::confusion_from_masks(pred.data_ptr<uint8_t>(), ref.data_ptr<uint8_t>(),
                                     static_cast<size_t>(pred.numel()));
}

std::vector<cdk::Confusion> confusion_at_thresholds(const torch::Tensor& logits, const torch::Tensor& target,
                                                    const std::vector<double>& thresholds) {
    check_shapes(logits, target);
    if (!std::is_sorted(thresholds.begin(), thresholds.end()))
        throw std::invalid_argument("confusion_at_thresholds: thresholds must be ascending");
    torch::NoGradGuard no_grad;
    const auto p = torch::softmax(logits.to(torch::kCPU, torch::kFloat), 1).select(1, 1).reshape({-1});
    const auto t = target.to(torch::kCPU, torch::kLong).reshape({-1});
    const auto valid = t != kIgnoreIndex;
    const auto positive = valid & (t != 0);
    const auto negative = valid & (t == 0);
    // bucket = how many thresholds are <= p, so "p >= thresholds[k]" is "bucket > k".
    const auto k = int64_t(thresholds.size());
    const auto bucket = torch::bucketize(p, torch::tensor(thresholds, torch::kFloat), false, /*right=*/true);
    const auto pos = torch::bincount(bucket.masked_select(positive), {}, k + 1).to(torch::kLong);
    const auto neg = torch::bincount(bucket.masked_select(negative), {}, k + 1).to(torch::kLong);
    const auto pos_c = pos.cumsum(0), neg_c = neg.cumsum(0);  // counts with bucket <= index
    const int64_t n_pos = pos_c[k].item<int64_t>(), n_neg = neg_c[k].item<int64_t>();
    const int64_t excluded = t.numel() - n_pos - n_neg;
    std::vector<cdk::Confusion> out(thresholds.size());
    for (int64_t i = 0; i < k; ++i) {
        auto& c = out[size_t(i)];
        c.fn = pos_c[i].item<int64_t>();
        c.tp = n_pos - c.fn;
        c.tn = neg_c[i].item<int64_t>();
        c.fp = n_neg - c.tn;
        c.excluded = excluded;
    }
    return out;
}

}  // namespace cdk::nn
