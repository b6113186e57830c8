#include "cdk/nn/hicd.hpp"

#include <cmath>

#include "cdk/core/error.hpp"
#include "cdk/nn/device.hpp"

namespace cdk::nn {

void validate(const HicdOptions& o) {
    if (o.teacher.empty()) throw ConfigError("HiCD needs a teacher trained on clean pairs (--teacher T.cdm)");
    for (double w : {o.self_weight, o.cross_weight, o.global_weight, o.feature_mse_weight})
        if (!(w >= 0) || !std::isfinite(w)) throw ConfigError("HiCD term weights must be numbers >= 0");
    if (o.pool < 2 || o.pool > 32)
        throw ConfigError("HiCD pooling must keep 2 to 32 positions per side, not " + std::to_string(o.pool));
    if (o.depths < 1) throw ConfigError("HiCD needs at least one feature depth, not " + std::to_string(o.depths));
}

torch::Tensor pooled_positions(const torch::Tensor& features, int pool) {
    auto f = features.to(torch::kFloat32);
    const int64_t h = std::min<int64_t>(f.size(2), pool), w = std::min<int64_t>(f.size(3), pool);
    if (h != f.size(2) || w != f.size(3)) f = torch::adaptive_avg_pool2d(f, {h, w});
    f = f.flatten(2);  // [N, C, M]
    return f / (f.norm(2, 1, true) + 1e-6);
}

torch::Tensor self_correlation(const torch::Tensor& features, int pool) {
    const auto f = pooled_positions(features, pool);
    return torch::bmm(f.transpose(1, 2), f);
}

torch::Tensor cross_correlation(const torch::Tensor& f1, const torch::Tensor& f2, int pool) {
    return torch::bmm(pooled_positions(f1, pool).transpose(1, 2), pooled_positions(f2, pool));
}

torch::Tensor global_correlation(const torch::Tensor& features) {
    auto g = features.to(torch::kFloat32).mean({2, 3});  // [N, C]
    g = g / (g.norm(2, 1, true) + 1e-6);
    return torch::mm(g, g.t());
}

namespace {

using Levels = std::vector<std::pair<torch::Tensor, torch::Tensor>>;  // (student, teacher)

// The `depths` deepest levels both networks have, deepest last.
Levels deepest(const std::vector<torch::Tensor>& s, const std::vector<torch::Tensor>& t, int depths) {
    const size_t k = std::min({size_t(depths), s.size(), t.size()});
    Levels l;
    for (size_t i = 0; i < k; ++i) l.emplace_back(s[s.size() - k + i], t[t.size() - k + i]);
    return l;
}

// Mean of f(student, teacher) over pairs of tensors.
template <typename F>
torch::Tensor mean_over(const Levels& levels, F f) {
    torch::Tensor sum;
    for (const auto& [s, t] : levels) {
        const auto v = f(s, t);
        sum = sum.defined() ? sum + v : v;
    }
    return sum / double(levels.size());
}

}  // namespace

HicdObjective::HicdObjective(ChangeModel model, LossOptions loss, Bundle teacher, HicdOptions options,
                             nlohmann::json record)
    : SupervisedObjective(std::move(model), std::move(loss)), teacher_(std::move(teacher)),
      options_(std::move(options)), record_(std::move(record)) {
    for (auto& p : teacher_.model->parameters()) p.set_requires_grad(false);
    teacher_.model->eval();
}

ChangeOutput HicdObjective::teacher_output(const Batch& b, const StepContext& step) {
    torch::NoGradGuard no_grad;
    teacher_.model->eval();  // frozen, whatever the caller did
    AutocastGuard autocast(step.amp, step.device);
    return teacher_.model->forward(b.pre_clean, b.post_clean);
}

Loss HicdObjective::loss(const Batch& b, const StepContext& step) {
    if (!b.pre_clean.defined() || !b.post_clean.defined())
        throw ConfigError("HiCD needs each sample's clean pair beside the degraded one (train with --degrade)");
    const ChangeOutput s = forward_for_loss(*model_, b, step);
    Loss l;
    l.total = task_loss(s, b);
    l.terms.emplace_back("task", l.total);
    const HicdOptions& o = options_;
    if (o.self_weight == 0 && o.cross_weight == 0 && o.global_weight == 0 && o.feature_mse_weight == 0) return l;
    const ChangeOutput t = teacher_output(b, step);
    // The per-date (semantic) levels, each once; every term but cross adds the fused ones.
    const Levels pre = deepest(s.features_pre, t.features_pre, o.depths);
    const Levels post = deepest(s.features_post, t.features_post, o.depths);
    Levels all = pre;
    all.insert(all.end(), post.begin(), post.end());
    for (const auto& p : deepest(s.features_fused, t.features_fused, o.depths)) all.push_back(p);
    auto add = [&](const char* name, double weight, const std::function<torch::Tensor()>& term) {
        if (weight == 0 || all.empty()) return;
        const torch::Tensor v = term();
        l.terms.emplace_back(name, v);
        l.total = l.total + weight * v;
    };
    const int pool = o.pool;
    add("self", o.self_weight, [&] {
        return mean_over(all, [&](const auto& a, const auto& c) {
            return torch::mse_loss(self_correlation(a, pool), self_correlation(c, pool));
        });
    });
    if (!post.empty() && pre.size() == post.size())
        add("cross", o.cross_weight, [&] {
            torch::Tensor sum;
            for (size_t i = 0; i < pre.size(); ++i) {
                const auto v = torch::mse_loss(cross_correlation(pre[i].first, post[i].first, pool),
                                               cross_correlation(pre[i].second, post[i].second, pool));
                sum = sum.defined() ? sum + v : v;
            }
            return sum / double(pre.size());
        });
    add("global", o.global_weight, [&] {
        return mean_over(all, [](const auto& a, const auto& c) {
            return torch::mse_loss(global_correlation(a), global_correlation(c));
        });
    });
    add("feature_mse", o.feature_mse_weight, [&] {
        return mean_over(all, [](const auto& a, const auto& c) {
            if (!a.sizes().equals(c.sizes()))
                throw ConfigError("feature MSE needs the student's features shaped as the teacher's (same "
                                  "architecture and width); use the correlation terms instead");
            return torch::mse_loss(a.to(torch::kFloat32), c.to(torch::kFloat32));
        });
    });
    return l;
}

}  // namespace cdk::nn
