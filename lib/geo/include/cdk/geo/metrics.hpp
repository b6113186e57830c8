#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/core/metrics.hpp"

namespace cdk::geo {

// The metric definitions live in lib/core so that lib/nn computes the very same numbers on
// tensors without linking GDAL.
using cdk::ClassMetrics;
using cdk::compute_metrics;
using cdk::Confusion;
using cdk::confusion_from_masks;
using cdk::Metrics;
using cdk::to_json;

/// Options of cd-eval.
struct EvalOptions {
    std::string pred;        ///< predicted change mask of a single scene
    std::string ref;         ///< reference (ground truth) mask of a single scene
    std::string scene_name;  ///< name of the single scene (empty = the reference's file stem)
    std::string pairs;       ///< CSV of many scenes: scene,pred,ref (paths relative to the CSV)
    std::optional<double> pred_nodata;  ///< nodata value of the predictions (overrides the files')
    std::optional<double> ref_nodata;   ///< nodata value of the references (overrides the files')
    int strip_rows = 0;  ///< rows read at a time, 0 = about a million pixels per strip
};

/// Cross-option checks: exactly one of --pred/--ref or --pairs, strip size not negative.
void validate(const EvalOptions& options);

/// One scene to evaluate: a name, a prediction and a reference.
struct EvalPair {
    std::string scene;  ///< name in the report
    std::string pred;   ///< predicted change mask
    std::string ref;    ///< reference change mask
};

/// Read a pairs CSV with columns scene,pred,ref (paths relative to the CSV's folder).
std::vector<EvalPair> read_eval_pairs_csv(const std::string& path);

/// Compare predicted change masks with references, strip by strip: per-scene and pooled
/// (summed confusion) metrics as {"pooled": {...}, "scenes": [{"scene", "pred", "ref", ...}]}.
/// Throws ConfigError when a prediction is not on its reference's grid, naming both.
nlohmann::json evaluate(const EvalOptions& options, const RunContext& ctx = {});

}  // namespace cdk::geo
