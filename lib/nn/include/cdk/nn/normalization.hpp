#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace cdk::nn {

/// Mean and standard deviation per band of one date of one scene, over the pixels valid in
/// both dates (geo::PairStatistics).
struct DateStatistics {
    std::vector<double> mean, std;
    /// From a per-band statistics array ([{"count", "mean", "std", ...}, ...]); a band
    /// without valid pixels gets mean 0 and std 1. Throws ConfigError on another form.
    static DateStatistics from_json(const nlohmann::json& bands);
};

/// Per-band normalisation: (value - mean) / std, from a tile set's dataset.json
/// ("statistics"."all"), stored in model bundles. With per-scene standardisation
/// (`scene` "image" or "band"), each date of each scene is first standardised by its own
/// statistics: one mean and standard deviation over all its bands ("image", as Daudt et al.
/// 2018 do for OSCD) or per band ("band"); mean and std are then 0 and 1.
struct Normalization {
    std::vector<float> mean;  ///< per band
    std::vector<float> std;   ///< per band (never 0)
    std::string scene = "none";  ///< per-scene standardisation first: none | image | band
    /// Identity normalisation of `bands` bands after per-scene standardisation `scene`.
    static Normalization standardised(int bands, const std::string& scene);
    /// The normalisation of one date of one scene with statistics `s`: per-scene
    /// standardisation folded into mean and std (scene "none" after that); *this when
    /// scene is "none".
    Normalization for_date(const DateStatistics& s) const;
    /// `raw` [bands, H, W] float32 normalised band by band, (raw - mean) / std, with every
    /// pixel where `valid` [H, W] is 0 set to 0 (the mean, the least informative value).
    /// The one rule for training tiles and inference windows alike.
    torch::Tensor apply(const torch::Tensor& raw, const torch::Tensor& valid) const;
    /// From dataset.json; throws ConfigError when statistics are missing.
    static Normalization from_dataset_json(const nlohmann::json& dataset);
    /// Same statistics and per-scene standardisation.
    bool operator==(const Normalization& o) const { return mean == o.mean && std == o.std && scene == o.scene; }
    bool operator!=(const Normalization& o) const { return !(*this == o); }
    /// {"mean": [...], "std": [...]}.
    nlohmann::json to_json() const;
    /// Parse the JSON form (as stored in bundles).
    static Normalization from_json(const nlohmann::json& j);
};

/// Throws ConfigError unless `scene` is none, image or band.
void validate_scene_normalization(const std::string& scene);

}  // namespace cdk::nn
