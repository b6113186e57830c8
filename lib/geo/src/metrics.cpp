#include "cdk/geo/metrics.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/geo/scene.hpp"

namespace fs = std::filesystem;

namespace cdk::geo {

namespace {

// About a million pixels per strip: two Float64 read buffers of 8 MB and two masks of 1 MB,
// whatever the scene's size.
constexpr long long kStripPixels = 1LL << 20;

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

// Same rule as open_label: georeferenced grids must match exactly; when either raster has
// no georeferencing (PNG masks of LEVIR-style datasets) only the size can be compared.
bool grids_match(const Grid& a, const Grid& b) {
    if (a.has_geotransform && b.has_geotransform) return a.same_as(b);
    return a.width == b.width && a.height == b.height;
}

// Rows per strip: about kStripPixels, a whole number of the reference's blocks when possible.
int strip_rows_for(GDALDataset& ds, int requested) {
    const int width = std::max(1, ds.GetRasterXSize()), height = std::max(1, ds.GetRasterYSize());
    if (requested > 0) return std::min(requested, height);
    int bx = 0, by = 0;
    ds.GetRasterBand(1)->GetBlockSize(&bx, &by);
    int rows = static_cast<int>(std::max<long long>(1, kStripPixels / width));
    if (by > 1 && rows > by) rows -= rows % by;
    return std::min(rows, height);
}

std::string file_stem(const std::string& path) { return fs::path(path).stem().string(); }

// Four decimals for log lines (the JSON carries full precision).
std::string short_number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", v);
    return buf;
}

// A scene's prediction and reference, opened and checked.
struct OpenedPair {
    Label pred;
    Label ref;
    Grid grid;
};

OpenedPair open_eval_pair(const EvalPair& p, const EvalOptions& o) {
    OpenedPair op;
    // The reference's grid first, so that a prediction on another grid is the one named.
    op.ref = open_label(p.ref, grid_of(*open_raster(p.ref)));
    op.grid = grid_of(*op.ref.ds);
    const Grid pred_grid = grid_of(*open_raster(p.pred));
    if (!grids_match(pred_grid, op.grid))
        throw ConfigError("prediction " + quote(p.pred) + " is not on the grid of reference " +
                          quote(p.ref) + ": prediction is " + pred_grid.describe() +
                          ", reference is " + op.grid.describe());
    op.pred = open_label(p.pred, op.grid);
    if (o.pred_nodata) op.pred.nodata = o.pred_nodata;
    if (o.ref_nodata) op.ref.nodata = o.ref_nodata;
    return op;
}

Confusion confusion_of(const OpenedPair& op, const EvalOptions& o, const RunContext& ctx) {
    Confusion c;
    const int height = op.grid.height, width = op.grid.width;
    const int rows = strip_rows_for(*op.ref.ds, o.strip_rows);
    for (int y = 0; y < height; y += rows) {
        const Window w{0, y, width, std::min(rows, height - y)};
        const std::vector<uint8_t> pred = op.pred.read(w);
        const std::vector<uint8_t> ref = op.ref.read(w);
        c += confusion_from_masks(pred.data(), ref.data(), pred.size());
        ctx.progress(double(y + w.height) / height, "evaluating");
    }
    return c;
}

nlohmann::json entry_json(const Confusion& c) {
    nlohmann::json j = to_json(compute_metrics(c));
    j["confusion"] = to_json(c);
    return j;
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

void validate(const EvalOptions& o) {
    const bool single = !o.pred.empty() || !o.ref.empty();
    if (single == !o.pairs.empty())
        throw ConfigError("give exactly one input: --pred with --ref, or --pairs");
    if (single && (o.pred.empty() || o.ref.empty()))
        throw ConfigError("--pred and --ref go together");
    if (!o.scene_name.empty() && !single) throw ConfigError("--scene-name goes with --pred/--ref");
    if (o.strip_rows < 0)
        throw ConfigError("strip rows must not be negative, got " + std::to_string(o.strip_rows));
}

std::vector<EvalPair> read_eval_pairs_csv(const std::string& path) {
    CsvTable t = read_csv(path);
    const int c_scene = t.require_column("scene", path);
    const int c_pred = t.require_column("pred", path);
    const int c_ref = t.require_column("ref", path);
    std::string base = fs::path(path).parent_path().string();
    if (base.empty()) base = ".";
    std::vector<EvalPair> pairs;
    std::set<std::string> seen;
    for (size_t i = 0; i < t.rows.size(); ++i) {
        const auto& row = t.rows[i];
        const std::string where = "pairs file " + quote(path) + " row " + std::to_string(i + 2);
        EvalPair p;
        p.scene = row[c_scene];
        if (p.scene.empty()) throw ConfigError(where + " has an empty scene name");
        if (!seen.insert(p.scene).second)
            throw ConfigError("scene name " + quote(p.scene) + " appears twice in " + quote(path));
        if (row[c_pred].empty() || row[c_ref].empty())
            throw ConfigError(where + " needs both a pred and a ref path");
        p.pred = resolve_path(row[c_pred], base);
        p.ref = resolve_path(row[c_ref], base);
        pairs.push_back(std::move(p));
    }
    if (pairs.empty()) throw ConfigError("pairs file " + quote(path) + " lists no scene");
    return pairs;
}

nlohmann::json evaluate(const EvalOptions& o, const RunContext& ctx) {
    validate(o);
    ensure_gdal_registered();
    std::vector<EvalPair> pairs;
    if (!o.pairs.empty()) {
        pairs = read_eval_pairs_csv(o.pairs);
    } else {
        pairs.push_back({o.scene_name.empty() ? file_stem(o.ref) : o.scene_name, o.pred, o.ref});
    }

    // Check every pair before reading any pixel: a mismatch in the last scene of a long list
    // should not surface after an hour of streaming. Sizes weight the progress.
    std::vector<double> pixels;
    double total = 0;
    for (const auto& p : pairs) {
        const OpenedPair op = open_eval_pair(p, o);
        pixels.push_back(double(op.grid.width) * op.grid.height);
        total += pixels.back();
    }

    Confusion pooled;
    nlohmann::json scenes = nlohmann::json::array();
    double done = 0;
    for (size_t i = 0; i < pairs.size(); ++i) {
        const auto& p = pairs[i];
        const OpenedPair op = open_eval_pair(p, o);
        const double share = total > 0 ? pixels[i] / total : 1.0 / pairs.size();
        const Confusion c = confusion_of(op, o, ctx.scaled(done, done + share));
        done += share;
        if (c.valid() == 0)
            ctx.warn("scene " + quote(p.scene) + " has no pixel with data in both " +
                     quote(p.pred) + " and " + quote(p.ref));
        const Metrics m = compute_metrics(c);
        ctx.debug("scene " + quote(p.scene) + ": F1 " + short_number(m.change.f1) + ", IoU " +
                  short_number(m.change.iou) + ", kappa " + short_number(m.kappa));
        nlohmann::json s = {{"scene", p.scene}, {"pred", p.pred}, {"ref", p.ref}};
        s.update(entry_json(c));
        scenes.push_back(std::move(s));
        pooled += c;
    }
    ctx.progress(1.0, "evaluating");
    const Metrics m = compute_metrics(pooled);
    ctx.info("evaluated " + std::to_string(pairs.size()) + " scene(s), " +
             std::to_string(pooled.valid()) + " pixels: change F1 " + short_number(m.change.f1) +
             ", IoU " + short_number(m.change.iou) + ", kappa " + short_number(m.kappa));
    return {{"pooled", entry_json(pooled)}, {"scenes", std::move(scenes)}};
}

}  // namespace cdk::geo
