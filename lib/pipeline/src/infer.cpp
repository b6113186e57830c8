#include "cdk/pipeline/infer.hpp"

#include <ATen/Parallel.h>
#include <omp.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <memory>
#include <set>

#include "cdk/core/error.hpp"
#include "cdk/core/shard.hpp"
#include "cdk/geo/polygons.hpp"
#include "cdk/geo/tile.hpp"
#include "cdk/geo/tile_grid.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"
#include "cdk/nn/torchscript.hpp"
#include "cdk/pipeline/teachers.hpp"
#include "cdk/pipeline/tile_dataset.hpp"

namespace cdk::pipeline {

namespace fs = std::filesystem;

namespace {

constexpr float kProbNodata = -1.f;
constexpr uint8_t kMaskNodata = 255;
constexpr int kDefaultTile = 256;

using Clock = std::chrono::steady_clock;

// How central each pixel of a window at (x0, y0) is: its distance in pixels (0 on the edge
// row) to the nearest window border that lies inside the scene. Borders on the scene's own
// edges do not count: no other window sees past them, and a whole-scene run sees the same
// edge there. Each pixel takes the prediction of the window where it is most central
// (centre cropping), which equals a whole-scene run for any model whose receptive field
// reaches less than half the overlap.
torch::Tensor centrality(int x0, int y0, int w, int h, int width, int height) {
    constexpr int kFar = 1 << 30;
    auto c = torch::empty({h, w}, torch::kInt32);
    auto a = c.accessor<int32_t, 2>();
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            int d = kFar;
            if (x0 > 0) d = std::min(d, x);
            if (x0 + w < width) d = std::min(d, w - 1 - x);
            if (y0 > 0) d = std::min(d, y);
            if (y0 + h < height) d = std::min(d, h - 1 - y);
            a[y][x] = d;
        }
    return c;
}

// A block's values as a [bands, h, w] float tensor, normalised; nodata pixels become 0
// (the mean), as in training (TileDataset).
torch::Tensor block_tensor(const geo::Block& blk, const Normalization& norm) {
    const int64_t h = blk.window.height, w = blk.window.width;
    auto t = torch::empty({blk.bands, h, w}, torch::kFloat32);
    GDALCopyWords64(blk.data.data(), blk.type, blk.value_bytes(), t.data_ptr<float>(), GDT_Float32,
                    sizeof(float), static_cast<GPtrDiff_t>(blk.bands * h * w));
    const auto mean = torch::tensor(norm.mean).view({-1, 1, 1});
    const auto sd = torch::tensor(norm.std).view({-1, 1, 1});
    const auto valid = torch::from_blob(const_cast<uint8_t*>(blk.valid.data()), {h, w}, torch::kUInt8);
    return ((t - mean) / sd).masked_fill_(valid.eq(0).unsqueeze(0), 0.f);
}

}  // namespace

