#include "cdk/nn/teachers.hpp"

#include "cdk/core/car.hpp"
#include "cdk/core/error.hpp"

namespace cdk::nn {

int TeacherSet::route(double car) const { return partition_of(car, thresholds); }

nlohmann::json TeacherSet::describe() const {
    nlohmann::json j = nlohmann::json::array();
    for (size_t i = 0; i < bundles.size(); ++i) {
        const double lo = i == 0 ? 0.0 : thresholds[i - 1];
        const double hi = i < thresholds.size() ? thresholds[i] : 1.0;
        j.push_back({{"name", names[i]},
                     {"bundle", paths[i]},
                     {"arch", bundles[i].model->options().arch},
                     {"width", bundles[i].model->options().width},
                     {"car_range", {lo, hi}}});
    }
    return j;
}

std::vector<int64_t> run_grouped(const std::vector<int>& group_of, size_t groups, const torch::Device& device,
                                 const std::function<torch::Tensor(size_t group, const torch::Tensor& index)>& run,
                                 torch::Tensor& out) {
    std::vector<int64_t> counts(groups, 0);
    for (size_t g = 0; g < groups; ++g) {
        std::vector<int64_t> idx;
        for (size_t i = 0; i < group_of.size(); ++i)
            if (group_of[i] == int(g)) idx.push_back(int64_t(i));
        if (idx.empty()) continue;
        counts[g] = int64_t(idx.size());
        const auto index = torch::tensor(idx, torch::kInt64);
        const torch::Tensor result = run(g, index.to(device));
        if (!out.defined()) {
            std::vector<int64_t> shape = result.sizes().vec();
            shape[0] = int64_t(group_of.size());
            out = torch::empty(shape, result.options());
        }
        out.index_copy_(0, index.to(out.device()), result);
    }
    return counts;
}

void check_threshold_count(size_t teachers, size_t thresholds) {
    if (thresholds + 1 != teachers)
        throw ConfigError(std::to_string(teachers) + " teachers need " + std::to_string(teachers - 1) +
                          " CAR thresholds, got " + std::to_string(thresholds));
}

TeacherSet load_teachers(const std::vector<std::string>& items, std::vector<double> thresholds,
                         const torch::Device& device, const RunContext* ctx) {
    if (items.size() < 2) throw ConfigError("at least two teachers are needed (NAME=BUNDLE,NAME=BUNDLE)");
    std::vector<std::pair<std::string, std::string>> given;
    for (const auto& item : items) {
        const auto eq = item.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
            throw ConfigError("teacher " + quote(item) + " must be NAME=BUNDLE, e.g. small=small.cdm");
        given.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
    std::vector<std::pair<std::string, std::string>> ordered;
    for (const auto& n : partition_names(given.size() - 1))
        for (const auto& p : given)
            if (p.first == n) ordered.push_back(p);
    if (ordered.size() != given.size()) ordered = given;

    TeacherSet set;
    set.thresholds = std::move(thresholds);
    for (const auto& [name, path] : ordered) {
        Bundle b = ctx ? load_bundle(path, device, *ctx) : load_bundle(path, device);
        for (auto& p : b.model->parameters()) p.set_requires_grad(false);
        if (!set.bundles.empty()) {
            const auto& first = set.bundles.front();
            if (b.model->options().in_bands != first.model->options().in_bands ||
                b.info.normalization != first.info.normalization)
                throw ModelError("teacher " + quote(path) + " was trained on other bands or statistics than teacher " +
                                 quote(set.paths.front()));
        }
        if (set.thresholds.empty()) {
            const auto th = b.info.partition_thresholds();
            if (th.size() + 1 == ordered.size()) set.thresholds = th;
        }
        set.names.push_back(name);
        set.paths.push_back(path);
        set.bundles.push_back(std::move(b));
    }
    if (set.thresholds.empty())
        throw ConfigError("the teachers' bundles do not record " + std::to_string(ordered.size() - 1) +
                          " CAR thresholds (were they trained on a cd-partition manifest?); give them explicitly");
    check_threshold_count(set.bundles.size(), set.thresholds.size());
    for (size_t i = 1; i < set.thresholds.size(); ++i)
        if (!(set.thresholds[i] > set.thresholds[i - 1])) throw ConfigError("CAR thresholds must increase");
    return set;
}

}  // namespace cdk::nn
