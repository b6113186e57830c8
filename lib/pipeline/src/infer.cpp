#include "cdk/pipeline/infer.hpp"

#include <ATen/Parallel.h>
#include <omp.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <mutex>
#include <thread>
#include <memory>
#include <set>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/shard.hpp"
#include "cdk/geo/polygons.hpp"
#include "cdk/geo/stats.hpp"
#include "cdk/geo/tile.hpp"
#include "cdk/geo/tile_grid.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"
#include "cdk/nn/kdmsi.hpp"
#include "cdk/nn/predictor.hpp"
#include "cdk/nn/torchscript.hpp"
#include "cdk/pipeline/teachers.hpp"
#include "cdk/pipeline/tile_dataset.hpp"
#include "infer_model.hpp"

namespace cdk::pipeline {

namespace fs = std::filesystem;

namespace {

constexpr float kProbNodata = -1.f;
constexpr uint8_t kMaskNodata = 255;
constexpr int kDefaultTile = 256;
// The automatic window plan (plan_windows): windows up to this edge for local models. Larger
// ones computed more slowly per pixel here (docs/benchmarks.md), more than they save in overlap.
constexpr int kAutoWindow = 512;
constexpr int kWindowMultiple = 32;
constexpr int64_t kBatchPixels = 4 * 256 * 256;  // the automatic batch: about this many pixels
constexpr int64_t kMaxAutoBatch = 4;

using Clock = std::chrono::steady_clock;

// How central pixel p is in a window [x0, x0 + w) of a row (or column) of `size` pixels:
// its distance to the nearest window border that lies inside the scene (0 on the edge
// pixel). Borders on the scene's own edges do not count: no other window sees past them,
// and a whole-scene run sees the same edge there.
int centrality(int p, int x0, int w, int size) {
    int d = std::numeric_limits<int>::max();
    if (x0 > 0) d = std::min(d, p - x0);
    if (x0 + w < size) d = std::min(d, x0 + w - 1 - p);
    return d;
}

// The pixels of a row of `size` pixels that each window (offsets from geo::tile_offsets,
// width `w`) gives the output: every pixel goes to the window where it is most central,
// the first one on ties (centre cropping). Returns [lo, hi) per window: contiguous, in
// window order, together covering [0, size); empty for a window no pixel needs. Done per
// axis, a pixel's window is one where its distance to the nearest interior border in 2-D
// is largest too, so a model whose receptive field reaches less than half the overlap
// gives exactly the map of a whole-scene run.
std::vector<std::pair<int, int>> owned_ranges(const std::vector<int>& offsets, int w, int size) {
    std::vector<std::pair<int, int>> own(offsets.size(), {0, 0});
    size_t first = 0;  // first window that still reaches p
    int last_owner = -1;
    for (int p = 0; p < size; ++p) {
        while (offsets[first] + w <= p) ++first;
        size_t owner = first;
        for (size_t i = first; i < offsets.size() && offsets[i] <= p; ++i)
            if (centrality(p, offsets[i], w, size) > centrality(p, offsets[owner], w, size)) owner = i;
        if (int(owner) < last_owner) throw std::logic_error("centre cropping: window ranges are not in order");
        if (int(owner) != last_owner) own[owner].first = p;
        own[owner].second = p + 1;
        last_owner = int(owner);
    }
    return own;
}

// A block's values as a [bands, h, w] float tensor, normalised; nodata pixels become 0
// (the mean), as in training (TileDataset).
torch::Tensor block_tensor(const geo::Block& blk, const Normalization& norm) {
    const int64_t h = blk.window.height, w = blk.window.width;
    auto t = torch::empty({blk.bands, h, w}, torch::kFloat32);
    GDALCopyWords64(blk.data.data(), blk.type, blk.value_bytes(), t.data_ptr<float>(), GDT_Float32,
                    sizeof(float), static_cast<GPtrDiff_t>(blk.bands * h * w));
    return norm.apply(t, torch::from_blob(const_cast<uint8_t*>(blk.valid.data()), {h, w}, torch::kUInt8));
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
    validate_scene_normalization(o.scene_norm);
    if (!(o.min_area_m2 >= 0) || !std::isfinite(o.min_area_m2))
        throw ConfigError("minimum area must be a number >= 0");
    if (o.min_pixels < 0) throw ConfigError("minimum region size must be >= 0 pixels");
    if (!o.pairs.empty() && !o.quicklook.out.empty())
        throw ConfigError("with --pairs, --quicklook cannot name one file; use --with-quicklook for OUT/<scene>.png");
    if (o.pairs.empty() && o.with_quicklook)
        throw ConfigError("--with-quicklook goes with --pairs; give --quicklook FILE.png instead");
    if (!o.quicklook.out.empty()) geo::check_quicklook_path(o.quicklook.out, o.out);
    for (const auto* other : {&o.prob, &o.out})
        if (!o.polygons.empty() && o.polygons == *other)
            throw ConfigError("--polygons and another output name the same file " + quote(o.polygons));
    if (!o.shard.empty()) parse_shard(o.shard);
    if (!(o.threshold > 0 && o.threshold < 1))
        throw ConfigError("threshold " + quote(format_number(o.threshold)) + " must lie strictly between 0 and 1");
    if (o.tile_size < 0 || o.tile_size == 1 || o.tile_size > 8192)
        throw ConfigError("window size " + std::to_string(o.tile_size) + " must be 0 (automatic) or 2 .. 8192");
    if (o.overlap < -1) throw ConfigError("overlap must be >= 0 (or -1 for the default)");
    if (o.tile_size > 0 && o.overlap >= o.tile_size)
        throw ConfigError("overlap " + std::to_string(o.overlap) + " must be smaller than the window " +
                          std::to_string(o.tile_size));
    if (o.batch_size < 0) throw ConfigError("batch size must be at least 1 (or 0 for automatic)");
    if (o.ram_mb < 1) throw ConfigError("--ram must be at least 1 MB");
    nn::validate_memory_format(o.memory_format);
    if (o.threads < 0) throw ConfigError("threads must be >= 0");
    if (!o.prob.empty() && o.prob == o.out) throw ConfigError("--prob and --out name the same file " + quote(o.out));
    if (!o.pairs.empty() && (o.pairs == o.out)) throw ConfigError("--out names the pairs file " + quote(o.pairs));
    geo::validate_resampling(o.pair.resampling);
    if (!o.tiles.empty()) {
        geo::validate(o.write);
    } else {
        // The maps' format: from --of, else the names' extensions (OUT/<scene>.tif with --pairs).
        const std::string mask = o.pairs.empty() ? o.out : "scene.tif";
        geo::validate(o.write, mask);
        const std::string prob = o.pairs.empty() ? o.prob : (o.with_prob ? "scene_prob.tif" : "");
        if (!prob.empty()) {
            geo::validate(o.write, prob);
            if (geo::output_format(o.write, prob) == "PNG")
                throw ConfigError("--prob " + quote(prob) + ": PNG cannot hold the Float32 probability; use .tif");
        }
    }
}

namespace {

// Channels-last where it is faster (the same rule as training); not for TorchScript models,
// whose layout is their own. Then each model in its inference form (batch norm folded,
// sub-pixel upsampling) unless --no-fold.
void prepare_models(LoadedModel& m, const InferOptions& o) {
    const auto& mo = m.bundle.model->options();
    m.nhwc = mo.arch != "torchscript" && nn::use_channels_last(o.memory_format, m.device, mo.width);
    std::vector<nn::ChangeModelImpl*> models = {m.bundle.model.get()};
    for (auto& t : m.teachers.bundles) models.push_back(t.model.get());
    for (auto* model : models) {
        if (m.nhwc) nn::to_channels_last(*model);
        if (o.fold) nn::prepare_for_inference(*model);
    }
}

LoadedModel load_op_model(const InferOptions& o, LoadedModel origin, const RunContext& ctx) {
    origin.teachers = load_teachers(o.op_teachers, o.op_thresholds, origin.device, &ctx);
    const auto& first = origin.teachers.bundles.front();
    if (first.info.normalization != origin.bundle.info.normalization ||
        first.model->options().in_bands != origin.bundle.model->options().in_bands)
        throw ModelError("teacher " + quote(origin.teachers.paths.front()) +
                         " was trained on other bands or statistics than origin " + quote(origin.path));
    return origin;
}

// The normalisation a bundle maps scenes with; refused when it records none.
Normalization bundle_normalization(const nn::Bundle& b, const std::string& path) {
    if (!b.info.normalization) throw ModelError("model bundle " + quote(path) + " has no normalisation");
    return *b.info.normalization;
}

LoadedModel open_model(const InferOptions& o, const RunContext& ctx) {
    const torch::Device device = nn::parse_device(o.device);
    if (o.amp) nn::check_amp(device, "--amp", ctx);
    if (!o.op_origin.empty()) {
        nn::Bundle origin = nn::load_bundle(o.op_origin, device, ctx);
        Normalization norm = bundle_normalization(origin, o.op_origin);
        return load_op_model(o, LoadedModel{std::move(origin), std::move(norm), device, o.op_origin, {}, false, 0.5, nullptr}, ctx);
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
        norm.scene = o.scene_norm;
        nn::BundleHeader info;
        info.model.arch = "torchscript";
        info.model.in_bands = o.bands;
        info.normalization = norm;
        nn::Bundle bundle{info.to_json(), nn::load_torchscript(o.model, o.bands, device), info};
        return {std::move(bundle), norm, device, o.model, {}, false, 0.5, nullptr};
    }
    if (o.bands > 0 || !o.mean.empty() || !o.std.empty() || o.scene_norm != "none")
        throw ConfigError("--bands, --mean, --std and --scene-norm are for TorchScript models; bundle " + quote(o.model) +
                          " carries its own");
    nn::Bundle bundle = nn::load_bundle(o.model, device, ctx);
    Normalization norm = bundle_normalization(bundle, o.model);
    return {std::move(bundle), std::move(norm), device, o.model, {}, false, 0.5, nullptr};
}

}  // namespace

nn::MsiOptions msi_options(const InferOptions& o) {
    nn::MsiOptions m;
    if (!o.msi_scales.empty()) m.scales = o.msi_scales;
    if (o.msi_branch != "student" && o.msi_branch != "teacher")
        throw ConfigError("--msi-branch must be student or teacher, not " + quote(o.msi_branch));
    m.branch = o.msi_branch == "teacher" ? nn::MsiBranch::kTeacher : nn::MsiBranch::kStudent;
    m.gate = o.msi_gate;
    m.flip = o.msi_flip;
    m.window_norm = o.msi_window_norm;
    nn::validate(m);
    return m;
}

namespace {

// One model's predictor in the asked mode: the model alone, or averaged over flips (--tta).
std::unique_ptr<nn::WindowPredictor> model_predictor(const nn::ChangeModel& model, const InferOptions& o,
                                                     const torch::Device& device) {
    std::unique_ptr<nn::WindowPredictor> p;
    if (dynamic_cast<nn::CamPairModelImpl*>(model.get()))
        p = std::make_unique<nn::MsiPredictor>(model, device, o.amp, msi_options(o));
    else
        p = std::make_unique<nn::ModelPredictor>(model, device, o.amp);
    if (o.tta) p = std::make_unique<nn::FlipTtaPredictor>(std::move(p));
    return p;
}

// The mapping mode: one model, or Origin-Partition's origin and teachers (each with --tta).
std::unique_ptr<nn::WindowPredictor> make_predictor(const LoadedModel& m, const InferOptions& o) {
    auto origin = model_predictor(m.bundle.model, o, m.device);
    if (m.teachers.bundles.empty()) return origin;
    std::vector<std::unique_ptr<nn::WindowPredictor>> teachers;
    for (const auto& t : m.teachers.bundles) teachers.push_back(model_predictor(t.model, o, m.device));
    return std::make_unique<nn::OriginPartitionPredictor>(std::move(origin), std::move(teachers), m.teachers,
                                                          m.threshold);
}

}  // namespace

LoadedModel load_model(const InferOptions& o, const RunContext& ctx) {
    LoadedModel m = open_model(o, ctx);
    prepare_models(m, o);
    m.threshold = o.threshold;
    if (o.threshold_auto && !o.threshold_from_model) {
        const auto t = m.teachers.bundles.empty() ? m.bundle.info.best_threshold() : std::nullopt;
        if (t && *t > 0 && *t < 1) {
            m.threshold = *t;
            m.threshold_source = "model";
            ctx.info("threshold " + format_number(*t) + ": the one validation chose for " + quote(m.path) +
                     " (--threshold sets another)");
        } else {
            m.threshold_source = "default";
        }
    }
    if (o.threshold_from_model) {
        m.threshold_source = "model";
        if (!m.teachers.bundles.empty())
            throw ConfigError("--threshold model needs one bundle (--model); in Origin-Partition mode give a number");
        const auto t = m.bundle.info.best_threshold();
        if (!t)
            throw ModelError("model " + quote(m.path) +
                             " has no validation-chosen threshold (trained without --val, distilled, or by an older "
                             "cdkit); give --threshold a number");
        m.threshold = *t;
        if (!(m.threshold > 0 && m.threshold < 1))
            throw ModelError("model " + quote(m.path) + " has an invalid threshold " + format_number(*t));
    }
    m.bundle.model->eval();
    m.predictor = make_predictor(m, o);
    // KD-MSI's maps count as change strictly above the threshold (as its authors threshold).
    m.strict = dynamic_cast<nn::CamPairModelImpl*>(m.bundle.model.get()) != nullptr;
    const bool msi_asked = !o.msi_scales.empty() || o.msi_branch != "student" || !o.msi_gate || !o.msi_flip ||
                           o.msi_window_norm;
    if (msi_asked && !m.strict)
        throw ConfigError("the --msi-* options are for KD-MSI bundles; " + quote(m.path) + " holds " +
                          quote(m.bundle.model->options().arch));
    return m;
}

namespace {

nlohmann::json skipped(const std::string& out) {
    return {{"out", out}, {"skipped", true}};
}

// The files a run reads that are not scenes: the model or the Origin-Partition bundles.
std::vector<NamedInput> model_inputs(const InferOptions& o) {
    std::vector<NamedInput> in{{"--model", o.model}, {"--op-origin", o.op_origin}, {"--pairs", o.pairs}};
    for (const auto& t : o.op_teachers) in.push_back({"--op-teachers", t.substr(t.find('=') + 1)});
    return in;
}

// No output may be (or, as a folder, hold) an input: nothing of the user's is replaced.
void check_outputs_spare(const std::vector<std::string>& outputs, std::vector<NamedInput> inputs,
                         const std::vector<std::pair<std::string, const geo::SceneSpec*>>& scenes) {
    for (const auto& [option, spec] : scenes)
        for (const auto& f : spec->files) inputs.push_back({option, f});
    cdk::check_not_inputs(outputs, inputs);
}

// Where one scene's outputs go.
struct ScenePaths {
    std::string out, prob, polygons, quicklook;
    /// The outputs that are asked for.
    std::vector<std::string> all() const {
        std::vector<std::string> v{out};
        for (const auto* p : {&prob, &polygons, &quicklook})
            if (!p->empty()) v.push_back(*p);
        return v;
    }
    /// Whether every output exists (the scene finished in an earlier run).
    bool finished() const {
        for (const auto& p : all())
            if (!fs::exists(p)) return false;
        return true;
    }
    /// The outputs that exist.
    std::vector<std::string> existing() const {
        std::vector<std::string> v;
        for (const auto& p : all())
            if (fs::exists(p)) v.push_back(p);
        return v;
    }
    /// --resume found part of this scene's outputs (an earlier run stopped while it
    /// published them): they are made again, replacing those.
    bool redo = false;
};

// Removes a file when it goes out of scope (intermediate outputs).
struct RemoveOnExit {
    std::string path;
    ~RemoveOnExit() {
        if (!path.empty()) VSIUnlink(path.c_str());
    }
};

// A window read, normalised and checked for data, by the reader thread.
struct WindowData {
    size_t row = 0, col = 0;  // indices into the window offsets
    bool run = false;         // some pixel it gives the output holds data in both dates
    torch::Tensor pre, post;  // [bands, h, w] normalised (when run)
    torch::Tensor valid;      // [h, w] bool: both dates hold data
};

// Reads windows in a given order in its own thread, at most `capacity` ahead of the
// consumer, so that the model never waits for the disk. Only this thread touches the input
// datasets (GDAL datasets are not to be shared between threads).
class WindowReader {
public:
    using ReadFn = std::function<WindowData(size_t row, size_t col)>;
    WindowReader(std::vector<std::pair<size_t, size_t>> order, ReadFn read, size_t capacity)
        : order_(std::move(order)), read_(std::move(read)), capacity_(std::max<size_t>(capacity, 1)) {
        thread_ = std::thread([this] { run(); });
    }
    ~WindowReader() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    WindowReader(const WindowReader&) = delete;
    WindowReader& operator=(const WindowReader&) = delete;

