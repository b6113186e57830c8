#include "cdk/pipeline/train.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/metrics.hpp"
#include "cdk/geo/partition.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"

namespace cdk::pipeline {

namespace fs = std::filesystem;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kPolyPower = 0.9;
constexpr double kSgdMomentum = 0.9;
constexpr double kExpGamma = 0.95;  // --schedule exp: x0.95 an epoch (Daudt et al. 2018 on OSCD)
constexpr const char* kCheckpointFormat = "cdkit-checkpoint/1";

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string fmt(double v, int digits = 3) {
    std::ostringstream s;
    s.precision(digits);
    s << v;
    return s.str();
}

// Learning rate of optimizer step `step` (0-based) out of `total` (`total / epochs` per epoch).
double lr_at(const TrainOptions& o, int64_t step, int64_t total) {
    if (step < o.warmup_steps) return o.lr * double(step + 1) / double(o.warmup_steps);
    if (o.schedule == "exp") {  // per epoch, as PyTorch's ExponentialLR stepped once an epoch
        const int64_t per_epoch = std::max<int64_t>(1, total / std::max(1, o.epochs));
        return o.lr * std::pow(kExpGamma, double(step / per_epoch));
    }
    const double span = double(std::max<int64_t>(1, total - o.warmup_steps));
    const double p = std::clamp(double(step - o.warmup_steps) / span, 0.0, 1.0);
    if (o.schedule == "poly") return o.lr * std::pow(1.0 - p, kPolyPower);
    if (o.schedule == "cosine") return o.lr * 0.5 * (1.0 + std::cos(kPi * p));
    return o.lr;
}

// Loader seed of an epoch: shuffling and augmentation differ per epoch, and depend only
// on (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
uint64_t epoch_seed(uint64_t seed, int epoch) {
    uint64_t x = seed ^ (0x9e3779b97f4a7c15ULL * uint64_t(epoch + 1));
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

std::string folder_of(const std::string& path) {
    const auto p = fs::path(path).parent_path();
    return p.empty() ? std::string(".") : p.string();
}

// What the training header records about a manifest: path, tiles, mean CAR and, for a
// cd-partition manifest, its partition and the thresholds from summary.json beside it.
nlohmann::json manifest_summary(const std::string& manifest, const TileDataset& ds) {
    double car_sum = 0;
    long long labelled = 0;
    for (const auto& r : ds.records())
        if (r.car >= 0) {
            car_sum += r.car;
            ++labelled;
        }
    nlohmann::json j = {{"manifest", manifest},
                        {"tiles", ds.size()},
                        {"labelled_tiles", labelled},
                        {"mean_car", labelled ? nlohmann::json(car_sum / double(labelled)) : nlohmann::json(nullptr)},
                        {"partition", nullptr}};
    const CsvTable& t = ds.table();
    const int col = t.column("partition");
    const std::string summary_path = (fs::path(folder_of(manifest)) / "summary.json").string();
    if (col < 0 && !fs::exists(summary_path)) return j;
    nlohmann::json p = nlohmann::json::object();
    if (col >= 0) {
        std::set<std::string> names;
        for (const auto& row : t.rows) names.insert(row[col]);
        // One partition's file (small.csv) or the union of several (origin.csv, val.csv).
        p["name"] = names.size() == 1 ? *names.begin() : fs::path(manifest).stem().string();
        p["partitions"] = std::vector<std::string>(names.begin(), names.end());
    }
    if (fs::exists(summary_path)) {
        try {
            std::ifstream in(summary_path);
            const auto s = nlohmann::json::parse(in);
            for (const char* key : {"format", "mode", "quantiles", "thresholds", "seed", "val_fraction"})
                if (s.contains(key)) p[key] = s[key];
            p["summary"] = summary_path;
            // The file's role in the partitioning: origin.csv, val.csv or one partition's file.
            const std::string file = fs::path(manifest).filename().string();
            if (s.contains("files") && s["files"].is_object())
                for (const char* role : {"origin", "val"})
                    if (s["files"].value(role, "") == file) p["name"] = role;
            if (s.contains("partitions") && s["partitions"].is_array())
                for (const auto& part : s["partitions"])
                    if (part.value("file", "") == file) p["name"] = part.value("name", "");
        } catch (const nlohmann::json::exception&) {
            // Not a cd-partition summary: the partition column alone describes the set.
        }
    }
    j["partition"] = p;
    return j;
}

// The thresholds on the change probability that validation scores besides argmax (0.5):
// a coarse grid, so that the chosen one does not fit the validation tiles' noise.
std::vector<double> threshold_grid() {
    std::vector<double> t;
    for (int i = 1; i <= 19; ++i) t.push_back(0.05 * i);
    return t;
}

struct ValidationResult {
    Confusion confusion;
    Metrics metrics;
    double loss = 0;
    std::vector<Confusion> by_threshold;  // one per threshold_grid() entry
};

// The grid threshold with the highest change-class F1 (the lowest on ties):
// {"threshold", "f1", "precision", "recall"}.
nlohmann::json best_threshold(const ValidationResult& v) {
    if (v.by_threshold.empty()) return nullptr;
    const auto grid = threshold_grid();
    size_t best = 0;
    double best_f1 = -1;
    for (size_t i = 0; i < v.by_threshold.size(); ++i) {
        const double f1 = compute_metrics(v.by_threshold[i]).change.f1;
        if (f1 > best_f1 + 1e-12) best_f1 = f1, best = i;
    }
    const auto m = compute_metrics(v.by_threshold[best]).change;
    return {{"threshold", std::round(grid[best] * 100) / 100},
            {"f1", m.f1},
            {"precision", m.precision},
            {"recall", m.recall}};
}

ValidationResult validate_model(nn::ChangeModelImpl& model, const TileDataset& data,
                                const TrainOptions& o, const torch::Device& device) {
    torch::NoGradGuard no_grad;
    model.eval();
    ValidationResult v;
    const auto grid = threshold_grid();
    v.by_threshold.assign(grid.size(), Confusion{});
    double loss_sum = 0;
    size_t n = 0;
    BatchLoader loader(data, o.batch_size, false, std::nullopt, 0, o.workers);
    while (auto b = loader.next()) {
        const auto label = b->label.to(device);
        const auto out = model.forward(b->pre.to(device), b->post.to(device));
        v.confusion += nn::confusion_from_logits(out.logits, label);
        const auto at = nn::confusion_at_thresholds(out.logits, label, grid);
        for (size_t i = 0; i < at.size(); ++i) v.by_threshold[i] += at[i];
        loss_sum += nn::segmentation_loss(out.logits, label, o.loss).item<double>() * double(b->ids.size());
        n += b->ids.size();
    }
    v.metrics = compute_metrics(v.confusion);
    v.loss = n ? loss_sum / double(n) : 0;
    return v;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(nn::ChangeModelImpl& model, const TrainOptions& o) {
    if (o.optimizer == "sgd")
        return std::make_unique<torch::optim::SGD>(
            model.parameters(),
            torch::optim::SGDOptions(o.lr).momentum(kSgdMomentum).weight_decay(o.weight_decay));
    if (o.optimizer == "adam")  // weight decay as an L2 term in the gradient, as torch.optim.Adam
        return std::make_unique<torch::optim::Adam>(
            model.parameters(), torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
    return std::make_unique<torch::optim::AdamW>(
        model.parameters(), torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
}

// The decay of the weight average's update after `updates` earlier updates: the set decay,
// but lower at first, so that the random initial weights fade out within the first steps.
double ema_decay_at(double decay, int64_t updates) {
    return std::min(decay, (1.0 + double(updates)) / (10.0 + double(updates)));
}

// avg = d * avg + (1 - d) * live over the parameters and floating-point buffers (batch-norm
// running statistics); integer buffers (batch counts) are copied. d = 0 copies everything.
void average_into(torch::nn::Module& avg, torch::nn::Module& live, double d) {
    torch::NoGradGuard no_grad;
    const auto ap = avg.parameters(), lp = live.parameters();
    for (size_t i = 0; i < ap.size(); ++i) ap[i].mul_(d).add_(lp[i], 1.0 - d);
    const auto ab = avg.buffers(), lb = live.buffers();
    for (size_t i = 0; i < ab.size(); ++i) {
        if (d > 0 && ab[i].is_floating_point())
            ab[i].mul_(d).add_(lb[i], 1.0 - d);
        else
            ab[i].copy_(lb[i]);
    }
}

// State of the CPU generator (dropout, initialisation), and setting it back.
torch::Tensor cpu_rng_state() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
}

void set_cpu_rng_state(const torch::Tensor& state) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
}

// What a checkpoint holds besides weights and optimizer state.
struct Progress {
    int epochs_done = 0;      // finished epochs
    int64_t step = 0;         // optimizer steps taken
    double best_f1 = -1;      // best change-class F1 so far (-1 = none yet)
    int best_epoch = 0;       // 1-based epoch of the best bundle
    double seconds = 0;       // epoch seconds (training + validation) over every session
    double train_seconds = 0;  // training seconds only, for samples/s
    int64_t samples = 0;      // training samples seen
    std::vector<int> resumed;  // epochs after which the run was resumed
};

void save_checkpoint(const std::string& path, nn::ChangeModelImpl& model,
                     torch::optim::Optimizer& optimizer, nn::ChangeModelImpl* average, const Progress& p,
                     const nlohmann::json& meta) {
    torch::serialize::OutputArchive archive;
    torch::serialize::OutputArchive model_archive, optimizer_archive;
    model.save(model_archive);
    optimizer.save(optimizer_archive);
    archive.write("model", model_archive);
    archive.write("optimizer", optimizer_archive);
    if (average) {
        torch::serialize::OutputArchive average_archive;
        average->save(average_archive);
        archive.write("ema", average_archive);
    }
    nlohmann::json m = meta;
    m["format"] = kCheckpointFormat;
    m["epochs_done"] = p.epochs_done;
    m["step"] = p.step;
    m["best_f1"] = p.best_f1;
    m["best_epoch"] = p.best_epoch;
    m["seconds"] = p.seconds;
    m["train_seconds"] = p.train_seconds;
    m["samples"] = p.samples;
    m["resumed"] = p.resumed;
    archive.write("meta", c10::IValue(m.dump()));
    // The CPU generator drives dropout and initialisation: restoring it makes a resumed run
    // match an uninterrupted one.
    archive.write("cpu_rng", cpu_rng_state());
    AtomicPath out(path, true);
    try {
        archive.save_to(out.temp());
    } catch (const c10::Error& e) {
        throw IoError("cannot write checkpoint " + quote(path) + ": " + e.what_without_backtrace());
    }
    out.commit();
}

nlohmann::json read_checkpoint_meta(torch::serialize::InputArchive& archive, const std::string& path) {
    c10::IValue v;
    if (!archive.try_read("meta", v) || !v.isString())
        throw ModelError("checkpoint " + quote(path) + " has no metadata; it was not written by cdkit");
    auto m = nlohmann::json::parse(v.toStringRef(), nullptr, false);
    if (m.is_discarded() || m.value("format", "") != kCheckpointFormat)
        throw ModelError("checkpoint " + quote(path) + " has an unknown format");
    return m;
}

void append_line(const std::string& path, const std::string& line) {
    std::ofstream f(path, std::ios::app);
    f << line << '\n';
    f.flush();
    if (!f) throw IoError("cannot write " + quote(path));
}

// Keep only the log lines of epochs a checkpoint covers (a stopped run may have logged a
// partial epoch that the resumed run does again).
void truncate_log(const std::string& path, int epochs_done) {
    std::ifstream in(path);
    if (!in) return;
    std::string kept, line;
    while (std::getline(in, line)) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.value("epoch", 0) <= epochs_done && !j.value("partial", false))
            kept += line + "\n";
    }
    in.close();
    write_text_file(path, kept, true);
}

}  // namespace