void validate(const InferOptions& o) {
    if (o.model.empty() == o.op_origin.empty())
        throw ConfigError("give a model (--model) or an Origin-Partition origin and teachers (--op-origin, --op-teachers)");
    if (!o.op_origin.empty() && o.op_teachers.size() < 2)
        throw ConfigError("Origin-Partition inference needs at least two teachers (--op-teachers small=A.cdm,large=B.cdm)");
    if (o.op_origin.empty() && (!o.op_teachers.empty() || !o.op_thresholds.empty()))
        throw ConfigError("--op-teachers and --op-thresholds go with --op-origin");
    if (!o.op_thresholds.empty()) check_threshold_count(o.op_teachers.size(), o.op_thresholds.size());
    if (o.pairs.empty() && (o.pre.empty() || o.post.empty()))
        throw ConfigError("both dates are needed (--pre and --post), or a pairs file (--pairs)");
    if (!o.pairs.empty() && (!o.pre.empty() || !o.post.empty()))
        throw ConfigError("give either --pre/--post or --pairs, not both");
    if (o.out.empty()) throw ConfigError("an output change mask is needed (--out)");
    if (!o.pairs.empty() && !o.prob.empty())
        throw ConfigError("with --pairs, --prob cannot name one file; use --with-prob for OUT/<scene>_prob.tif");
    if (o.pairs.empty() && o.with_prob) throw ConfigError("--with-prob goes with --pairs; give --prob PATH instead");
    if (o.pairs.empty() && !o.shard.empty()) throw ConfigError("--shard goes with --pairs");
    if (!o.pairs.empty() && !o.polygons.empty())
        throw ConfigError("with --pairs, --polygons cannot name one file; use --with-polygons for OUT/<scene>.gpkg");
    if (o.pairs.empty() && o.with_polygons)
        throw ConfigError("--with-polygons goes with --pairs; give --polygons PATH instead");
    if (o.bands < 0) throw ConfigError("band count must be positive");
    for (const auto* v : {&o.mean, &o.std})
        if (!v->empty() && int(v->size()) != o.bands)
            throw ConfigError("--mean and --std need one value per band (" + std::to_string(o.bands) + "), got " +
                              std::to_string(v->size()));
    for (double sd : o.std)
        if (!(sd > 0)) throw ConfigError("--std values must be positive");
    if (!(o.min_area_m2 >= 0) || !std::isfinite(o.min_area_m2))
        throw ConfigError("minimum area must be a number >= 0");
    for (const auto* other : {&o.prob, &o.out})
        if (!o.polygons.empty() && o.polygons == *other)
            throw ConfigError("--polygons and another output name the same file " + quote(o.polygons));
    if (!o.shard.empty()) parse_shard(o.shard);
    if (!(o.threshold > 0 && o.threshold < 1))
        throw ConfigError("threshold " + quote(format_number(o.threshold)) + " must lie strictly between 0 and 1");
    if (o.tile_size < 0 || o.tile_size == 1 || o.tile_size > 8192)
        throw ConfigError("window size " + std::to_string(o.tile_size) + " must be 0 (the bundle's) or 2 .. 8192");
    if (o.overlap < -1) throw ConfigError("overlap must be >= 0 (or -1 for a quarter of the window)");
    if (o.tile_size > 0 && o.overlap >= o.tile_size)
        throw ConfigError("overlap " + std::to_string(o.overlap) + " must be smaller than the window " +
                          std::to_string(o.tile_size));
    if (o.batch_size < 1) throw ConfigError("batch size must be at least 1");
    if (o.threads < 0) throw ConfigError("threads must be >= 0");
    if (!o.prob.empty() && o.prob == o.out) throw ConfigError("--prob and --out name the same file " + quote(o.out));
    geo::validate_resampling(o.pair.resampling);
    geo::validate(o.write);
}