    /// The next window in order; rethrows what the reader failed with.
    WindowData next() {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty() || error_; });
        if (queue_.empty()) std::rethrow_exception(error_);
        WindowData w = std::move(queue_.front());
        queue_.pop_front();
        cv_.notify_all();
        return w;
    }

private:
    void run() {
        // Like the training loader's threads: small tensor ops here must not fork an
        // OpenMP team of all cores against the model's.
        omp_set_num_threads(1);
        try {
            for (const auto& [row, col] : order_) {
                {
                    std::unique_lock<std::mutex> lock(mu_);
                    cv_.wait(lock, [&] { return stop_ || queue_.size() < capacity_; });
                    if (stop_) return;
                }
                WindowData w = read_(row, col);
                std::lock_guard<std::mutex> lock(mu_);
                queue_.push_back(std::move(w));
                cv_.notify_all();
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu_);
            error_ = std::current_exception();
            cv_.notify_all();
        }
    }

    std::vector<std::pair<size_t, size_t>> order_;
    ReadFn read_;
    size_t capacity_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<WindowData> queue_;
    std::exception_ptr error_;
    bool stop_ = false;
    std::thread thread_;
};

// Column strips: groups of neighbouring window columns processed top to bottom one after
// the other, so that row buffers and GDAL's block cache are bounded by the strip, not the
// scene's width.
struct Strip {
    size_t first = 0, end = 0;  // window columns [first, end)
    int x0 = 0, x1 = 0;         // output columns they give
};

constexpr int64_t kMB = 1 << 20;

// How cd-infer streams a scene within --ram: bytes of the window queue and of one output
// column (row buffers and input blocks), the column strips, and GDAL's block cache.
struct StreamPlan {
    int64_t window_bytes = 0;  // read-ahead windows plus the batch in the model
    int64_t cache_bytes = 0;   // GDAL block cache asked for
    std::vector<Strip> strips;
    int widest = 0;            // widest strip's read extent
};

// What streaming a scene in windows of tw x th, `batch` at a time, holds in memory (bounded
// by --ram): windows in flight, and per output column of a strip the row buffers and the
// input blocks cached for a window row.
struct StreamCosts {
    int64_t window_bytes = 0;    // read-ahead windows plus the batch in the model
    int64_t per_column = 0;      // per column of a strip
    int64_t per_column_in = 0;   // the input blocks' share of it (all columns when striped)
    bool striped = false;        // a striped input decodes whole rows whatever the window
    int64_t avail = 0;           // --ram left for the strips' columns

