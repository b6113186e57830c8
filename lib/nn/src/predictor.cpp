#include "cdk/nn/predictor.hpp"

#include "cdk/core/car.hpp"
#include "cdk/core/error.hpp"
#include "cdk/nn/device.hpp"

namespace cdk::nn {

ModelPredictor::ModelPredictor(ChangeModel model, const torch::Device& device, bool amp)
    : model_(std::move(model)), device_(device), amp_(amp) {}

torch::Tensor ModelPredictor::predict(const torch::Tensor& pre, const torch::Tensor& post, const torch::Tensor&) {
    torch::NoGradGuard no_grad;
    torch::Tensor logits;
    {
        AutocastGuard autocast(amp_, device_);
        logits = model_->forward(pre, post).logits;
    }
    return torch::softmax(logits.to(torch::kFloat32), 1).select(1, 1).to(torch::kCPU).contiguous();
}

FlipTtaPredictor::FlipTtaPredictor(std::unique_ptr<WindowPredictor> inner) : inner_(std::move(inner)) {}

torch::Tensor FlipTtaPredictor::predict(const torch::Tensor& pre, const torch::Tensor& post,
                                        const torch::Tensor& valid) {
    auto p = inner_->predict(pre, post, valid);
    p = p + inner_->predict(pre.flip({3}), post.flip({3}), valid.flip({2})).flip({2});
    p = p + inner_->predict(pre.flip({2}), post.flip({2}), valid.flip({1})).flip({1});
    return (p / 3.0).contiguous();
}

OriginPartitionPredictor::OriginPartitionPredictor(std::unique_ptr<WindowPredictor> origin,
                                                   std::vector<std::unique_ptr<WindowPredictor>> teachers,
                                                   const TeacherSet& set, double threshold)
    : origin_(std::move(origin)), teachers_(std::move(teachers)), names_(set.names), thresholds_(set.thresholds),
      threshold_(threshold), routed_(teachers_.size(), 0) {
    if (teachers_.size() != thresholds_.size() + 1 || names_.size() != teachers_.size())
        throw ConfigError("Origin-Partition inference needs one teacher per CAR partition");
}

torch::Tensor OriginPartitionPredictor::predict(const torch::Tensor& pre, const torch::Tensor& post,
                                                const torch::Tensor& valid) {
    torch::Tensor p = origin_->predict(pre, post, valid);
    const int64_t n = p.size(0);
    std::vector<int> route(size_t(n), 0);
    for (int64_t k = 0; k < n; ++k) {
        const auto v = valid[k];
        const double car = double((p[k].ge(threshold_) & v).sum().item<int64_t>()) / double(v.sum().item<int64_t>());
        route[size_t(k)] = partition_of(car, thresholds_);
    }
    const auto counts = run_grouped(route, teachers_.size(), pre.device(),
                                    [&](size_t t, const torch::Tensor& index) {
                                        const auto cpu_index = index.to(torch::kCPU);
                                        return teachers_[t]->predict(pre.index_select(0, index),
                                                                     post.index_select(0, index),
                                                                     valid.index_select(0, cpu_index));
                                    },
                                    p);
    for (size_t t = 0; t < counts.size(); ++t) routed_[t] += counts[t];
    return p;
}

void OriginPartitionPredictor::begin_scene() { std::fill(routed_.begin(), routed_.end(), 0); }

nlohmann::json OriginPartitionPredictor::summary() const {
    nlohmann::json s = {{"thresholds", thresholds_}, {"windows", nlohmann::json::object()}};
    for (size_t t = 0; t < routed_.size(); ++t) s["windows"][names_[t]] = routed_[t];
    return s;
}

}  // namespace cdk::nn