void validate(const TrainOptions& o) {
    if (o.train.empty()) throw ConfigError("a training manifest is required (--train)");
    if (o.out.empty()) throw ConfigError("an output bundle is required (--out)");
    if (!o.save_last.empty() && fs::absolute(o.save_last).lexically_normal() == fs::absolute(o.out).lexically_normal())
        throw ConfigError("--save-last " + quote(o.save_last) + " is the output bundle itself; give it another name");
    if (o.epochs < 1) throw ConfigError("epochs must be at least 1, not " + std::to_string(o.epochs));
    if (o.batch_size < 1)
        throw ConfigError("batch size must be at least 1, not " + std::to_string(o.batch_size));
    if (!(o.lr > 0) || !std::isfinite(o.lr)) throw ConfigError("learning rate must be positive, not " + fmt(o.lr));
    if (!(o.weight_decay >= 0)) throw ConfigError("weight decay must be >= 0, not " + fmt(o.weight_decay));
    if (o.optimizer != "adamw" && o.optimizer != "adam" && o.optimizer != "sgd")
        throw ConfigError("unknown optimizer " + quote(o.optimizer) + " (known: adamw, adam, sgd)");
    if (o.schedule != "constant" && o.schedule != "poly" && o.schedule != "cosine" && o.schedule != "exp")
        throw ConfigError("unknown schedule " + quote(o.schedule) + " (known: constant, poly, cosine, exp)");
    if (o.warmup_steps < 0) throw ConfigError("warm-up steps must be >= 0");
    if (!(o.ema >= 0 && o.ema < 1))
        throw ConfigError("the weight average's decay (--ema) must be in [0, 1), not " + fmt(o.ema));
    nn::validate_memory_format(o.memory_format);
    if (o.augment.crop < 0) throw ConfigError("crop must be >= 0");
    if (o.workers < 0) throw ConfigError("workers must be >= 0");
    if (o.threads < 0) throw ConfigError("threads must be >= 0");
    if (o.max_steps < 0) throw ConfigError("max steps must be >= 0");
    if (!o.scene_norm.empty()) validate_scene_normalization(o.scene_norm);
    if (!o.loss.class_weights.empty() && o.loss.class_weights.size() != 2)
        throw ConfigError("class weights take two values (no change, change), not " +
                          std::to_string(o.loss.class_weights.size()));
    for (double w : o.loss.class_weights)
        if (!(w >= 0)) throw ConfigError("class weights must be >= 0");
    if (!(o.loss.dice_weight >= 0) || !(o.loss.ce_weight >= 0))
        throw ConfigError("loss weights must be >= 0");
    if (o.loss.dice_weight == 0 && o.loss.ce_weight == 0)
        throw ConfigError("the cross-entropy and Dice weights cannot both be 0");
}