    // `factor`: the predictor's memory factor (nn::WindowPredictor::memory_factor).
    StreamCosts(const InferOptions& o, const geo::ScenePair& pair, int tw, int th, int batch, double factor) {
        const int width = pair.grid().width;
        const int bands = pair.pre.band_count();
        const int64_t value = GDALGetDataTypeSizeBytes(pair.pre.data_type());
        // A window in flight: raw values and float tensors of both dates, validity masks. The
        // queue holds two batches ahead, the stacked copy one, the model `factor` (the mode's
        // memory factor: 1 for one forward pass at the window's size).
        const int64_t per_window = int64_t(tw) * th * (2 * bands * (value + 4) + 3);
        window_bytes = int64_t(std::llround(double(per_window) * (3.0 + factor))) * batch;
        // Per output column: probability, validity and mask of the rows being filled and being
        // written; input blocks of both dates cached for the window row (x 1.5 for the warped
        // date's own cache and for block edges).
        const int64_t per_column_out = int64_t(th) * 2 * (4 + 1 + 1);
        per_column_in = int64_t(th) * 2 * bands * value * 3 / 2;
        striped = std::max(pair.pre.block_width(), pair.post.block_width()) >= width;
        avail = int64_t(o.ram_mb) * kMB - window_bytes - (striped ? per_column_in * width : 0);
        per_column = per_column_out + (striped ? 0 : per_column_in);
    }
    // Whether one window column fits.
    bool fits(int tw) const { return avail >= per_column * tw; }
};

StreamPlan plan_stream(const InferOptions& o, const geo::ScenePair& pair, const std::vector<int>& xs,
                       const std::vector<std::pair<int, int>>& own_x, int tw, int th, int batch, double factor) {
    const int width = pair.grid().width;
    const StreamCosts cost(o, pair, tw, th, batch, factor);
    StreamPlan plan;
    plan.window_bytes = cost.window_bytes;
    if (!cost.fits(tw)) {
        const int64_t ram = int64_t(o.ram_mb) * kMB;
        throw ConfigError("--ram " + std::to_string(o.ram_mb) + " MB is too small for windows of " +
                          std::to_string(tw) + "x" + std::to_string(th) + " with batch " + std::to_string(batch) +
                          (cost.striped ? " over a striped input " + std::to_string(width) +
                                              " pixels wide (GDAL decodes whole rows; retile it with gdal_translate -co TILED=YES)"
                                        : "") +
                          ": about " + std::to_string((ram - cost.avail + cost.per_column * tw) / kMB + 1) +
                          " MB are needed");
    }
    const int64_t max_width = cost.avail / cost.per_column;
    // Greedy: as many window columns as fit (a window that gives nothing is never read).
    size_t c = 0;
    while (c < xs.size()) {
        Strip s;
        s.first = c;
        while (c < xs.size() && (c == s.first || xs[c] + tw - xs[s.first] <= max_width)) ++c;
        s.end = c;
        s.x0 = width;
        s.x1 = 0;
        for (size_t k = s.first; k < s.end; ++k)
            if (own_x[k].second > own_x[k].first) {
                s.x0 = std::min(s.x0, own_x[k].first);
                s.x1 = std::max(s.x1, own_x[k].second);
            }
        plan.widest = std::max(plan.widest, xs[s.end - 1] + tw - xs[s.first]);
        plan.strips.push_back(s);
    }
    plan.cache_bytes = std::max<int64_t>(16 * kMB, cost.per_column_in * (cost.striped ? width : plan.widest));
    return plan;
}

// The windows a scene is mapped in.
struct WindowPlan {
    int tile = 0;             // window edge
    int tw = 0, th = 0;       // window width and height: the edge, or the scene's where smaller
    int overlap = 0;          // pixels shared by neighbouring windows
    int batch = 1;            // windows per forward pass
    bool automatic = false;   // edge chosen for this scene (a local model, no --tile-size)
    std::vector<int> xs, ys;  // window offsets per axis
};

// Pixels the model computes for a scene of width x height in windows of `edge`.
int64_t computed_pixels(int width, int height, int edge, int overlap) {
    return int64_t(geo::tile_offsets(width, edge, overlap).size()) * std::min(edge, width) *
           int64_t(geo::tile_offsets(height, edge, overlap).size()) * std::min(edge, height);
}

// --batch-size, or auto: about the pixels of 4 windows of 256 (4 windows up to 256 px, 1
// from 363 px on).
int batch_for(const InferOptions& o, int tw, int th) {
    if (o.batch_size > 0) return o.batch_size;
    return int(std::clamp<int64_t>(kBatchPixels / (int64_t(tw) * th), 1, kMaxAutoBatch));
}

// The window plan. `trained` is the tile size the model was trained at (256 if unknown).
// Overlap: --overlap, or a quarter of the smaller of the window and `trained` (the margin a
// window border needs depends on the model's reach, not on the window). Window: --tile-size,
// or for a local (fully convolutional) model mapping alone, the edge between `trained` and
// kAutoWindow (the scene's longer side, or multiples of 32) whose windows compute the fewest
// pixels of this scene, the larger on ties, and that --ram holds; otherwise `trained` (BIT's tokens
// pool the whole window, Origin-Partition routes windows by their CAR, a TorchScript
// model's reach is unknown).
WindowPlan plan_windows(const InferOptions& o, const geo::ScenePair& pair, int trained, bool local, double factor) {
    const int width = pair.grid().width, height = pair.grid().height;
    WindowPlan w;
    w.tile = o.tile_size > 0 ? o.tile_size : trained;
    w.overlap = o.overlap >= 0 ? o.overlap : std::min(w.tile, trained) / 4;
    if (w.overlap >= w.tile)
        throw ConfigError("overlap " + std::to_string(w.overlap) + " must be smaller than the window " +
                          std::to_string(w.tile));
    if (o.tile_size == 0 && local && kAutoWindow > trained) {
        // Largest first: the scene's longer side when it is within reach (one window row or
        // column), then multiples of 32.
        const int longest = std::max(width, height);
        std::vector<int> edges;
        if (longest <= kAutoWindow && longest > trained) edges.push_back(longest);
        for (int e = kAutoWindow; e > trained; e -= kWindowMultiple)
            if (e < longest) edges.push_back(e);
        edges.push_back(trained);
        int64_t best_cost = std::numeric_limits<int64_t>::max();
        for (int e : edges) {
            const int tw = std::min(e, width), th = std::min(e, height);
            const int64_t cost = computed_pixels(width, height, e, w.overlap);
            if (cost < best_cost && (e == trained || StreamCosts(o, pair, tw, th, batch_for(o, tw, th), factor).fits(tw))) {
                best_cost = cost;
                w.tile = e;
            }
        }
        w.automatic = w.tile != trained;
    }
    w.tw = std::min(w.tile, width);
    w.th = std::min(w.tile, height);
    w.batch = batch_for(o, w.tw, w.th);
    w.xs = geo::tile_offsets(width, w.tile, w.overlap);
    w.ys = geo::tile_offsets(height, w.tile, w.overlap);
    return w;
}

// A scene pair opened for mapping, with each date's normalisation (per-scene
// standardisation folded in).
struct SceneInputs {
    geo::ScenePair pair;
    Normalization norm_pre, norm_post;
    nlohmann::json scene_norm = nullptr;  // the per-scene statistics used, for the summary
};

SceneInputs open_scene(const LoadedModel& m, const geo::SceneSpec& pre, const geo::SceneSpec& post,
                       const InferOptions& o, const RunContext& ctx) {
    SceneInputs in{geo::open_pair(pre, post, "", o.pair, ctx), m.norm, m.norm};
    const int bands = in.pair.pre.band_count();
    nn::check_input(m.bundle.info, bands, GDALGetDataTypeName(in.pair.pre.data_type()), m.path, in.pair.pre.name());
    if (int(m.norm.mean.size()) != bands)
        throw ModelError("model bundle " + quote(m.path) + " normalises " + std::to_string(m.norm.mean.size()) +
                         " bands, scene " + quote(in.pair.pre.name()) + " has " + std::to_string(bands));
    // Per-scene standardisation (a bundle trained with --scene-norm): this pair's own
    // statistics, over the pixels valid in both dates, as cd-tile recorded them for training.
    if (m.norm.scene != "none") {
        const nlohmann::json st = geo::pair_statistics(in.pair, ctx.scaled(0.0, 0.05)).to_json();
        const DateStatistics s_pre = DateStatistics::from_json(st.at("pre")),
                             s_post = DateStatistics::from_json(st.at("post"));
        in.norm_pre = m.norm.for_date(s_pre);
        in.norm_post = m.norm.for_date(s_post);
        in.scene_norm = {{"mode", m.norm.scene},
                         {"pre", {{"mean", s_pre.mean}, {"std", s_pre.std}}},
                         {"post", {{"mean", s_post.mean}, {"std", s_post.std}}}};
        ctx.debug("per-scene standardisation (" + m.norm.scene + "): statistics " + in.scene_norm.dump());
    }
    return in;
}

// The windows of a scene, the pixels each gives the output, and the order they are read in.
struct ScenePlan {
    WindowPlan wp;
    std::vector<std::pair<int, int>> own_x, own_y;  // owned_ranges per axis
    StreamPlan stream;
    std::vector<std::pair<size_t, size_t>> order;   // windows to read: strip by strip, row by row
    int64_t cache_bytes = 0;                        // GDAL's block cache as set
    static bool gives(const std::pair<int, int>& r) { return r.second > r.first; }
};

ScenePlan plan_scene(const LoadedModel& m, const geo::ScenePair& pair, const InferOptions& o, const RunContext& ctx) {
    const geo::Grid& grid = pair.grid();
    int trained = m.bundle.info.tile_size;
    if (trained <= 1) trained = kDefaultTile;
    ScenePlan p;
    const double factor = m.predictor->memory_factor();
    p.wp = plan_windows(o, pair, trained, m.predictor->local(), factor);
    const WindowPlan& wp = p.wp;
    p.own_x = owned_ranges(wp.xs, wp.tw, grid.width);
    p.own_y = owned_ranges(wp.ys, wp.th, grid.height);
    p.stream = plan_stream(o, pair, wp.xs, p.own_x, wp.tw, wp.th, wp.batch, factor);
    // The programs' fixed block cache (32 MB), or GDAL's 5 % of RAM when called as a
    // library, becomes what one row of windows (or strip) needs; GDAL_CACHEMAX still wins.
    p.cache_bytes = geo::set_block_cache(p.stream.cache_bytes);
    for (const Strip& s : p.stream.strips)
        for (size_t r = 0; r < wp.ys.size(); ++r)
            for (size_t c = s.first; c < s.end; ++c)
                if (ScenePlan::gives(p.own_y[r]) && ScenePlan::gives(p.own_x[c])) p.order.emplace_back(r, c);
    const size_t strips = p.stream.strips.size();
    ctx.info("windows " + std::to_string(wp.tw) + "x" + std::to_string(wp.th) +
             (wp.automatic ? " (chosen for this scene; --tile-size sets them)" : "") + ", overlap " +
             std::to_string(wp.overlap) + ", " + std::to_string(p.order.size()) + " windows in " +
             std::to_string(wp.ys.size()) + " rows and " + std::to_string(strips) +
             (strips == 1 ? " column strip" : " column strips") + ", batch " + std::to_string(wp.batch) +
             (o.tta ? ", flip TTA" : "") + ", " + m.device.str() + (o.amp ? " in bfloat16 mixed precision" : "") +
             "; read-ahead " + std::to_string(p.stream.window_bytes / kMB) + " MB, GDAL block cache " +
             std::to_string(p.cache_bytes / kMB) + " MB (--ram " + std::to_string(o.ram_mb) +
             " MB; the model's own memory comes on top)");
    return p;
}

// A scene whose bands do not look like the bundle's training data maps silently badly (a
// model of one sensor on another's scene): warn, naming the bands. check_band_names warns of
// named bands that differ from the bundle's; check_band_statistics of a band "far" from the
// training normalisation: its mean more than 3 training standard deviations from the
// training mean, or its standard deviation below a third or above 3 times the training one,
// from a decimated read (at most 512 pixels a side). Bundles that standardise each scene by
// itself are not checked.
void check_band_names(const LoadedModel& m, const geo::Scene& s, const RunContext& ctx) {
    const auto& trained = m.bundle.info.bands;
    const auto& names = s.band_names();
    if (trained.size() != names.size()) return;
    auto generic = [](const std::string& n, size_t b) {  // "B1", "B2" ...: no description, no file name
        return n == "B" + std::to_string(b + 1);
    };
    std::string renamed;
    for (size_t b = 0; b < names.size(); ++b)
        if (!generic(names[b], b) && !generic(trained[b], b) && !geo::same_band_name(names[b], trained[b]))
            renamed += (renamed.empty() ? "" : ", ") + quote(names[b]) + " where it was trained on " + quote(trained[b]);
    if (!renamed.empty())
        ctx.warn("scene " + quote(s.name()) + ": band " + renamed + " (" + quote(m.path) +
                 "): another product or band order? Its bands must be the training bands, in order");
}

void check_band_statistics(const LoadedModel& m, const geo::Scene& s, const RunContext& ctx) {
    const geo::Grid& g = s.grid();
    const double f = std::max(1.0, std::max(g.width, g.height) / 512.0);
    const int w = std::max(1, static_cast<int>(g.width / f)), h = std::max(1, static_cast<int>(g.height / f));
    const geo::Block blk = s.read_decimated(geo::Window{0, 0, g.width, g.height}, w, h);
    std::vector<geo::BandStatistics> stats(static_cast<size_t>(blk.bands), geo::BandStatistics(blk.type));
    geo::accumulate_block(stats, blk, geo::Window{0, 0, w, h}, blk.valid.data());
    std::string far;
    for (size_t b = 0; b < stats.size() && b < m.norm.mean.size(); ++b) {
        if (stats[b].count() < 16) return;  // too little data to say
        const double mean = stats[b].mean(), sd = stats[b].stddev();
        const double tm = m.norm.mean[b], ts = m.norm.std[b];
        if (std::abs(mean - tm) > 3 * ts || sd < ts / 3 || sd > 3 * ts) {
            char text[160];
            std::snprintf(text, sizeof text, "%s (mean %.4g, std %.4g; training %.4g, %.4g)",
                          quote(s.band_names()[b]).c_str(), mean, sd, tm, ts);
            far += (far.empty() ? "" : ", ") + std::string(text);
        }
    }
    if (!far.empty())
        ctx.warn("scene " + quote(s.name()) + ": bands far from the training data of " + quote(m.path) + ": " + far +
                 ". Another sensor, scaling or band order maps badly; a model trained with --scene-norm band "
                 "(cd-train-teacher) standardises each scene by its own statistics");
}

void check_scene_bands(const LoadedModel& m, const geo::ScenePair& pair, const RunContext& ctx) {
    if (m.norm.scene != "none" || !m.bundle.header.contains("normalization")) return;
    for (const geo::Scene* s : {&pair.pre, &pair.post}) {
        check_band_names(m, *s, ctx);
        check_band_statistics(m, *s, ctx);
    }
}

// The mask and the optional probability raster of a scene, created before any work so that
// a refused output costs nothing. Strips fill the outputs out of block order: staged then,
// so that no compressed block is written twice.
struct SceneOutputs {
    std::unique_ptr<geo::RasterWriter> mask, prob;
};

// What made a map, in its metadata: the model, its architecture and checksum, the threshold.
std::vector<std::pair<std::string, std::string>> model_provenance(const LoadedModel& m) {
    std::vector<std::pair<std::string, std::string>> md = {{"CDK_MODEL", m.path},
                                                           {"CDK_MODEL_ARCH", m.bundle.model->options().arch}};
    if (m.bundle.header.contains("checksum") && m.bundle.header["checksum"].contains("weights"))
        md.push_back({"CDK_MODEL_CRC32", m.bundle.header["checksum"]["weights"].get<std::string>()});
    if (!m.teachers.bundles.empty()) md.push_back({"CDK_MODE", "origin-partition"});
    md.push_back({"CDK_THRESHOLD", format_number(m.threshold)});
    md.push_back({"CDK_THRESHOLD_SOURCE", m.threshold_source});
    return md;
}

SceneOutputs open_outputs(const LoadedModel& m, const std::string& out, const std::string& prob, bool prob_is_scratch,
                          const geo::Grid& grid, size_t strips, const InferOptions& o, bool replace) {
    SceneOutputs w;
    geo::WriteOptions mw = o.write;
    mw.overwrite = mw.overwrite || replace;
    mw.stage = mw.stage || strips > 1;
    const auto md = model_provenance(m);
    mw.metadata.insert(mw.metadata.end(), md.begin(), md.end());
    w.mask = std::make_unique<geo::RasterWriter>(out, grid, 1, GDT_Byte, mw, double(kMaskNodata));
    geo::set_change_colour_table(*w.mask->dataset().GetRasterBand(1));
    w.mask->dataset().GetRasterBand(1)->SetDescription("change");
    if (!prob.empty()) {
        geo::WriteOptions pw = mw;
        if (prob_is_scratch) {  // an intermediate: plain GeoTIFF, replacing a stale one
            pw = geo::WriteOptions{};
            pw.overwrite = true;
        }
        w.prob = std::make_unique<geo::RasterWriter>(prob, grid, 1, GDT_Float32, pw, double(kProbNodata));
        w.prob->dataset().GetRasterBand(1)->SetDescription("change probability");
    }
    return w;
}

// What streaming a scene counted, and where its time went: the model, waiting for the
// reader, waiting for the writer.
struct StreamStats {
    long long changed = 0, valid_pixels = 0, windows_run = 0, windows_skipped = 0;
    double model_s = 0, read_wait_s = 0, write_wait_s = 0;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Streams a scene's windows through the predictor: a reader thread reads and normalises
// windows ahead, the predictor runs them in batches, each window gives the output only the
// pixels it owns (centre cropping), and each finished row of a strip is thresholded and
// written by a writer thread while the model goes on.
class SceneStream {
public:
    SceneStream(LoadedModel& m, const SceneInputs& in, const ScenePlan& plan, SceneOutputs& out,
                const RunContext& ctx)
        : m_(m), in_(in), plan_(plan), out_(out), ctx_(ctx),
          reader_(plan.order, [this](size_t r, size_t c) { return read_window(r, c); }, size_t(2 * plan.wp.batch)) {}

