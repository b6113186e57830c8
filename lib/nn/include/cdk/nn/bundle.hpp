#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <string>

#include "cdk/nn/models.hpp"

namespace cdk::nn {

/// A model bundle (.cdm): one file holding a JSON header and the weights. The header
/// carries "format" ("cdkit-model/1"), "model" (ModelOptions), "bands" (names, order),
/// "data_type", "normalization" ({"mean": [...], "std": [...]} per band), "tile_size",
/// "overlap", "training" (manifest summary incl. CAR partition), "metrics", "toolkit"
/// (version) — see docs/formats.md.
struct Bundle {
    nlohmann::json header;  ///< the whole header
    ChangeModel model;      ///< the model, weights loaded, on the requested device
};

/// Write a bundle atomically (temporary name, then rename). `header` gets "format",
/// "model" and "toolkit" filled in from the model.
void save_bundle(const std::string& path, ChangeModelImpl& model, nlohmann::json header,
                 bool overwrite = true);

/// Read only the header of a bundle (cheap; no weights).
nlohmann::json read_bundle_header(const std::string& path);

/// Load a bundle onto `device`: rebuild the model from the header and load its weights.
/// Throws ModelError naming the file for a truncated/corrupt file, an unknown format or
/// architecture, or weights that do not fit the architecture.
Bundle load_bundle(const std::string& path, const torch::Device& device = torch::kCPU);

/// Check that a scene fits a bundle; throws ModelError naming both sides
/// ("bundle 'm.cdm' expects 13 UInt16 bands, scene 'x.tif' has 3 Byte bands").
void check_input(const nlohmann::json& header, int bands, const std::string& data_type,
                 const std::string& bundle_name, const std::string& scene_name);

}  // namespace cdk::nn
