#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cdk/core/context.hpp"

namespace cdk::geo {

/// Pixel counts of a binary change map against a reference (change = the positive class).
struct Confusion {
    long long tp = 0;        ///< change predicted, change in the reference
    long long fp = 0;        ///< change predicted, no change in the reference
    long long fn = 0;        ///< no change predicted, change in the reference
    long long tn = 0;        ///< no change predicted, no change in the reference
    long long excluded = 0;  ///< pixels left out: nodata (255) in the prediction or the reference

    /// Pixels counted (tp + fp + fn + tn).
    long long valid() const { return tp + fp + fn + tn; }
    /// Add another confusion's counts (pooling scenes).
    Confusion& operator+=(const Confusion& o);
    /// Whether all counts are equal.
    bool operator==(const Confusion& o) const;
};

/// Precision, recall, F1 and IoU of one class.
struct ClassMetrics {
    double precision = 0;  ///< TP / (TP + FP) of the class
    double recall = 0;     ///< TP / (TP + FN) of the class
    double f1 = 0;         ///< 2 TP / (2 TP + FP + FN)
    double iou = 0;        ///< TP / (TP + FP + FN)
};

/// The JL1-CD paper's metrics of a confusion. A ratio whose denominator is 0 is 1 when the
/// class is absent from both the prediction and the reference, else 0; kappa is 1 when the
/// chance agreement is 1 (both maps are a single, identical class). Never NaN.
struct Metrics {
    ClassMetrics change;     ///< the change class (1)
    ClassMetrics no_change;  ///< the no-change class (0)
    double oa = 0;           ///< overall accuracy (TP + TN) / N
    double kappa = 0;        ///< Cohen's kappa (po - pe) / (1 - pe)
    double miou = 0;         ///< mean of the two classes' IoU
    double mf1 = 0;          ///< mean of the two classes' F1
};

/// Metrics of a confusion (see docs/cd-eval.md for the formulas and 0/0 conventions).
Metrics compute_metrics(const Confusion& c);

/// {"tp", "fp", "fn", "tn", "valid", "excluded"}.
nlohmann::json to_json(const Confusion& c);

/// {"change": {precision, recall, f1, iou}, "no_change": {...}, "oa", "kappa", "miou", "mf1"}.
nlohmann::json to_json(const Metrics& m);

/// Count `n` pixels of two masks coded 0 = no change, 1 = change, 255 = nodata; a pixel
/// that is 255 in either mask is excluded. Any other nonzero value counts as change.
Confusion confusion_from_masks(const uint8_t* pred, const uint8_t* ref, size_t n);

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
