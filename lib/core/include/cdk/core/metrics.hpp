#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>

namespace cdk {

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

}  // namespace cdk