nlohmann::json train_model(const TrainOptions& o, const RunContext& ctx, const ExtraLoss& extra) {
    validate(o);
    const auto t_start = Clock::now();
    const std::string ckpt = o.out + ".ckpt", log = o.out + ".log.jsonl";
    const std::string out_dir = folder_of(o.out);
    if (!fs::is_directory(out_dir)) throw IoError("output folder " + quote(out_dir) + " does not exist");
    if (!o.save_last.empty() && !fs::is_directory(folder_of(o.save_last)))
        throw IoError("output folder " + quote(folder_of(o.save_last)) + " of --save-last does not exist");
    const bool have_ckpt = fs::exists(ckpt);
    if (o.resume && !have_ckpt && fs::exists(o.out)) {
        nlohmann::json h = nn::read_bundle_header(o.out);
        const nlohmann::json training = h.value("training", nlohmann::json());
        // A bundle without a checkpoint is a finished run, unless --max-steps stopped it
        // inside its first epoch (checkpoints are written at epoch ends): that one restarts.
        if (!training.is_object() || training.value("complete", true)) {
            // Nothing left to do: the run finished earlier (how --resume skips finished jobs).
            ctx.info("training of " + quote(o.out) + " already finished; nothing to resume");
            return {{"out", o.out}, {"skipped", true}, {"complete", true}, {"training", training},
                    {"metrics", h.value("metrics", nlohmann::json())}};
        }
        ctx.info("training of " + quote(o.out) + " stopped inside its first epoch, before any checkpoint; starting afresh");
    }
    if (!o.resume && !o.overwrite) {
        for (const std::string& path : {o.out, o.save_last})
            if (!path.empty() && fs::exists(path))
                throw ConfigError("output " + quote(path) +
                                  " exists (use --overwrite to replace it, or --resume to continue its training)");
        if (have_ckpt)
            throw ConfigError("checkpoint " + quote(ckpt) +
                              " of an interrupted run exists (use --resume to continue it, or --overwrite to start again)");
    }
    const bool resuming = o.resume && have_ckpt;
    if (o.resume && !have_ckpt) ctx.info("no checkpoint " + quote(ckpt) + " to resume from; starting afresh");

    // Data.
    const nlohmann::json dataset_json = find_dataset_json(o.train);
    std::string scene_norm = o.scene_norm;
    if (scene_norm.empty()) scene_norm = o.init.empty() ? "none" : Normalization::scene_of(nn::read_bundle_header(o.init));
    // Per-scene standardisation leaves values of mean 0 and deviation 1: nothing more to do.
    const Normalization norm = scene_norm == "none"
                                   ? Normalization::from_dataset_json(dataset_json)
                                   : Normalization::standardised(dataset_json.value("bands", 0), scene_norm);
    TileDataset train(o.train, norm);
    if (train.size() == 0) throw ConfigError("training manifest " + quote(o.train) + " has no tiles");
    for (const auto& r : train.records())
        if (r.label.empty())
            throw ConfigError("training manifest " + quote(o.train) + ": tile " + quote(r.id) + " has no label");
    std::optional<TileDataset> val;
    if (!o.val.empty()) {
        val.emplace(o.val, norm);
        const auto val_json = find_dataset_json(o.val);
        const int val_bands = val_json.value("bands", val.value().bands());
        if (val_bands != train.bands())
            throw ConfigError("validation manifest " + quote(o.val) + " has " + std::to_string(val_bands) +
                              " bands, training manifest " + quote(o.train) + " has " +
                              std::to_string(train.bands()));
        if (val->size() == 0) throw ConfigError("validation manifest " + quote(o.val) + " has no tiles");
    }
    // Validation tiles cut from the same pixels as training tiles (a drawn split of tiles
    // with overlap) make the validation F1, the best epoch and the threshold flatter: warned
    // once the inputs are known to be good, and recorded in the bundle.
    const nlohmann::json val_overlap =
        val ? geo::tile_overlap(train.table(), val->table()) : nlohmann::json(nullptr);
    const int bands = train.bands();
    std::vector<std::string> band_names;
    if (dataset_json.contains("band_names") && dataset_json["band_names"].is_array())
        band_names = dataset_json["band_names"].get<std::vector<std::string>>();
    if (int(band_names.size()) != bands) {
        band_names.clear();
        for (int b = 1; b <= bands; ++b) band_names.push_back("B" + std::to_string(b));
    }

    // Device, seed, threads: set before the model exists so initialisation is seeded.
    const torch::Device device = nn::parse_device(o.device);
    if (o.amp) nn::check_amp(device, "--amp", ctx);
    nn::set_threads(o.threads);
    torch::manual_seed(o.seed);

    // Model.
    Progress prog;
    nlohmann::json meta;
    nn::ModelOptions mo = o.model;
    mo.in_bands = bands;
    std::optional<torch::serialize::InputArchive> ckpt_archive;
    nn::ChangeModel model;
    if (resuming) {
        ckpt_archive.emplace();
        try {
            ckpt_archive->load_from(ckpt, device);
        } catch (const c10::Error& e) {
            throw ModelError("cannot read checkpoint " + quote(ckpt) + ": " + e.what_without_backtrace());
        }
        meta = read_checkpoint_meta(*ckpt_archive, ckpt);
        mo = nn::model_options_from_json(meta.at("model"));
        if (mo.in_bands != bands)
            throw ModelError("checkpoint " + quote(ckpt) + " expects " + std::to_string(mo.in_bands) +
                             " bands, training manifest " + quote(o.train) + " has " + std::to_string(bands));
        model = nn::create_model(mo);
    } else if (!o.init.empty()) {
        nn::Bundle b = nn::load_bundle(o.init, device);
        const nn::ModelOptions io = b.model->options();
        if (io.arch != o.model.arch)
            throw ModelError("bundle " + quote(o.init) + " holds architecture " + quote(io.arch) + ", training asks for " +
                             quote(o.model.arch));
        if (io.in_bands != bands)
            throw ModelError("bundle " + quote(o.init) + " expects " + std::to_string(io.in_bands) +
                             " bands, training manifest " + quote(o.train) + " has " + std::to_string(bands));
        model = b.model;
        mo = io;
    } else {
        model = nn::create_model(mo);
    }
    model->to(device);
    const bool nhwc = nn::use_channels_last(o.memory_format, device, mo.width);
    if (nhwc) nn::to_channels_last(*model);
    auto optimizer = make_optimizer(*model, o);
    // The weight average (--ema): a second model of the same architecture. Building it must
    // not draw from the generator, so that the training itself is the same with and without it.
    nn::ChangeModel average;
    if (o.ema > 0) {
        const torch::Tensor state = cpu_rng_state();
        average = nn::create_model(mo);
        set_cpu_rng_state(state);
        average->to(device);
        if (nhwc) nn::to_channels_last(*average);
        average_into(*average, *model, 0);
        average->eval();
    }
    if (resuming) {
        const double ckpt_ema = meta.value("ema", 0.0);
        if (ckpt_ema != o.ema)
            throw ConfigError("checkpoint " + quote(ckpt) + " was written with --ema " + fmt(ckpt_ema, 6) +
                              ", this run asks for --ema " + fmt(o.ema, 6) + "; resume with the same options");
        torch::serialize::InputArchive ma, oa;
        ckpt_archive->read("model", ma);
        ckpt_archive->read("optimizer", oa);
        model->load(ma);
        optimizer->load(oa);
        if (average) {
            torch::serialize::InputArchive ea;
            if (!ckpt_archive->try_read("ema", ea))
                throw ModelError("checkpoint " + quote(ckpt) + " has no weight average although it was written with --ema");
            average->load(ea);
        }
        torch::Tensor state;
        if (ckpt_archive->try_read("cpu_rng", state)) set_cpu_rng_state(state);
        prog.epochs_done = meta.at("epochs_done").get<int>();
        prog.step = meta.at("step").get<int64_t>();
        prog.best_f1 = meta.at("best_f1").get<double>();
        prog.best_epoch = meta.at("best_epoch").get<int>();
        prog.seconds = meta.at("seconds").get<double>();
        prog.train_seconds = meta.at("train_seconds").get<double>();
        prog.samples = meta.at("samples").get<int64_t>();
        prog.resumed = meta.at("resumed").get<std::vector<int>>();
        prog.resumed.push_back(prog.epochs_done);
        truncate_log(log, prog.epochs_done);
        ctx.info("resuming " + quote(o.out) + " after epoch " + std::to_string(prog.epochs_done) + " (step " +
                 std::to_string(prog.step) + ")");
    } else {
        fs::remove(log);
        fs::remove(ckpt);
    }
    meta = {{"model", nn::to_json(mo)}, {"train", o.train}, {"val", o.val}, {"seed", o.seed}, {"ema", o.ema}};
    ckpt_archive.reset();

    const size_t steps_per_epoch = (train.size() + size_t(o.batch_size) - 1) / size_t(o.batch_size);
    const int64_t total_steps = int64_t(steps_per_epoch) * o.epochs;
    std::optional<AugmentOptions> augment = o.augment;
    if (!augment->flips && !augment->rot90 && !augment->swap_dates && augment->crop == 0) augment.reset();

    nlohmann::json header = {
        {"bands", band_names},
        {"data_type", dataset_json.value("data_type", "Float32")},
        {"nodata", dataset_json.contains("nodata") ? dataset_json["nodata"] : nlohmann::json(nullptr)},
        {"normalization", norm.to_json()},
        {"tile_size", dataset_json.value("tile_size", 0)},
        {"overlap", dataset_json.value("overlap", 0)},
    };
    if (o.header_extra.is_object())
        for (const auto& [key, value] : o.header_extra.items()) header[key] = value;
    nlohmann::json training = {
        {"train", manifest_summary(o.train, train)},
        {"val", val ? manifest_summary(o.val, *val) : nlohmann::json(nullptr)},
        {"val_overlap", val_overlap},
        {"epochs", o.epochs},
        {"batch_size", o.batch_size},
        {"optimizer", o.optimizer},
        {"lr", o.lr},
        {"weight_decay", o.weight_decay},
        {"schedule", o.schedule},
        {"warmup_steps", o.warmup_steps},
        {"ema", o.ema},
        {"augment",
         {{"flips", o.augment.flips}, {"rot90", o.augment.rot90}, {"swap_dates", o.augment.swap_dates},
          {"crop", o.augment.crop}}},
        {"loss",
         {{"ce_weight", o.loss.ce_weight}, {"dice_weight", o.loss.dice_weight},
          {"class_weights", o.loss.class_weights}}},
        {"init", o.init.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.init)},
        {"seed", o.seed},
        {"device", device.str()},
        {"memory_format", nhwc ? "channels-last" : "contiguous"},
        {"amp", o.amp},
        {"max_steps", o.max_steps},
    };
    const int64_t params = nn::parameter_count(*model);
    if (const std::string w = geo::overlap_warning(val_overlap, o.val); !w.empty()) ctx.warn(w);
    ctx.info("training " + mo.arch + " (width " + std::to_string(mo.width) + ", " + std::to_string(params) +
             " parameters) on " + std::to_string(train.size()) + " tiles, " + std::to_string(bands) +
             " bands, " + device.str() + (o.amp ? " in bfloat16 mixed precision" : "") +
             (val ? ", validating on " + std::to_string(val->size()) + " tiles" : "") +
             (average ? std::string(val ? ", " : ", keeping ") + "an average of the weights (decay " + fmt(o.ema, 6) + ")" : ""));

    auto header_for = [&](const nlohmann::json& metrics, bool complete) {
        nlohmann::json h = header;
        nlohmann::json t = training;
        t["epochs_completed"] = prog.epochs_done;
        t["best_epoch"] = prog.best_epoch;
        t["steps"] = prog.step;
        t["samples"] = prog.samples;
        t["seconds"] = prog.seconds;
        t["complete"] = complete;
        t["resumed_after_epochs"] = prog.resumed;
        h["training"] = t;
        h["metrics"] = metrics;
        return h;
    };

    nlohmann::json best_metrics = nullptr;
    bool stopped = false;  // max_steps reached
    for (int epoch = prog.epochs_done; epoch < o.epochs && !stopped; ++epoch) {
        const auto t_epoch = Clock::now();
        model->train();
        BatchLoader loader(train, o.batch_size, true, augment, epoch_seed(o.seed, epoch), o.workers);
        double loss_sum = 0, extra_sum = 0, lr = o.lr;
        int64_t samples = 0, steps = 0;
        while (auto cpu = loader.next()) {
            lr = lr_at(o, prog.step, total_steps);
            for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
            Batch b{cpu->pre.to(device), cpu->post.to(device), cpu->label.to(device), cpu->car, cpu->ids};
            if (nhwc) {
                b.pre = b.pre.contiguous(torch::MemoryFormat::ChannelsLast);
                b.post = b.post.contiguous(torch::MemoryFormat::ChannelsLast);
            }
            nn::ChangeOutput out;
            {
                nn::AutocastGuard autocast(o.amp, device);
                out = model->forward(b.pre, b.post);
            }
            if (o.amp) out.logits = out.logits.to(torch::kFloat32);  // losses in float32
            torch::Tensor loss = nn::segmentation_loss(out.logits, b.label, o.loss);
            if (extra) {
                const torch::Tensor e = extra(b, out);
                extra_sum += e.item<double>() * double(b.ids.size());
                loss = loss + e;
            }
            optimizer->zero_grad();
            loss.backward();
            optimizer->step();
            if (average) average_into(*average, *model, ema_decay_at(o.ema, prog.step));
            const double l = loss.item<double>();
            if (!std::isfinite(l))
                throw Error("training diverged at step " + std::to_string(prog.step + 1) + " (loss " + fmt(l) +
                            "); lower --lr");
            const auto n = int64_t(b.ids.size());
            loss_sum += l * double(n);
            samples += n;
            ++steps;
            ++prog.step;
            ctx.progress(double(prog.step) / double(total_steps), "training");
            if (o.max_steps > 0 && prog.step >= o.max_steps) {
                stopped = true;
                break;
            }
        }
        const double train_seconds = seconds_since(t_epoch);
        const bool partial = size_t(steps) < steps_per_epoch;
        prog.samples += samples;
        prog.train_seconds += train_seconds;

        // With --ema the average is what is validated and kept; the live weights are
        // validated too, for the log.
        nn::ChangeModelImpl& kept = average ? *average : *model;
        nlohmann::json val_json = nullptr, live_json = nullptr;
        double f1 = -1;
        auto score = [&](nn::ChangeModelImpl& m) {
            const ValidationResult v = validate_model(m, *val, o, device);
            nlohmann::json j = to_json(v.metrics);
            j["loss"] = v.loss;
            j["confusion"] = to_json(v.confusion);
            j["best_threshold"] = best_threshold(v);
            return std::make_pair(v.metrics.change.f1, j);
        };
        if (val) {
            std::tie(f1, val_json) = score(kept);
            if (average) live_json = score(*model).second;
        }
        const double epoch_seconds = seconds_since(t_epoch);
        prog.seconds += epoch_seconds;
        if (!partial) prog.epochs_done = epoch + 1;
        // Without validation the latest weights are kept.
        const bool is_best = !val || f1 > prog.best_f1;
        if (is_best) {
            prog.best_f1 = f1;
            prog.best_epoch = epoch + 1;
            best_metrics = val_json;
            if (!best_metrics.is_null()) best_metrics["epoch"] = epoch + 1;
            kept.eval();
            nn::save_bundle(o.out, kept, header_for(best_metrics, false), true);
        }
        // --save-last: the weights of this epoch whatever their score, for a fixed-length
        // schedule or when the validation set is too small to choose an epoch by.
        if (!o.save_last.empty() && !partial) {
            nlohmann::json last_metrics = val_json;
            if (!last_metrics.is_null()) last_metrics["epoch"] = epoch + 1;
            kept.eval();
            nn::save_bundle(o.save_last, kept, header_for(last_metrics, prog.epochs_done >= o.epochs), true);
        }
        const double train_loss = samples ? loss_sum / double(samples) : 0;
        const double sps = train_seconds > 0 ? double(samples) / train_seconds : 0;
        nlohmann::json line = {{"epoch", epoch + 1},
                               {"steps", prog.step},
                               {"train_loss", train_loss},
                               {"val", val_json},
                               {"lr", lr},
                               {"seconds", epoch_seconds},
                               {"train_seconds", train_seconds},
                               {"samples", samples},
                               {"samples_per_s", sps},
                               {"best", is_best}};
        if (extra) line["extra_loss"] = samples ? extra_sum / double(samples) : 0.0;
        if (!live_json.is_null()) line["val_live"] = live_json;
        if (partial) line["partial"] = true;
        append_line(log, line.dump());
        ctx.info("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs) + (partial ? " (partial)" : "") +
                 ": loss " + fmt(train_loss, 4) +
                 (val ? ", val F1 " + fmt(f1, 4) +
                            (average ? " averaged, " + fmt(live_json["change"]["f1"].get<double>(), 4) + " live" : "") +
                            " (best " + fmt(prog.best_f1, 4) + " at epoch " + std::to_string(prog.best_epoch) + ")"
                      : std::string()) +
                 ", " + fmt(epoch_seconds, 3) + " s, " + fmt(sps, 3) + " samples/s");
        if (!partial) save_checkpoint(ckpt, *model, *optimizer, average.get(), prog, meta);
    }

    const bool complete = prog.epochs_done >= o.epochs;
    // Rewrite the best bundle's header with the run's final state (epochs, steps, resumes).
    {
        nn::Bundle best = nn::load_bundle(o.out, torch::kCPU);
        nlohmann::json metrics = best.header.value("metrics", nlohmann::json(nullptr));
        nn::save_bundle(o.out, *best.model, header_for(metrics, complete), true);
        best_metrics = metrics;
    }
    if (complete) fs::remove(ckpt);
    const bool have_ckpt_now = fs::exists(ckpt);
    if (!complete)
        ctx.info("stopped after " + std::to_string(prog.step) + " steps (--max-steps); " +
                 (have_ckpt_now ? std::string("continue with --resume")
                                : std::string("inside the first epoch, before any checkpoint: --resume starts again")));

    const double sps = prog.train_seconds > 0 ? double(prog.samples) / prog.train_seconds : 0;
    return {{"out", o.out},
            {"log", log},
            {"checkpoint", have_ckpt_now ? nlohmann::json(ckpt) : nlohmann::json(nullptr)},
            {"last", o.save_last.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.save_last)},
            {"complete", complete},
            {"arch", mo.arch},
            {"width", mo.width},
            {"parameters", params},
            {"bands", bands},
            {"device", device.str()},
            {"train_tiles", train.size()},
            {"val_tiles", val ? val->size() : 0},
            {"epochs", o.epochs},
            {"epochs_completed", prog.epochs_done},
            {"steps", prog.step},
            {"ema", o.ema},
            {"best_epoch", prog.best_epoch},
            {"metrics", best_metrics},
            {"resumed_after_epochs", prog.resumed},
            {"seconds", seconds_since(t_start)},
            {"training_seconds", prog.seconds},
            {"samples_per_s", sps}};
}

}  // namespace cdk::pipeline
