// cd-infer --tiles: a model over the tiles of a manifest. Pseudo-masks for a second-stage
// segmenter (KD-MSI), or a threshold sweep against pixel-labelled tiles (--tau-sweep).
#include <filesystem>
#include <fstream>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/metrics.hpp"
#include "cdk/geo/raster.hpp"
#include "infer_model.hpp"

namespace cdk::pipeline {

namespace fs = std::filesystem;

namespace {

// The thresholds the sweep scores.
std::vector<double> sweep_grid() {
    std::vector<double> t;
    for (int i = 1; i <= 19; ++i) t.push_back(0.05 * i);
    return t;
}

void check_tile_options(const InferOptions& o) {
    if (!o.pre.empty() || !o.post.empty() || !o.pairs.empty())
        throw ConfigError("--tiles maps the tiles of a manifest; it goes without --pre, --post and --pairs");
    if (!o.prob.empty() || !o.polygons.empty() || o.with_prob || o.with_polygons)
        throw ConfigError("--tiles writes pseudo-mask tiles only; --prob and --polygons are for scenes");
    if (o.tau_sweep && !o.out.empty())
        throw ConfigError("--tau-sweep writes nothing; leave out --out (" + quote(o.out) + ")");
    if (!o.tau_sweep && o.out.empty())
        throw ConfigError("--tiles writes a tile set of pseudo-masks: give --out FOLDER (or --tau-sweep)");
    if (!(o.threshold > 0 && o.threshold < 1))
        throw ConfigError("threshold " + quote(format_number(o.threshold)) + " must lie strictly between 0 and 1");
    // The output folder must not be or hold the manifest, its tiles or the model
    // (--overwrite would delete them).
    const std::string tile_folder = fs::path(o.tiles).parent_path().empty() ? "." : fs::path(o.tiles).parent_path().string();
    check_not_input(o.out, {{"--tiles", o.tiles}, {"--tiles folder", tile_folder}, {"--model", o.model}});
}

struct TileMap {
    torch::Tensor prob;   // [h, w] float
    torch::Tensor valid;  // [h, w] bool
    torch::Tensor label;  // [h, w] int64 (255 ignored)
    bool labelled = false;
};

}  // namespace

nlohmann::json infer_tiles(const InferOptions& o, const RunContext& ctx) {
    check_tile_options(o);
    LoadedModel m = load_model(o, ctx);
    TileDataset data(o.tiles, m.norm);
    if (data.size() == 0) throw ConfigError("manifest " + quote(o.tiles) + " has no tiles");
    const int model_bands = m.bundle.model->options().in_bands;
    if (data.bands() != model_bands)
        throw ConfigError("manifest " + quote(o.tiles) + " has " + std::to_string(data.bands()) + " bands, model " +
                          quote(m.path) + " expects " + std::to_string(model_bands));
    auto* msi = dynamic_cast<nn::MsiPredictor*>(m.predictor.get());
    m.predictor->begin_scene();

    std::optional<AtomicPath> out;
    const auto grid = sweep_grid();
    std::vector<Confusion> swept(grid.size());
    Confusion at_threshold;
    std::vector<std::string> rows;
    long long changed_tiles = 0, labelled_tiles = 0, gated_known = 0;
    double car_sum = 0;
    if (!o.tau_sweep) {
        out.emplace(o.out, o.write.overwrite);
        if (!fs::create_directory(out->temp()) || !fs::create_directory(out->temp() + "/label"))
            throw IoError("cannot create folder " + quote(o.out));
    }
    const std::string final_out = o.out.empty() ? std::string() : fs::absolute(o.out).lexically_normal().string();
    geo::WriteOptions tile_write = o.write;
    tile_write.overwrite = false;

    const int batch = o.batch_size > 0 ? o.batch_size : 4;
    BatchLoader loader(data, batch, false, std::nullopt, 0, 2);
    size_t done = 0;
    while (auto b = loader.next()) {
        // Known image-level labels gate the pseudo-masks of training tiles; the sweep
        // predicts them, as mapping a scene would.
        if (msi) {
            std::vector<int> known;
            if (!o.tau_sweep) known = b->changed;
            for (const int k : known) gated_known += k == 0;
            msi->set_known_labels(known);
        }
        auto pre = b->pre.to(m.device), post = b->post.to(m.device);
        if (m.nhwc) {
            pre = pre.contiguous(torch::MemoryFormat::ChannelsLast);
            post = post.contiguous(torch::MemoryFormat::ChannelsLast);
        }
        const torch::Tensor p = m.predictor->predict(pre, post, b->valid);
        for (int64_t k = 0; k < b->size(); ++k) {
            const TileRecord& r = data.records()[done + size_t(k)];
            auto ds = geo::open_raster(r.a);
            const geo::Grid g = geo::grid_of(*ds);
            const int64_t h = g.height, w = g.width;
            TileMap t{p[k].slice(0, 0, h).slice(1, 0, w), b->valid[k].slice(0, 0, h).slice(1, 0, w),
                      b->label[k].slice(0, 0, h).slice(1, 0, w), b->pixel_labelled[size_t(k)]};
            const auto is_change = (m.strict ? t.prob.gt(m.threshold) : t.prob.ge(m.threshold)) & t.valid;
            if (t.labelled) {
                ++labelled_tiles;
                const auto scored = t.label.ne(255) & t.valid;
                const auto ref = t.label.eq(1);
                auto count = [&](const torch::Tensor& pred) {
                    Confusion c;
                    c.tp = (pred & ref & scored).sum().item<int64_t>();
                    c.fp = (pred & ref.logical_not() & scored).sum().item<int64_t>();
                    c.fn = (pred.logical_not() & ref & scored).sum().item<int64_t>();
                    c.tn = (pred.logical_not() & ref.logical_not() & scored).sum().item<int64_t>();
                    return c;
                };
                at_threshold += count(is_change);
                if (o.tau_sweep)
                    for (size_t i = 0; i < grid.size(); ++i)
                        swept[i] += count(m.strict ? t.prob.gt(grid[i]) : t.prob.ge(grid[i]));
            }
            if (o.tau_sweep) continue;
            const auto mask = torch::where(t.valid, is_change.to(torch::kUInt8), torch::full_like(is_change, 255, torch::kUInt8))
                                  .contiguous();
            const int64_t n_valid = t.valid.sum().item<int64_t>(), n_change = is_change.sum().item<int64_t>();
            const double car = n_valid ? double(n_change) / double(n_valid) : 0.0;
            car_sum += car;
            changed_tiles += n_change > 0;
            const std::string rel = "label/" + r.id + ".tif";
            geo::RasterWriter wl(out->temp() + "/" + rel, g, 1, GDT_Byte, tile_write, 255.0);
            geo::set_change_colour_table(*wl.dataset().GetRasterBand(1));
            wl.write(1, {0, 0, int(w), int(h)}, mask.data_ptr<uint8_t>(), GDT_Byte);
            wl.commit();
            // The source row, with paths relative to the new tile set and the pseudo-mask.
            std::vector<std::string> row = data.table().rows[done + size_t(k)];
            const CsvTable& tab = data.table();
            auto set = [&](const std::string& col, const std::string& v) {
                const int c = tab.column(col);
                if (c >= 0) row[size_t(c)] = v;
            };
            set("a", relative_path(fs::absolute(r.a).string(), final_out));
            set("b", relative_path(fs::absolute(r.b).string(), final_out));
            set("label", rel);
            set("car", format_number(car));
            if (tab.column("changed") < 0) row.push_back(std::to_string(r.changed >= 0 ? r.changed : int(n_change > 0)));
            rows.push_back(csv_line(row));
        }
        done += size_t(b->size());
        ctx.progress(double(done) / double(data.size()), o.tau_sweep ? "sweeping" : "pseudo-masks");
    }

    nlohmann::json s = {{"tiles", o.tiles}, {"model", m.path}, {"count", data.size()}, {"mode", m.predictor->summary()}};
    if (labelled_tiles > 0) {
        s["labelled_tiles"] = labelled_tiles;
        s["threshold"] = m.threshold;
        s["against_labels"] = to_json(compute_metrics(at_threshold));
        s["against_labels"]["confusion"] = to_json(at_threshold);
    }
    if (o.tau_sweep) {
        if (labelled_tiles == 0)
            throw ConfigError("--tau-sweep needs pixel-labelled tiles; manifest " + quote(o.tiles) + " has none");
        nlohmann::json table = nlohmann::json::array();
        size_t best = 0;
        double best_f1 = -1;
        std::string text = "threshold sweep on " + std::to_string(labelled_tiles) + " labelled tiles:\n  tau     F1      IoU     precision recall";
        for (size_t i = 0; i < grid.size(); ++i) {
            const auto c = compute_metrics(swept[i]).change;
            const double tau = std::round(grid[i] * 100) / 100;
            table.push_back({{"threshold", tau}, {"f1", c.f1}, {"iou", c.iou}, {"precision", c.precision}, {"recall", c.recall}});
            if (c.f1 > best_f1 + 1e-12) best_f1 = c.f1, best = i;
            char line[128];
            std::snprintf(line, sizeof line, "\n  %.2f  %.4f  %.4f  %.4f    %.4f", tau, c.f1, c.iou, c.precision, c.recall);
            text += line;
        }
        ctx.info(text);
        s["sweep"] = table;
        s["best"] = table[best];
        return s;
    }
    // The tile set: the manifest, and the source's dataset.json with a record of the labels.
    nlohmann::json dataset = find_dataset_json(o.tiles);
    dataset["pseudo_labels"] = {{"model", m.path},
                                {"source", o.tiles},
                                {"threshold", m.threshold},
                                {"mode", m.predictor->summary()},
                                {"gated_by_known_label", gated_known}};
    std::vector<std::string> header = data.table().header;
    if (data.table().column("changed") < 0) header.push_back("changed");
    std::string csv = csv_line(header) + "\n";
    for (const auto& r : rows) csv += r + "\n";
    write_text_file(out->temp() + "/tiles.csv", csv, true);
    write_text_file(out->temp() + "/dataset.json", dataset.dump(2) + "\n", true);
    out->commit();
    s["out"] = o.out;
    s["manifest"] = (fs::path(o.out) / "tiles.csv").string();
    s["changed_tiles"] = changed_tiles;
    s["mean_car"] = data.size() ? car_sum / double(data.size()) : 0.0;
    ctx.info("wrote " + std::to_string(data.size()) + " pseudo-mask tiles (" + std::to_string(changed_tiles) +
             " with change) and " + quote(s["manifest"].get<std::string>()));
    return s;
}

}  // namespace cdk::pipeline