    StreamStats run() {
        for (const Strip& s : plan_.stream.strips) {
            if (s.x1 <= s.x0) continue;
            for (size_t r = 0; r < plan_.wp.ys.size(); ++r)
                if (ScenePlan::gives(plan_.own_y[r])) map_row(s, r);
        }
        wait_writing();
        return stats_;
    }

private:
    // Window (row, col) gives the output rows own_y[row] and columns own_x[col]: read
    // only when those hold data in both dates is it run.
    WindowData read_window(size_t row, size_t col) const {
        const WindowPlan& wp = plan_.wp;
        WindowData w;
        w.row = row;
        w.col = col;
        const geo::Window win{wp.xs[col], wp.ys[row], wp.tw, wp.th};
        const geo::Block a = in_.pair.pre.read(win), b = in_.pair.post.read(win);
        auto va = torch::from_blob(const_cast<uint8_t*>(a.valid.data()), {wp.th, wp.tw}, torch::kUInt8);
        auto vb = torch::from_blob(const_cast<uint8_t*>(b.valid.data()), {wp.th, wp.tw}, torch::kUInt8);
        w.valid = va.logical_and(vb);
        const auto [x0, x1] = plan_.own_x[col];
        const auto [y0, y1] = plan_.own_y[row];
        w.run = w.valid.narrow(0, y0 - win.y, y1 - y0).narrow(1, x0 - win.x, x1 - x0).any().item<bool>();
        if (w.run) {
            w.pre = block_tensor(a, in_.norm_pre);
            w.post = block_tensor(b, in_.norm_post);
        }
        return w;
    }

