#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/nn/models.hpp"
#include "cdk/nn/normalization.hpp"

namespace cdk::nn {

/// What a bundle's header says, typed. Parsed and checked in one place (parse), written in
/// one place (to_json); library code reads a header only through this type. The records
/// meant for people and tools (training, metrics, distillation) stay JSON records, with
/// typed accessors for the values code acts on. docs/formats.md lists every key.
struct BundleHeader {
    ModelOptions model;                          ///< architecture and its options ("model")
    std::vector<std::string> bands;              ///< input band names in order (empty: model.in_bands unnamed)
    std::string data_type;                       ///< GDAL data type of the training data ("" = unknown)
    std::optional<double> nodata;                ///< nodata value of the training tiles
    std::optional<Normalization> normalization;  ///< per-band normalisation (required to map scenes)
    int tile_size = 0;                           ///< tile edge the model was trained at (0 = unknown)
    int overlap = 0;                             ///< tile overlap of the training tiles
    nlohmann::json training = nullptr;           ///< training record: manifests, schedule, progress
    nlohmann::json metrics = nullptr;            ///< validation metrics of the kept epoch
    nlohmann::json distillation = nullptr;       ///< distillation record (method, teachers ...); null = none
    std::string toolkit;                         ///< cdkit version that wrote the bundle
    std::optional<uint64_t> weights_bytes;       ///< length of the weights (detects truncation)
    nlohmann::json other = nlohmann::json::object();  ///< keys this build does not know, kept as they are

    /// Parse and check a header; throws ModelError naming `path` for a missing or ill-typed entry.
    static BundleHeader parse(const nlohmann::json& header, const std::string& path);
    /// The JSON form (what save_bundle writes, less "format").
    nlohmann::json to_json() const;
    /// Bands per date: the named bands, else the model's in_bands.
    int band_count() const;
    /// Per-scene standardisation: the normalisation's, "none" without one.
    std::string scene_norm() const;
    /// The threshold on the change probability that validation chose (metrics.best_threshold).
    std::optional<double> best_threshold() const;
    /// The CAR thresholds of the partitioning the training manifest came from (empty = none).
    std::vector<double> partition_thresholds() const;
    /// Whether training ran to its last epoch (true for a header without a training record).
    bool training_complete() const;
};

/// A model bundle (.cdm): one file holding a JSON header and the weights. The header
/// carries "format" ("cdkit-model/1"), "model" (ModelOptions), "bands" (names, order),
/// "data_type", "normalization" ({"mean": [...], "std": [...]} per band), "tile_size",
/// "overlap", "training" (manifest summary incl. CAR partition), "metrics", "toolkit"
/// (version) — see docs/formats.md.
struct Bundle {
    nlohmann::json header;  ///< the whole header as stored (for tools and summaries)
    ChangeModel model;      ///< the model, weights loaded, on the requested device
    BundleHeader info;      ///< the header, typed: what library code reads
    /// Header and weights matched the checksums the bundle stores. False for a bundle
    /// written before bundles had checksums (it loads; callers warn). A mismatch throws.
    bool verified = false;
};

/// The warning for a bundle without checksums (`verified` false), naming `path`.
std::string unverified_warning(const std::string& path);

/// Write a bundle atomically (temporary name, then rename). `header` gets "format",
/// "model" and "toolkit" filled in from the model.
void save_bundle(const std::string& path, ChangeModelImpl& model, nlohmann::json header,
                 bool overwrite = true);

/// Read only the header of a bundle (cheap; no weights).
nlohmann::json read_bundle_header(const std::string& path);
/// Read only the header of a bundle, typed and checked.
BundleHeader read_bundle_info(const std::string& path);

/// Load a bundle onto `device`: rebuild the model from the header and load its weights.
/// Throws ModelError naming the file for a truncated/corrupt file, an unknown format or
/// architecture, or weights that do not fit the architecture.
Bundle load_bundle(const std::string& path, const torch::Device& device = torch::kCPU);
/// The same, warning through `ctx` when the bundle has no checksum to verify.
Bundle load_bundle(const std::string& path, const torch::Device& device, const RunContext& ctx);

/// Check that a scene fits a bundle; throws ModelError naming both sides
/// ("bundle 'm.cdm' expects 13 UInt16 bands, scene 'x.tif' has 3 Byte bands").
void check_input(const BundleHeader& header, int bands, const std::string& data_type,
                 const std::string& bundle_name, const std::string& scene_name);
/// The same from a header's JSON form.
void check_input(const nlohmann::json& header, int bands, const std::string& data_type,
                 const std::string& bundle_name, const std::string& scene_name);

}  // namespace cdk::nn
