#include "cdk/nn/normalization.hpp"

#include <algorithm>
#include <cmath>

#include "cdk/core/error.hpp"

namespace cdk::nn {

namespace {

constexpr float kStdFloor = 1e-6f;

}  // namespace

Normalization Normalization::from_dataset_json(const nlohmann::json& dataset) {
    const auto* stats = dataset.is_object() && dataset.contains("statistics") ? &dataset["statistics"] : nullptr;
    if (!stats || !stats->is_object() || !stats->contains("all") || !(*stats)["all"].is_array() ||
        (*stats)["all"].empty())
        throw ConfigError("dataset.json has no per-band statistics (\"statistics\".\"all\")");
    Normalization n;
    for (const auto& b : (*stats)["all"]) {
        if (!b.contains("mean") || !b.contains("std") || !b["mean"].is_number() || !b["std"].is_number())
            throw ConfigError("dataset.json statistics lack a numeric \"mean\" or \"std\" for band " +
                              b.value("name", std::to_string(n.mean.size() + 1)));
        n.mean.push_back(b["mean"].get<float>());
        n.std.push_back(std::max(b["std"].get<float>(), kStdFloor));
    }
    return n;
}

nlohmann::json Normalization::to_json() const {
    nlohmann::json j = {{"mean", mean}, {"std", std}};
    if (scene != "none") j["scene"] = scene;  // bundles without it: none
    return j;
}

void validate_scene_normalization(const std::string& scene) {
    if (scene != "none" && scene != "image" && scene != "band")
        throw ConfigError("per-scene standardisation must be none, image or band, not " + quote(scene));
}

DateStatistics DateStatistics::from_json(const nlohmann::json& bands) {
    if (!bands.is_array() || bands.empty())
        throw ConfigError("per-band statistics must be a non-empty array");
    DateStatistics d;
    for (const auto& b : bands) {
        if (!b.is_object()) throw ConfigError("per-band statistics must be objects with \"mean\" and \"std\"");
        const bool empty = b.value("count", int64_t(0)) == 0;
        if (!empty && !(b.contains("mean") && b["mean"].is_number() && b.contains("std") && b["std"].is_number()))
            throw ConfigError("per-band statistics lack a numeric \"mean\" or \"std\"");
        d.mean.push_back(empty ? 0.0 : b["mean"].get<double>());
        d.std.push_back(empty ? 1.0 : b["std"].get<double>());
    }
    return d;
}

Normalization Normalization::standardised(int bands, const std::string& scene) {
    validate_scene_normalization(scene);
    Normalization n;
    n.mean.assign(static_cast<size_t>(bands), 0.f);
    n.std.assign(static_cast<size_t>(bands), 1.f);
    n.scene = scene;
    return n;
}

torch::Tensor Normalization::apply(const torch::Tensor& raw, const torch::Tensor& valid) const {
    const auto m = torch::tensor(mean).view({-1, 1, 1});
    const auto s = torch::tensor(std).view({-1, 1, 1});
    return ((raw - m) / s).masked_fill_(valid.eq(0).unsqueeze(0), 0.f);
}

Normalization Normalization::for_date(const DateStatistics& s) const {
    if (scene == "none") return *this;
    if (s.mean.size() != mean.size() || s.std.size() != mean.size())
        throw ConfigError("scene statistics have " + std::to_string(s.mean.size()) + " bands, the normalisation " +
                          std::to_string(mean.size()));
    const size_t n = mean.size();
    std::vector<double> m = s.mean, sd = s.std;
    if (scene == "image") {  // one mean and deviation over all bands (equal counts per band)
        double mu = 0, var = 0;
        for (size_t b = 0; b < n; ++b) mu += s.mean[b] / double(n);
        for (size_t b = 0; b < n; ++b) var += (s.std[b] * s.std[b] + (s.mean[b] - mu) * (s.mean[b] - mu)) / double(n);
        m.assign(n, mu);
        sd.assign(n, std::sqrt(var));
    }
    // ((v - m) / sd - mean) / std = (v - (m + mean * sd)) / (sd * std)
    Normalization out;
    out.scene = "none";
    for (size_t b = 0; b < n; ++b) {
        const double sb = std::max(sd[b], double(kStdFloor));
        out.mean.push_back(float(m[b] + double(mean[b]) * sb));
        out.std.push_back(std::max(float(sb * double(std[b])), kStdFloor));
    }
    return out;
}

Normalization Normalization::from_json(const nlohmann::json& j) {
    if (!j.is_object() || !j.contains("mean") || !j.contains("std") || !j["mean"].is_array() ||
        !j["std"].is_array() || j["mean"].size() != j["std"].size())
        throw ConfigError("normalisation must be {\"mean\": [...], \"std\": [...]} of equal length");
    Normalization n;
    n.mean = j["mean"].get<std::vector<float>>();
    n.std = j["std"].get<std::vector<float>>();
    for (auto& s : n.std) s = std::max(s, kStdFloor);
    n.scene = j.value("scene", std::string("none"));
    validate_scene_normalization(n.scene);
    return n;
}

}  // namespace cdk::nn