    // The output rows of window row `r` over strip `s`: windows read in order, run in
    // batches, cropped into the row, then written.
    void map_row(const Strip& s, size_t r) {
        const auto [y0, y1] = plan_.own_y[r];
        const int rh = y1 - y0, sw = s.x1 - s.x0;
        auto acc = torch::zeros({rh, sw}, torch::kFloat32);
        auto valid = torch::zeros({rh, sw}, torch::kBool);
        std::vector<WindowData> batch;
        for (size_t c = s.first; c < s.end; ++c) {
            if (!ScenePlan::gives(plan_.own_x[c])) continue;
            const auto t_read = Clock::now();
            WindowData w = reader_.next();
            stats_.read_wait_s += seconds_since(t_read);
            const auto [x0, x1] = plan_.own_x[c];
            valid.narrow(1, x0 - s.x0, x1 - x0)
                .copy_(w.valid.narrow(0, y0 - plan_.wp.ys[r], rh).narrow(1, x0 - plan_.wp.xs[c], x1 - x0));
            ++windows_done_;
            if (!w.run) {
                ++stats_.windows_skipped;
                continue;
            }
            batch.push_back(std::move(w));
            if (int(batch.size()) == plan_.wp.batch) run_batch(batch, s, r, acc);
        }
        run_batch(batch, s, r, acc);
        write_row(s, y0, acc, valid);
        ctx_.progress(double(windows_done_) / double(std::max<size_t>(plan_.order.size(), 1)), "inference");
    }

