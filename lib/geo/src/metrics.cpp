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
    op.ref = open_label(p.ref, grid_of(*open_raster(p.ref)), "reference");
    op.grid = grid_of(*op.ref.ds);
    const Grid pred_grid = grid_of(*open_raster(p.pred));
    if (!grids_match(pred_grid, op.grid))
        throw ConfigError("prediction " + quote(p.pred) + " is not on the grid of reference " +
                          quote(p.ref) + ": prediction is " + pred_grid.describe() +
                          ", reference is " + op.grid.describe());
    op.pred = open_label(p.pred, op.grid, "prediction", "the reference");
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