namespace {

// A bundle loaded once for every scene of a run (with its teachers in O-P mode).
struct LoadedModel {
    nn::Bundle bundle;
    Normalization norm;
    torch::Device device;
    std::string path;     // what --model (or --op-origin) named
    TeacherSet teachers;  // O-P mode: one per CAR partition, in CAR order
};

LoadedModel load_op_model(const InferOptions& o, LoadedModel origin) {
    origin.teachers = load_teachers(o.op_teachers, o.op_thresholds, origin.device);
    const auto& first = origin.teachers.bundles.front();
    if (first.header.value("normalization", nlohmann::json()) != origin.bundle.header.value("normalization", nlohmann::json()) ||
        first.model->options().in_bands != origin.bundle.model->options().in_bands)
        throw ModelError("teacher " + quote(origin.teachers.paths.front()) +
                         " was trained on other bands or statistics than origin " + quote(origin.path));
    return origin;
}

LoadedModel load_model(const InferOptions& o) {
    const torch::Device device = nn::parse_device(o.device);
    if (!o.op_origin.empty()) {
        nn::Bundle origin = nn::load_bundle(o.op_origin, device);
        if (!origin.header.contains("normalization"))
            throw ModelError("model bundle " + quote(o.op_origin) + " has no normalisation");
        Normalization norm = Normalization::from_json(origin.header.at("normalization"));
        return load_op_model(o, LoadedModel{std::move(origin), std::move(norm), device, o.op_origin, {}});
    }
    if (nn::is_torchscript(o.model)) {
        // A model from Python: what a bundle's header would say comes from the options.
        if (o.bands < 1)
            throw ConfigError("TorchScript model " + quote(o.model) + " needs the band count of each date (--bands)");
        Normalization norm;
        norm.mean.assign(size_t(o.bands), 0.f);
        norm.std.assign(size_t(o.bands), 1.f);
        for (size_t b = 0; b < o.mean.size(); ++b) norm.mean[b] = float(o.mean[b]);
        for (size_t b = 0; b < o.std.size(); ++b) norm.std[b] = float(o.std[b]);
        nlohmann::json header = {{"model", {{"arch", "torchscript"}, {"in_bands", o.bands}}},
                                 {"normalization", norm.to_json()}};
        return {nn::Bundle{header, nn::load_torchscript(o.model, o.bands, device)}, norm, device, o.model, {}};
    }
    if (o.bands > 0 || !o.mean.empty() || !o.std.empty())
        throw ConfigError("--bands, --mean and --std are for TorchScript models; bundle " + quote(o.model) +
                          " carries its own");
    nn::Bundle bundle = nn::load_bundle(o.model, device);
    if (!bundle.header.contains("normalization"))
        throw ModelError("model bundle " + quote(o.model) + " has no normalisation");
    Normalization norm = Normalization::from_json(bundle.header.at("normalization"));
    return {std::move(bundle), std::move(norm), device, o.model, {}};
}

nlohmann::json skipped(const std::string& out) {
    return {{"out", out}, {"skipped", true}};
}

// Where one scene's outputs go.
struct ScenePaths {
    std::string out, prob, polygons;
    /// The outputs that are asked for.
    std::vector<std::string> all() const {
        std::vector<std::string> v{out};
        for (const auto* p : {&prob, &polygons})
            if (!p->empty()) v.push_back(*p);
        return v;
    }
    /// Whether every output exists (the scene finished in an earlier run).
    bool finished() const {
        for (const auto& p : all())
            if (!fs::exists(p)) return false;
        return true;
    }
};

// Removes a file when it goes out of scope (intermediate outputs).
struct RemoveOnExit {
    std::string path;
    ~RemoveOnExit() {
        if (!path.empty()) VSIUnlink(path.c_str());
    }
};

// One scene pair through the model into its outputs.
nlohmann::json map_scene(LoadedModel& m, const geo::SceneSpec& pre, const geo::SceneSpec& post,
                         const ScenePaths& paths, const InferOptions& o, const RunContext& ctx) {
    const std::string& out = paths.out;
    // Polygons need the probability: kept in a hidden file beside the mask when not asked for.
    RemoveOnExit scratch;
    std::string prob = paths.prob;
    if (!paths.polygons.empty() && prob.empty()) {
        const fs::path p(out);
        prob = scratch.path = (p.parent_path() / ("." + p.filename().string() + ".prob.tif")).string();
    }
    const auto t_start = Clock::now();
    nn::Bundle& bundle = m.bundle;
    const nlohmann::json& header = bundle.header;
    const Normalization& norm = m.norm;
    const torch::Device device = m.device;
    const geo::ScenePair pair = geo::open_pair(pre, post, "", o.pair, ctx);
    const int bands = pair.pre.band_count();
    nn::check_input(header, bands, GDALGetDataTypeName(pair.pre.data_type()), m.path, pair.pre.name());
    if (int(norm.mean.size()) != bands)
        throw ModelError("model bundle " + quote(m.path) + " normalises " + std::to_string(norm.mean.size()) +
                         " bands, scene " + quote(pair.pre.name()) + " has " + std::to_string(bands));

    const geo::Grid& grid = pair.grid();
    const int width = grid.width, height = grid.height;
    int tile = o.tile_size > 0 ? o.tile_size : header.value("tile_size", 0);
    if (tile <= 1) tile = kDefaultTile;
    const int overlap = o.overlap >= 0 ? o.overlap : tile / 4;
    if (overlap >= tile)
        throw ConfigError("overlap " + std::to_string(overlap) + " must be smaller than the window " +
                          std::to_string(tile));
    const std::vector<int> xs = geo::tile_offsets(width, tile, overlap);
    const std::vector<int> ys = geo::tile_offsets(height, tile, overlap);
    const int tw = std::min(tile, width), th = std::min(tile, height);
    ctx.info("windows " + std::to_string(tw) + "x" + std::to_string(th) + ", overlap " + std::to_string(overlap) +
             ", " + std::to_string(xs.size() * ys.size()) + " windows in " + std::to_string(ys.size()) +
             " rows, batch " + std::to_string(o.batch_size) + (o.tta ? ", flip TTA" : "") + ", " + device.str());

    // Outputs are created before any work so that a refused output costs nothing.
    geo::RasterWriter mask_out(out, grid, 1, GDT_Byte, o.write, double(kMaskNodata));
    geo::set_change_colour_table(*mask_out.dataset().GetRasterBand(1));
    std::unique_ptr<geo::RasterWriter> prob_out;
    if (!prob.empty()) {
        geo::WriteOptions pw = o.write;
        if (!scratch.path.empty()) {  // an intermediate: plain GeoTIFF, replacing a stale one
            pw = geo::WriteOptions{};
            pw.overwrite = true;
        }
        prob_out = std::make_unique<geo::RasterWriter>(prob, grid, 1, GDT_Float32, pw, double(kProbNodata));
    }

    nn::ChangeModelImpl& model = *bundle.model;
    model.eval();
    torch::NoGradGuard no_grad;
    auto change_prob = [&](nn::ChangeModelImpl& model, const torch::Tensor& a, const torch::Tensor& b) {
        auto run = [&](const torch::Tensor& x, const torch::Tensor& y) {
            return torch::softmax(model.forward(x, y).logits, 1).select(1, 1);
        };
        auto p = run(a, b);
        if (o.tta) {
            p = p + run(a.flip({3}), b.flip({3})).flip({2});
            p = p + run(a.flip({2}), b.flip({2})).flip({1});
            p = p / 3.0;
        }
        return p.to(torch::kCPU);
    };

    // Rolling buffers over the rows of the current window row: [th, width]. `acc` holds
    // the change probability of the most central window seen so far.
    auto acc = torch::zeros({th, width}, torch::kFloat32);
    auto best = torch::full({th, width}, -1, torch::kInt32);  // centrality of the prediction kept, -1 = none
    auto valid = torch::zeros({th, width}, torch::kUInt8);
    long long changed = 0, valid_pixels = 0, windows_run = 0, windows_skipped = 0;
    std::vector<long long> routed(m.teachers.bundles.size(), 0);

    // A row of windows read, normalised and checked for data (in the reader thread).
    struct Row {
        std::vector<torch::Tensor> pres, posts, valids;  // windows with data
        std::vector<int> run_x;                          // their column offsets
        torch::Tensor valid;                             // [th, width]: both dates hold data
        long long skipped = 0;                           // windows without data
    };
    auto read_row = [&](int y) {
        // Like the training loader's threads: small tensor ops here must not fork an
        // OpenMP team of all cores against the model's.
        omp_set_num_threads(1);
        Row row;
        row.valid = torch::zeros({th, width}, torch::kUInt8);
        for (const int x : xs) {
            const geo::Window win{x, y, tw, th};
            const geo::Block a = pair.pre.read(win), b = pair.post.read(win);
            auto va = torch::from_blob(const_cast<uint8_t*>(a.valid.data()), {th, tw}, torch::kUInt8);
            auto vb = torch::from_blob(const_cast<uint8_t*>(b.valid.data()), {th, tw}, torch::kUInt8);
            const auto v = va.logical_and(vb).to(torch::kUInt8);
            row.valid.narrow(1, x, tw).copy_(v);
            if (v.sum().item<int64_t>() == 0) {
                ++row.skipped;
                continue;
            }
            row.valids.push_back(v.to(torch::kBool));
            row.pres.push_back(block_tensor(a, norm));
            row.posts.push_back(block_tensor(b, norm));
            row.run_x.push_back(x);
        }
        return row;
    };

    // Rows are read one ahead: the reader thread reads row r + 1 while the model runs on row
    // r. Only that thread touches the input datasets, one read at a time (GDAL datasets are
    // not to be shared between threads); the main thread writes to the outputs.
    std::future<Row> next = std::async(std::launch::async, read_row, ys.front());
    for (size_t r = 0; r < ys.size(); ++r) {
        const int y = ys[r];
        Row row = next.get();
        if (r + 1 < ys.size()) next = std::async(std::launch::async, read_row, ys[r + 1]);
        valid.copy_(row.valid);
        windows_skipped += row.skipped;
        const auto& pres = row.pres;
        const auto& posts = row.posts;
        const auto& valids = row.valids;
        const auto& run_x = row.run_x;
        for (size_t i = 0; i < run_x.size(); i += size_t(o.batch_size)) {
            const size_t n = std::min(run_x.size() - i, size_t(o.batch_size));
            const auto a = torch::stack(std::vector<torch::Tensor>(pres.begin() + i, pres.begin() + i + n)).to(device);
            const auto b = torch::stack(std::vector<torch::Tensor>(posts.begin() + i, posts.begin() + i + n)).to(device);
            torch::Tensor p = change_prob(model, a, b);
            if (!m.teachers.bundles.empty()) {
                // O-P two-pass: the origin's predicted CAR of each window (over its valid
                // pixels) picks the teacher whose partition holds it; the teacher predicts.
                std::vector<std::vector<int64_t>> groups(m.teachers.bundles.size());
                for (size_t k = 0; k < n; ++k) {
                    const auto& v = valids[i + k];
                    const double car = double((p[int64_t(k)].ge(o.threshold) & v).sum().item<int64_t>()) /
                                       double(v.sum().item<int64_t>());
                    groups[size_t(m.teachers.route(car))].push_back(int64_t(k));
                }
                for (size_t t = 0; t < groups.size(); ++t) {
                    if (groups[t].empty()) continue;
                    const auto idx = torch::tensor(groups[t], torch::kInt64);
                    const auto idx_dev = idx.to(device);
                    p.index_copy_(0, idx, change_prob(*m.teachers.bundles[t].model, a.index_select(0, idx_dev),
                                                      b.index_select(0, idx_dev)));
                    routed[t] += int64_t(groups[t].size());
                }
            }
            for (size_t k = 0; k < n; ++k) {
                const int x = run_x[i + k];
                auto a_win = acc.narrow(1, x, tw);
                auto b_win = best.narrow(1, x, tw);
                const auto c = centrality(x, y, tw, th, width, height);
                const auto take = c.gt(b_win);
                a_win.copy_(torch::where(take, p[int64_t(k)], a_win));
                b_win.copy_(torch::where(take, c, b_win));
            }
            windows_run += int64_t(n);
        }

        // Rows no later window touches are final: write them, then shift the buffers up.
        const int next_y = r + 1 < ys.size() ? ys[r + 1] : height;
        const int rows = next_y - y;
        const auto done_valid = valid.narrow(0, 0, rows).to(torch::kBool) & best.narrow(0, 0, rows).ge(0);
        const auto p = acc.narrow(0, 0, rows);
        const auto is_change = p.ge(o.threshold) & done_valid;
        const auto mask = torch::where(done_valid, is_change.to(torch::kUInt8),
                                       torch::full_like(is_change, kMaskNodata, torch::kUInt8))
                              .contiguous();
        changed += is_change.sum().item<int64_t>();
        valid_pixels += done_valid.sum().item<int64_t>();
        mask_out.write(1, {0, y, width, rows}, mask.data_ptr<uint8_t>(), GDT_Byte);
        if (prob_out) {
            const auto pr = torch::where(done_valid, p, torch::full_like(p, kProbNodata)).contiguous();
            prob_out->write(1, {0, y, width, rows}, pr.data_ptr<float>(), GDT_Float32);
        }
        if (rows < th) {
            for (auto* t : {&acc, &best, &valid}) {
                t->narrow(0, 0, th - rows).copy_(t->narrow(0, rows, th - rows).clone());
                t->narrow(0, th - rows, rows).fill_(t == &best ? -1 : 0);
            }
        } else {
            acc.zero_();
            best.fill_(-1);
            valid.zero_();
        }
        ctx.progress(double(r + 1) / double(ys.size()), "inference");
    }

    if (prob_out) prob_out->commit();
    mask_out.commit();
    geo::write_change_style(out, true);
    nlohmann::json polygons = nullptr;
    if (!paths.polygons.empty()) {
        geo::PolygonOptions po;
        po.mask = out;
        po.prob = prob;
        po.out = paths.polygons;
        po.min_area_m2 = o.min_area_m2;
        po.overwrite = true;  // conflicts were refused before any work
        polygons = geo::polygonize_changes(po, ctx);
    }

    nlohmann::json op_summary = nullptr;
    if (!m.teachers.bundles.empty()) {
        op_summary = {{"thresholds", m.teachers.thresholds}, {"windows", nlohmann::json::object()}};
        for (size_t t = 0; t < routed.size(); ++t) op_summary["windows"][m.teachers.names[t]] = routed[t];
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    const double pixel_m2 = geo::pixel_area_m2(grid);
    const long long total = static_cast<long long>(width) * height;
    if (valid_pixels == 0) ctx.warn("scene " + quote(pair.pre.name()) + " has no pixel with data in both dates");
    return {{"out", out},
            {"prob", paths.prob.empty() ? nlohmann::json(nullptr) : nlohmann::json(paths.prob)},
            {"polygons", polygons},
            {"model", m.path},
            {"arch", bundle.model->options().arch},
            {"width", width},
            {"height", height},
            {"valid_pixels", valid_pixels},
            {"changed_pixels", changed},
            {"car", valid_pixels ? double(changed) / double(valid_pixels) : 0.0},
            {"changed_area_m2", pixel_m2 > 0 ? nlohmann::json(double(changed) * pixel_m2) : nlohmann::json(nullptr)},
            {"threshold", o.threshold},
            {"window", tile},
            {"overlap", overlap},
            {"windows", windows_run},
            {"windows_skipped", windows_skipped},
            {"device", device.str()},
            {"seconds", seconds},
            {"megapixels_per_s", seconds > 0 ? double(total) / 1e6 / seconds : 0.0},
            {"op", op_summary}};
}

// An output that exists is either part of a finished scene (--resume) or to be replaced
// (--overwrite); anything else is refused before any work.
void refuse_existing(const ScenePaths& paths, const InferOptions& o) {
    if (o.write.overwrite) return;
    for (const auto& p : paths.all())
        if (fs::exists(p))
            throw ConfigError("output " + quote(p) + " exists (use --overwrite to replace it" +
                              (o.resume ? ")" : ", or --resume to skip finished scenes)"));
}

}  // namespace

nlohmann::json infer_scene(const InferOptions& o, const RunContext& ctx) {
    validate(o);
    if (o.threads > 0) at::set_num_threads(o.threads);
    if (o.pairs.empty()) {
        const ScenePaths paths{o.out, o.prob, o.polygons};
        if (o.resume && paths.finished()) {
            ctx.info("outputs of " + quote(o.out) + " exist; skipped (--resume)");
            return skipped(o.out);
        }
        refuse_existing(paths, o);
        LoadedModel m = load_model(o);
        return map_scene(m, geo::SceneSpec::parse(o.pre, o.band_pattern), geo::SceneSpec::parse(o.post, o.band_pattern),
                         paths, o, ctx);
    }

    const std::vector<geo::PairJob> jobs = geo::read_pairs_csv(o.pairs, o.band_pattern);
    const Shard shard = resolve_shard(o.shard);
    std::set<std::string> names;
    struct Planned {
        const geo::PairJob* job;
        ScenePaths paths;
    };
    std::vector<Planned> plan;
    for (size_t i = 0; i < jobs.size(); ++i) {
        const auto& j = jobs[i];
        if (j.scene.find_first_of("/\\") != std::string::npos || j.scene == "." || j.scene == "..")
            throw ConfigError("pairs file " + quote(o.pairs) + ": scene name " + quote(j.scene) +
                              " cannot be a file name");
        if (!names.insert(j.scene).second)
            throw ConfigError("pairs file " + quote(o.pairs) + " lists scene " + quote(j.scene) + " twice");
        if (!shard.holds(i)) continue;
        const fs::path dir(o.out);
        ScenePaths paths{(dir / (j.scene + ".tif")).string(),
                         o.with_prob ? (dir / (j.scene + "_prob.tif")).string() : "",
                         o.with_polygons ? (dir / (j.scene + ".gpkg")).string() : ""};
        plan.push_back({&j, std::move(paths)});
    }
    // Refuse conflicts before any work.
    for (const auto& p : plan)
        if (!(o.resume && p.paths.finished())) refuse_existing(p.paths, o);
    std::error_code ec;
    fs::create_directories(o.out, ec);
    if (ec || !fs::is_directory(o.out))
        throw IoError("cannot create output folder " + quote(o.out) + ": " + ec.message());

    ctx.info(std::to_string(plan.size()) + " of " + std::to_string(jobs.size()) + " scenes in shard " + shard.text());
    LoadedModel m = load_model(o);
    nlohmann::json scenes = nlohmann::json::array();
    int done = 0, skipped_count = 0;
    std::vector<std::string> failures;
    for (size_t k = 0; k < plan.size(); ++k) {
        const Planned& p = plan[k];
        if (o.resume && p.paths.finished()) {
            nlohmann::json s = skipped(p.paths.out);
            s["scene"] = p.job->scene;
            scenes.push_back(s);
            ++skipped_count;
            continue;
        }
        const RunContext sub = ctx.scaled(double(k) / double(plan.size()), double(k + 1) / double(plan.size()));
        try {
            nlohmann::json s = map_scene(m, p.job->pre, p.job->post, p.paths, o, sub);
            s["scene"] = p.job->scene;
            ctx.info("scene " + quote(p.job->scene) + ": " + std::to_string(s["changed_pixels"].get<long long>()) +
                     " changed pixels, " + format_number(s["seconds"].get<double>()) + " s");
            scenes.push_back(s);
            ++done;
        } catch (const Cancelled&) {
            throw;
        } catch (const Error& e) {
            // One bad scene must not cost an archive run the others.
            ctx.log(LogLevel::Error, "scene " + quote(p.job->scene) + ": " + e.what());
            failures.push_back(p.job->scene + ": " + e.what());
        }
    }
    if (!failures.empty())
        throw Error(std::to_string(failures.size()) + " of " + std::to_string(plan.size()) +
                    " scenes failed (first: " + failures.front() + ")");
    return {{"pairs", o.pairs}, {"shard", shard.text()}, {"scenes", scenes}, {"done", done}, {"skipped", skipped_count}};
}

}  // namespace cdk::pipeline