    void run_batch(std::vector<WindowData>& batch, const Strip& s, size_t r, torch::Tensor& acc) {
        if (batch.empty()) return;
        const auto t_model = Clock::now();
        std::vector<torch::Tensor> as, bs, vs;
        for (const auto& w : batch) {
            as.push_back(w.pre);
            bs.push_back(w.post);
            vs.push_back(w.valid);
        }
        auto a = torch::stack(as).to(m_.device);
        auto b = torch::stack(bs).to(m_.device);
        if (m_.nhwc) {
            a = a.contiguous(torch::MemoryFormat::ChannelsLast);
            b = b.contiguous(torch::MemoryFormat::ChannelsLast);
        }
        const torch::Tensor p = m_.predictor->predict(a, b, torch::stack(vs));
        // Centre cropping: each window gives only the pixels it owns.
        const auto [y0, y1] = plan_.own_y[r];
        for (size_t k = 0; k < batch.size(); ++k) {
            const size_t col = batch[k].col;
            const auto [x0, x1] = plan_.own_x[col];
            acc.narrow(1, x0 - s.x0, x1 - x0)
                .copy_(p[int64_t(k)].narrow(0, y0 - plan_.wp.ys[r], y1 - y0).narrow(1, x0 - plan_.wp.xs[col], x1 - x0));
        }
        stats_.windows_run += int64_t(batch.size());
        batch.clear();
        stats_.model_s += seconds_since(t_model);
    }

