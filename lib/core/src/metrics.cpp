#include "cdk/core/metrics.hpp"

namespace cdk {

namespace {

// num / den, with the documented 0/0 convention: when nothing could be counted, the class
// was absent from both maps (a perfect result, 1) or only from one of them (0).
double ratio(double num, double den, bool class_absent_from_both) {
    if (den > 0) return num / den;
    return class_absent_from_both ? 1.0 : 0.0;
}

// Metrics of one class, given its own true positives and the errors against it.
ClassMetrics class_metrics(long long tp, long long fp, long long fn) {
    const bool absent = tp == 0 && fp == 0 && fn == 0;
    ClassMetrics m;
    m.precision = ratio(double(tp), double(tp + fp), absent);
    m.recall = ratio(double(tp), double(tp + fn), absent);
    m.f1 = ratio(2.0 * double(tp), 2.0 * double(tp) + double(fp) + double(fn), absent);
    m.iou = ratio(double(tp), double(tp + fp + fn), absent);
    return m;
}

nlohmann::json class_json(const ClassMetrics& m) {
    return {{"precision", m.precision}, {"recall", m.recall}, {"f1", m.f1}, {"iou", m.iou}};
}

}  // namespace

Confusion& Confusion::operator+=(const Confusion& o) {
    tp += o.tp;
    fp += o.fp;
    fn += o.fn;
    tn += o.tn;
    excluded += o.excluded;
    return *this;
}

bool Confusion::operator==(const Confusion& o) const {
    return tp == o.tp && fp == o.fp && fn == o.fn && tn == o.tn && excluded == o.excluded;
}

Metrics compute_metrics(const Confusion& c) {
    Metrics m;
    m.change = class_metrics(c.tp, c.fp, c.fn);
    // For the no-change class the roles swap: its true positives are TN, its false
    // positives are the missed changes (FN), its false negatives the false alarms (FP).
    m.no_change = class_metrics(c.tn, c.fn, c.fp);
    const double n = double(c.valid());
    m.oa = ratio(double(c.tp + c.tn), n, true);
    if (n > 0) {
        const double po = m.oa;
        const double pred_change = double(c.tp + c.fp) / n, ref_change = double(c.tp + c.fn) / n;
        const double pe = pred_change * ref_change + (1 - pred_change) * (1 - ref_change);
        // pe == 1 only when both maps are the same single class, hence po == 1 too.
        m.kappa = pe < 1.0 ? (po - pe) / (1.0 - pe) : 1.0;
    } else {
        m.kappa = 1.0;
    }
    m.miou = (m.change.iou + m.no_change.iou) / 2;
    m.mf1 = (m.change.f1 + m.no_change.f1) / 2;
    return m;
}

nlohmann::json to_json(const Confusion& c) {
    return {{"tp", c.tp}, {"fp", c.fp},         {"fn", c.fn},
            {"tn", c.tn}, {"valid", c.valid()}, {"excluded", c.excluded}};
}

nlohmann::json to_json(const Metrics& m) {
    return {{"change", class_json(m.change)},
            {"no_change", class_json(m.no_change)},
            {"oa", m.oa},
            {"kappa", m.kappa},
            {"miou", m.miou},
            {"mf1", m.mf1}};
}

Confusion confusion_from_masks(const uint8_t* pred, const uint8_t* ref, size_t n) {
    // Counted per (pred, ref) code so the loop stays branch-light on large strips.
    long long tp = 0, fp = 0, fn = 0, tn = 0, excluded = 0;
    for (size_t i = 0; i < n; ++i) {
        const uint8_t p = pred[i], r = ref[i];
        if (p == 255 || r == 255) {
            ++excluded;
            continue;
        }
        const bool pc = p != 0, rc = r != 0;
        tp += pc & rc;
        fp += pc & !rc;
        fn += !pc & rc;
        tn += !pc & !rc;
    }
    Confusion c;
    c.tp = tp;
    c.fp = fp;
    c.fn = fn;
    c.tn = tn;
    c.excluded = excluded;
    return c;
}

}  // namespace cdk