    // Threshold a finished row and hand it to the writer thread (one write at a time, so
    // each output dataset is used by one thread at a time).
    void write_row(const Strip& s, int y0, const torch::Tensor& acc, const torch::Tensor& valid) {
        const auto is_change = (m_.strict ? acc.gt(m_.threshold) : acc.ge(m_.threshold)) & valid;
        auto mask = torch::where(valid, is_change.to(torch::kUInt8), torch::full_like(is_change, kMaskNodata, torch::kUInt8))
                        .contiguous();
        stats_.changed += is_change.sum().item<int64_t>();
        stats_.valid_pixels += valid.sum().item<int64_t>();
        torch::Tensor pr;
        if (out_.prob) pr = torch::where(valid, acc, torch::full_like(acc, kProbNodata)).contiguous();
        wait_writing();
        const geo::Window region{s.x0, y0, s.x1 - s.x0, int(acc.size(0))};
        writing_ = std::async(std::launch::async, [this, region, mask = std::move(mask), pr = std::move(pr)] {
            out_.mask->write(1, region, mask.data_ptr<uint8_t>(), GDT_Byte);
            if (out_.prob) out_.prob->write(1, region, pr.data_ptr<float>(), GDT_Float32);
        });
    }

    void wait_writing() {
        const auto t = Clock::now();
        if (writing_.valid()) writing_.get();
        stats_.write_wait_s += seconds_since(t);
    }

    LoadedModel& m_;
    const SceneInputs& in_;
    const ScenePlan& plan_;
    SceneOutputs& out_;
    const RunContext& ctx_;
    StreamStats stats_;
    size_t windows_done_ = 0;
    std::future<void> writing_;
    WindowReader reader_;  // last: its thread reads through the members above
};

// The JSON summary of a mapped scene.
nlohmann::json scene_summary(const LoadedModel& m, const SceneInputs& in, const ScenePlan& plan,
                             const StreamStats& st, const ScenePaths& paths, const nlohmann::json& polygons,
                             double seconds, const InferOptions& o) {
    const geo::Grid& grid = in.pair.grid();
    const double pixel_m2 = geo::pixel_area_m2(grid);
    const long long total = static_cast<long long>(grid.width) * grid.height;
    return {{"out", paths.out},
            {"prob", paths.prob.empty() ? nlohmann::json(nullptr) : nlohmann::json(paths.prob)},
            {"polygons", polygons},
            {"model", m.path},
            {"arch", m.bundle.model->options().arch},
            {"width", grid.width},
            {"height", grid.height},
            {"valid_pixels", st.valid_pixels},
            {"changed_pixels", st.changed},
            {"car", st.valid_pixels ? double(st.changed) / double(st.valid_pixels) : 0.0},
            {"changed_area_m2", pixel_m2 > 0 ? nlohmann::json(double(st.changed) * pixel_m2) : nlohmann::json(nullptr)},
            {"threshold", m.threshold},
            {"threshold_source", m.threshold_source},
            {"window", plan.wp.tile},
            {"window_automatic", plan.wp.automatic},
            {"overlap", plan.wp.overlap},
            {"batch", plan.wp.batch},
            {"windows", st.windows_run},
            {"windows_skipped", st.windows_skipped},
            {"strips", plan.stream.strips.size()},
            {"ram_mb", o.ram_mb},
            {"device", m.device.str()},
            {"memory_format", m.nhwc ? "channels-last" : "contiguous"},
            {"folded", o.fold},
            {"amp", o.amp},
            {"scene_normalization", in.scene_norm},
            {"seconds", seconds},
            {"megapixels_per_s", seconds > 0 ? double(total) / 1e6 / seconds : 0.0},
            {"seconds_model", st.model_s},
            {"seconds_waiting_for_reads", st.read_wait_s},
            {"seconds_waiting_for_writes", st.write_wait_s},
            {"op", m.predictor->summary()}};
}

// One scene pair through the predictor into its outputs.
nlohmann::json map_scene(LoadedModel& m, const geo::SceneSpec& pre, const geo::SceneSpec& post,
                         const ScenePaths& paths, const InferOptions& o, const RunContext& ctx) {
    // Polygons need the probability: kept in a hidden file beside the mask when not asked for.
    RemoveOnExit scratch;
    std::string prob = paths.prob;
    if (!paths.polygons.empty() && prob.empty()) {
        const fs::path p(paths.out);
        prob = scratch.path = (p.parent_path() / ("." + p.filename().string() + ".prob.tif")).string();
    }
    const auto t_start = Clock::now();
    const SceneInputs in = open_scene(m, pre, post, o, ctx);
    if (!paths.polygons.empty() && o.min_area_m2 > 0 && !in.pair.grid().has_geotransform)
        throw ConfigError("--min-area needs a georeferenced scene; " + quote(in.pair.pre.name()) +
                          " has no pixel size in metres (use --min-area 0)");
    // Progress: the statistics pass is the first 5 %, the windows the rest.
    const RunContext window_ctx = m.norm.scene != "none" ? ctx.scaled(0.05, 1.0) : ctx;
    const ScenePlan plan = plan_scene(m, in.pair, o, ctx);
    if (o.check_bands) check_scene_bands(m, in.pair, ctx);
    if (!paths.quicklook.empty()) geo::quicklook_bands(in.pair.post, o.quicklook.bands);
    SceneOutputs out = open_outputs(m, paths.out, prob, !scratch.path.empty(), in.pair.grid(), plan.stream.strips.size(), o,
                                    paths.redo);
    m.predictor->begin_scene();
    const StreamStats st = SceneStream(m, in, plan, out, window_ctx).run();

    // The mask is published last: it stands for a complete scene (--resume skips a scene
    // whose outputs all exist). The polygons are made from the closed but unpublished mask;
    // a failure at any step leaves none of this scene's outputs behind.
    const std::string mask_file = out.mask->close();
    const std::string prob_file = out.prob ? out.prob->close() : std::string();
    std::vector<std::string> published;
    nlohmann::json polygons = nullptr, quicklook = nullptr;
    try {
        if (!paths.polygons.empty()) {
            geo::PolygonOptions po;
            po.mask = mask_file;
            po.prob = prob_file;
            po.out = paths.polygons;
            po.min_area_m2 = o.min_area_m2;
            po.min_pixels = o.min_pixels;
            po.overwrite = true;  // conflicts were refused before any work
            polygons = geo::polygonize_changes(po, ctx);
            published.push_back(paths.polygons);
        }
        if (!paths.quicklook.empty()) {
            geo::QuicklookOptions q = o.quicklook;
            q.out = paths.quicklook;
            q.overwrite = true;
            quicklook = geo::write_quicklook(in.pair.post, mask_file, q, ctx);
            published.push_back(paths.quicklook);
        }
        geo::write_change_style(paths.out, true);
        published.push_back(geo::style_path_for(paths.out));
        if (out.prob && scratch.path.empty()) {
            out.prob->commit();
            published.push_back(paths.prob);
        }
        out.mask->commit();
    } catch (...) {
        std::error_code ec;
        for (const auto& f : published) fs::remove(f, ec);
        throw;
    }
    if (st.valid_pixels == 0) ctx.warn("scene " + quote(in.pair.pre.name()) + " has no pixel with data in both dates");
    nlohmann::json summary = scene_summary(m, in, plan, st, paths, polygons, seconds_since(t_start), o);
    summary["quicklook"] = quicklook;
    return summary;
}

// An output that exists is part of a finished scene (--resume skips it), of a scene an
// earlier run left incomplete (--resume makes it again) or to be replaced (--overwrite);
// anything else is refused before any work. Every output's folder must be writable.
void check_scene_outputs(ScenePaths& paths, const InferOptions& o, const RunContext& ctx) {
    for (const auto& p : paths.all()) check_output_folder(p);
    if (o.write.overwrite) return;
    const auto have = paths.existing();
    if (have.empty()) return;
    if (o.resume) {
        std::string missing;
        for (const auto& p : paths.all())
            if (!fs::exists(p)) missing += (missing.empty() ? "" : ", ") + quote(p);
        ctx.info("outputs of " + quote(paths.out) + " are incomplete (no " + missing + "): mapping it again (--resume)");
        paths.redo = true;
        return;
    }
    throw ConfigError("output " + quote(have.front()) + " exists (use --overwrite to replace it, or --resume to skip finished scenes)");
}

// One scene of a --pairs run in this shard, and where its outputs go.
struct Planned {
    const geo::PairJob* job;
    ScenePaths paths;
};

// The scenes of `jobs` in this shard, with their outputs in o.out; a scene name that is no
// file name, or one listed twice, is refused (whatever the shard).
std::vector<Planned> plan_pairs(const InferOptions& o, const std::vector<geo::PairJob>& jobs, const Shard& shard) {
    std::set<std::string> names;
    std::vector<Planned> plan;
    const fs::path dir(o.out);
    for (size_t i = 0; i < jobs.size(); ++i) {
        const auto& j = jobs[i];
        if (j.scene.find_first_of("/\\") != std::string::npos || j.scene == "." || j.scene == "..")
            throw ConfigError("pairs file " + quote(o.pairs) + ": scene name " + quote(j.scene) +
                              " cannot be a file name");
        if (!names.insert(j.scene).second)
            throw ConfigError("pairs file " + quote(o.pairs) + " lists scene " + quote(j.scene) + " twice");
        if (!shard.holds(i)) continue;
        ScenePaths paths{(dir / (j.scene + ".tif")).string(),
                         o.with_prob ? (dir / (j.scene + "_prob.tif")).string() : "",
                         o.with_polygons ? (dir / (j.scene + ".gpkg")).string() : "",
                         o.with_quicklook ? (dir / (j.scene + ".png")).string() : ""};
        plan.push_back({&j, std::move(paths)});
    }
    return plan;
}

// Before any work: no output of the plan is (or holds) an input of any scene, the output
// folder exists, and no scene's outputs conflict with files already there (--resume marks
// a scene with some of its outputs missing to be mapped again).
void prepare_pairs_outputs(const InferOptions& o, const std::vector<geo::PairJob>& jobs,
                           std::vector<Planned>& plan, const RunContext& ctx) {
    std::vector<std::pair<std::string, const geo::SceneSpec*>> scenes;
    std::vector<NamedInput> inputs = model_inputs(o);
    for (const auto& j : jobs) {
        scenes.push_back({"scene " + quote(j.scene) + " (pre)", &j.pre});
        scenes.push_back({"scene " + quote(j.scene) + " (post)", &j.post});
        if (!j.label.empty()) inputs.push_back({"scene " + quote(j.scene) + " (label)", j.label});
    }
    std::vector<std::string> outputs;  // the folder may hold inputs: nothing replaces it whole
    for (const auto& p : plan)
        for (const auto& f : p.paths.all()) outputs.push_back(f);
    check_outputs_spare(outputs, inputs, scenes);
    std::error_code ec;
    fs::create_directories(o.out, ec);
    if (ec || !fs::is_directory(o.out))
        throw IoError("cannot create output folder " + quote(o.out) + ": " + ec.message());
    for (auto& p : plan)
        if (!(o.resume && p.paths.finished())) check_scene_outputs(p.paths, o, ctx);
}

}  // namespace

nlohmann::json infer_scene(const InferOptions& o, const RunContext& ctx) {
    validate(o);
    nn::set_threads(o.threads);
    ctx.debug(nn::torch_build_info());
    if (o.pairs.empty()) {
        ScenePaths paths{o.out, o.prob, o.polygons, o.quicklook.out};
        if (o.resume && paths.finished()) {
            ctx.info("outputs of " + quote(o.out) + " exist; skipped (--resume)");
            return skipped(o.out);
        }
        const auto pre = geo::SceneSpec::parse(o.pre, o.band_pattern);
        const auto post = geo::SceneSpec::parse(o.post, o.band_pattern);
        check_outputs_spare(paths.all(), model_inputs(o), {{"--pre", &pre}, {"--post", &post}});
        check_scene_outputs(paths, o, ctx);
        LoadedModel m = load_model(o, ctx);
        return map_scene(m, pre, post, paths, o, ctx);
    }

    const std::vector<geo::PairJob> jobs = geo::read_pairs_csv(o.pairs, o.band_pattern);
    const Shard shard = resolve_shard(o.shard);
    std::vector<Planned> plan = plan_pairs(o, jobs, shard);
    prepare_pairs_outputs(o, jobs, plan, ctx);

    ctx.info(std::to_string(plan.size()) + " of " + std::to_string(jobs.size()) + " scenes in shard " + shard.text());
    LoadedModel m = load_model(o, ctx);
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
