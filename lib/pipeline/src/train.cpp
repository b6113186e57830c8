#include "cdk/pipeline/train.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/metrics.hpp"
#include "cdk/geo/degrade.hpp"
#include "cdk/geo/partition.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"
#include "cdk/nn/objective.hpp"
#include "cdk/pipeline/curves.hpp"

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

// Image-level validation (methods that learn from image-level labels): the model's image
// logits against the tiles' `changed` labels. {"image": {"accuracy", "precision", "recall",
// "f1", "tiles", "changed"}}; the accuracy chooses the best epoch.
std::pair<double, nlohmann::json> validate_image(nn::ChangeModelImpl& model, const TileDataset& data,
                                                 const TrainOptions& o, const torch::Device& device) {
    torch::NoGradGuard no_grad;
    model.eval();
    int64_t tp = 0, fp = 0, fn = 0, tn = 0;
    BatchLoader loader(data, o.batch_size, false, std::nullopt, 0, o.workers);
    while (auto b = loader.next()) {
        const auto out = model.forward(b->pre.to(device), b->post.to(device));
        if (!out.image_logits.defined())
            throw ConfigError("model " + quote(model.options().arch) + " has no image-level output to validate");
        const auto logits = out.image_logits.to(torch::kCPU).to(torch::kFloat32);
        for (size_t i = 0; i < b->ids.size(); ++i) {
            if (b->changed[i] < 0)
                throw ConfigError("validation tile " + quote(b->ids[i]) + " has no image-level label (`changed`)");
            const bool p = logits[int64_t(i)].item<float>() >= 0, y = b->changed[i] > 0;
            (p ? (y ? tp : fp) : (y ? fn : tn)) += 1;
        }
    }
    const double n = double(tp + fp + fn + tn);
    const double acc = n > 0 ? double(tp + tn) / n : 0;
    const double prec = tp + fp > 0 ? double(tp) / double(tp + fp) : 0;
    const double rec = tp + fn > 0 ? double(tp) / double(tp + fn) : 0;
    const double f1 = prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0;
    return {acc, {{"image", {{"accuracy", acc}, {"precision", prec}, {"recall", rec}, {"f1", f1},
                             {"tiles", int64_t(n)}, {"changed", tp + fn}}}}};
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                       const TrainOptions& o) {
    if (o.optimizer == "sgd")
        return std::make_unique<torch::optim::SGD>(
            params,
            torch::optim::SGDOptions(o.lr).momentum(kSgdMomentum).weight_decay(o.weight_decay));
    if (o.optimizer == "adam")  // weight decay as an L2 term in the gradient, as torch.optim.Adam
        return std::make_unique<torch::optim::Adam>(
            params, torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
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

void save_checkpoint(const std::string& path, nn::Objective& objective,
                     torch::optim::Optimizer& optimizer, nn::ChangeModelImpl* average, const Progress& p,
                     const nlohmann::json& meta) {
    torch::serialize::OutputArchive archive;
    torch::serialize::OutputArchive model_archive, optimizer_archive;
    objective.model().save(model_archive);
    optimizer.save(optimizer_archive);
    archive.write("model", model_archive);
    archive.write("optimizer", optimizer_archive);
    objective.save_state(archive);  // a jointly trained teacher, say
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
    // Serialised in memory, then written by write_file: LibTorch's file writer throws from
    // its destructor when the disk fills, which ends the program (issue 34).
    std::ostringstream bytes;
    try {
        archive.save_to(bytes);
    } catch (const c10::Error& e) {
        throw IoError("cannot write checkpoint " + quote(path) + ": " + e.what_without_backtrace());
    }
    AtomicPath out(path, true);
    write_file(out.temp(), bytes.str(), "checkpoint", path);
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
    if (!o.model.arch.empty()) {
        const auto names = nn::model_names();
        if (std::find(names.begin(), names.end(), o.model.arch) == names.end()) {
            std::string known;
            for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
            throw ConfigError("unknown architecture " + quote(o.model.arch) + " (known: " + known + ")");
        }
    }
    if (!o.model.extra.empty() && !o.init.empty())
        throw ConfigError("--model-option cannot be combined with a start bundle (" + quote(o.init) +
                          "): its model options are kept");
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
    nn::validate(o.loss);
    validate(TileDegradation{o.degrade, o.degrade_date});
}

namespace {

// Where a run writes, and whether it goes on from a checkpoint. `skip` holds the summary
// when --resume finds the run already finished.
struct RunPaths {
    std::string ckpt, log, curves;
    bool resuming = false;
    nlohmann::json skip = nullptr;
};

RunPaths check_outputs(const TrainOptions& o, const RunContext& ctx) {
    RunPaths r{o.out + ".ckpt", o.out + ".log.jsonl", o.out + ".curves.svg"};
    for (const auto& out : {o.out, r.ckpt, r.log, r.curves, o.save_last})
        check_not_input(out, {{"--train", o.train}, {"--val", o.val}, {"--init", o.init}});
    check_output_folder(o.out);
    if (!o.save_last.empty()) check_output_folder(o.save_last);
    const bool have_ckpt = fs::exists(r.ckpt);
    if (o.resume && !have_ckpt && fs::exists(o.out)) {
        const nn::BundleHeader h = nn::read_bundle_info(o.out);
        // A bundle without a checkpoint is a finished run, unless --max-steps stopped it
        // inside its first epoch (checkpoints are written at epoch ends): that one restarts.
        if (h.training_complete()) {
            // Nothing left to do: the run finished earlier (how --resume skips finished jobs).
            ctx.info("training of " + quote(o.out) + " already finished; nothing to resume");
            r.skip = {{"out", o.out}, {"skipped", true}, {"complete", true},
                      {"training", h.training.is_null() ? nlohmann::json() : h.training},
                      {"metrics", h.metrics.is_null() ? nlohmann::json() : h.metrics}};
            return r;
        }
        ctx.info("training of " + quote(o.out) + " stopped inside its first epoch, before any checkpoint; starting afresh");
    }
    if (!o.resume && !o.overwrite) {
        for (const std::string& path : {o.out, o.save_last})
            if (!path.empty() && fs::exists(path))
                throw ConfigError("output " + quote(path) +
                                  " exists (use --overwrite to replace it, or --resume to continue its training)");
        if (have_ckpt)
            throw ConfigError("checkpoint " + quote(r.ckpt) +
                              " of an interrupted run exists (use --resume to continue it, or --overwrite to start again)");
    }
    r.resuming = o.resume && have_ckpt;
    if (o.resume && !have_ckpt) ctx.info("no checkpoint " + quote(r.ckpt) + " to resume from; starting afresh");
    return r;
}

// The tiles a run trains and validates on, with what the bundle records of them.
struct TrainData {
    nlohmann::json dataset_json;
    Normalization norm;
    std::unique_ptr<TileDataset> train;
    std::unique_ptr<TileDataset> val;
    nlohmann::json val_overlap = nullptr;
    std::vector<std::string> band_names;
    int bands() const { return train->bands(); }
};

TrainData open_data(const TrainOptions& o) {
    TrainData d;
    d.dataset_json = find_dataset_json(o.train);
    std::string scene_norm = o.scene_norm;
    if (scene_norm.empty()) scene_norm = o.init.empty() ? "none" : nn::read_bundle_info(o.init).scene_norm();
    // Per-scene standardisation leaves values of mean 0 and deviation 1: nothing more to do.
    d.norm = scene_norm == "none" ? Normalization::from_dataset_json(d.dataset_json)
                                  : Normalization::standardised(d.dataset_json.value("bands", 0), scene_norm);
    d.train = std::make_unique<TileDataset>(o.train, d.norm);
    if (d.train->size() == 0) throw ConfigError("training manifest " + quote(o.train) + " has no tiles");
    if (!o.val.empty()) {
        d.val = std::make_unique<TileDataset>(o.val, d.norm);
        const auto val_json = find_dataset_json(o.val);
        const int val_bands = val_json.value("bands", d.val->bands());
        if (val_bands != d.train->bands())
            throw ConfigError("validation manifest " + quote(o.val) + " has " + std::to_string(val_bands) +
                              " bands, training manifest " + quote(o.train) + " has " +
                              std::to_string(d.train->bands()));
        if (d.val->size() == 0) throw ConfigError("validation manifest " + quote(o.val) + " has no tiles");
    }
    // Validation tiles cut from the same pixels as training tiles (a drawn split of tiles
    // with overlap) make the validation F1, the best epoch and the threshold flatter: warned
    // once the inputs are known to be good, and recorded in the bundle.
    if (d.val) d.val_overlap = geo::tile_overlap(d.train->table(), d.val->table());
    if (d.dataset_json.contains("band_names") && d.dataset_json["band_names"].is_array())
        d.band_names = d.dataset_json["band_names"].get<std::vector<std::string>>();
    if (int(d.band_names.size()) != d.bands()) {
        d.band_names.clear();
        for (int b = 1; b <= d.bands(); ++b) d.band_names.push_back("B" + std::to_string(b));
    }
    return d;
}

// A method that learns from pixel labels refuses tiles without one, naming the first.
// A method that learns from image-level labels refuses tiles without one; validation tiles
// need what the best epoch is chosen by (pixel labels, or image-level ones).
void check_labels(const TrainOptions& o, const TrainData& d, const nn::Objective& objective) {
    if (!objective.needs_pixel_labels()) {
        for (const auto& r : d.train->records())
            if (r.changed < 0)
                throw ConfigError("training manifest " + quote(o.train) + ": tile " + quote(r.id) +
                                  " has no image-level label (a `changed` value, or a pixel label to derive it from)");
    } else {
        for (const auto& r : d.train->records())
            if (r.label.empty())
                throw ConfigError("training manifest " + quote(o.train) + ": tile " + quote(r.id) + " has no label" +
                                  (objective.name() == "supervised" ? "" : " (" + objective.name() + " needs pixel labels)"));
    }
    if (!d.val) return;
    const bool image = objective.selection() == "image";
    for (const auto& r : d.val->records()) {
        if (image && r.changed < 0)
            throw ConfigError("validation manifest " + quote(o.val) + ": tile " + quote(r.id) +
                              " has no image-level label (`changed`), which " + objective.name() + " validates on");
        if (!image && r.label.empty())
            throw ConfigError("validation manifest " + quote(o.val) + ": tile " + quote(r.id) +
                              " has no pixel label to validate on" +
                              (objective.name() == "supervised" ? "" : " (or choose --select image)"));
    }
}

// --degrade: one date of every training and validation sample degraded (validation with
// the same degradation of each tile every epoch, so the best epoch is chosen on the task the
// model is for); an objective that needs the clean pair (HiCD's teacher) gets it beside.
void apply_degradation(const TrainOptions& o, TrainData& d, const nn::Objective& objective) {
    if (o.degrade.empty()) {
        if (objective.needs_clean_inputs())
            throw ConfigError(objective.name() + " trains on a degraded date: give --degrade SPEC (e.g. res=4)");
        return;
    }
    const TileDegradation deg{o.degrade, o.degrade_date, objective.needs_clean_inputs()};
    d.train->set_degradation(deg);
    if (d.val) d.val->set_degradation(deg);
}

// The model training starts from: a checkpoint's (--resume), a bundle's (--init) or a
// new one of the asked architecture. Created after the seed is set (initialisation draws).
struct ModelStart {
    nn::ChangeModel model;
    nn::ModelOptions options;
    std::optional<torch::serialize::InputArchive> ckpt;
    nlohmann::json meta;  // the checkpoint's metadata
};

ModelStart start_model(const TrainOptions& o, const RunPaths& paths, int bands, const torch::Device& device,
                       const RunContext& ctx) {
    ModelStart s;
    s.options = o.model;
    s.options.in_bands = bands;
    if (paths.resuming) {
        s.ckpt.emplace();
        try {
            s.ckpt->load_from(paths.ckpt, device);
        } catch (const c10::Error& e) {
            throw ModelError("cannot read checkpoint " + quote(paths.ckpt) + ": " + e.what_without_backtrace());
        }
        s.meta = read_checkpoint_meta(*s.ckpt, paths.ckpt);
        s.options = nn::model_options_from_json(s.meta.at("model"));
        if (s.options.in_bands != bands)
            throw ModelError("checkpoint " + quote(paths.ckpt) + " expects " + std::to_string(s.options.in_bands) +
                             " bands, training manifest " + quote(o.train) + " has " + std::to_string(bands));
        s.model = nn::create_model(s.options);
    } else if (!o.init.empty()) {
        nn::Bundle b = nn::load_bundle(o.init, device, ctx);
        const nn::ModelOptions io = b.model->options();
        if (io.arch != o.model.arch)
            throw ModelError("bundle " + quote(o.init) + " holds architecture " + quote(io.arch) + ", training asks for " +
                             quote(o.model.arch));
        if (io.in_bands != bands)
            throw ModelError("bundle " + quote(o.init) + " expects " + std::to_string(io.in_bands) +
                             " bands, training manifest " + quote(o.train) + " has " + std::to_string(bands));
        s.model = b.model;
        s.options = io;
    } else {
        s.model = nn::create_model(s.options);
    }
    return s;
}

// What one epoch's training steps added up to.
struct EpochResult {
    double loss_sum = 0, lr = 0;
    std::map<std::string, double> term_sums;  // per named loss term, sample-weighted
    std::vector<std::string> term_order;      // first-seen order of the terms
    int64_t samples = 0, steps = 0;
    bool stopped = false;  // --max-steps reached
};

// The training loop around an objective: schedules, the weight average, validation and
// best-by-F1, --save-last, JSON lines, checkpoints and --resume. It knows no method.
class Trainer {
public:
    Trainer(const TrainOptions& o, const RunContext& ctx, RunPaths paths, TrainData data, ModelStart start,
            std::unique_ptr<nn::Objective> objective, const torch::Device& device, bool nhwc)
        : o_(o), ctx_(ctx), paths_(std::move(paths)), data_(std::move(data)), mo_(start.options),
          objective_(std::move(objective)), device_(device), nhwc_(nhwc) {
        optimizer_ = make_optimizer(objective_->parameters(), o_);
        make_average();
        if (paths_.resuming) {
            restore(*start.ckpt, start.meta);
        } else {
            fs::remove(paths_.log);
            fs::remove(paths_.curves);
            fs::remove(paths_.ckpt);
        }
        meta_ = {{"model", nn::to_json(mo_)}, {"train", o_.train}, {"val", o_.val}, {"seed", o_.seed},
                 {"ema", o_.ema},             {"method", objective_->name()}, {"options", determining()}};
        steps_per_epoch_ = (data_.train->size() + size_t(o_.batch_size) - 1) / size_t(o_.batch_size);
        total_steps_ = int64_t(steps_per_epoch_) * o_.epochs;
        augment_ = o_.augment;
        if (!augment_->flips && !augment_->rot90 && !augment_->swap_dates && augment_->crop == 0) augment_.reset();
        header_ = base_header();
        training_ = training_record();
    }

    nlohmann::json run(Clock::time_point t_start) {
        announce();
        bool stopped = false;
        for (int epoch = prog_.epochs_done; epoch < o_.epochs && !stopped; ++epoch) stopped = run_epoch(epoch);
        return finish(t_start);
    }

private:
    nn::ChangeModelImpl& model() { return objective_->model(); }
    // With --ema the average is what is validated and kept; the live weights are validated
    // too, for the log.
    nn::ChangeModelImpl& kept() { return average_ ? *average_ : model(); }

    // The weight average (--ema): a second model of the same architecture. Building it must
    // not draw from the generator, so that the training itself is the same with and without it.
    void make_average() {
        if (o_.ema <= 0) return;
        const torch::Tensor state = cpu_rng_state();
        average_ = nn::create_model(mo_);
        set_cpu_rng_state(state);
        average_->to(device_);
        if (nhwc_) nn::to_channels_last(*average_);
        average_into(*average_, model(), 0);
        average_->eval();
    }

    void restore(torch::serialize::InputArchive& ckpt, const nlohmann::json& meta) {
        const double ckpt_ema = meta.value("ema", 0.0);
        if (ckpt_ema != o_.ema)
            throw ConfigError("checkpoint " + quote(paths_.ckpt) + " was written with --ema " + fmt(ckpt_ema, 6) +
                              ", this run asks for --ema " + fmt(o_.ema, 6) + "; resume with the same options");
        const std::string method = meta.value("method", objective_->name());
        if (method != objective_->name())
            throw ConfigError("checkpoint " + quote(paths_.ckpt) + " was written by " + quote(method) +
                              " training, this run is " + quote(objective_->name()) + "; resume with the same program");
        if (meta.contains("options")) check_same_options(meta["options"]);
        torch::serialize::InputArchive ma, oa;
        ckpt.read("model", ma);
        ckpt.read("optimizer", oa);
        model().load(ma);
        optimizer_->load(oa);
        objective_->load_state(ckpt, paths_.ckpt);
        if (average_) {
            torch::serialize::InputArchive ea;
            if (!ckpt.try_read("ema", ea))
                throw ModelError("checkpoint " + quote(paths_.ckpt) +
                                 " has no weight average although it was written with --ema");
            average_->load(ea);
        }
        torch::Tensor state;
        if (ckpt.try_read("cpu_rng", state)) set_cpu_rng_state(state);
        prog_.epochs_done = meta.at("epochs_done").get<int>();
        prog_.step = meta.at("step").get<int64_t>();
        prog_.best_f1 = meta.at("best_f1").get<double>();
        prog_.best_epoch = meta.at("best_epoch").get<int>();
        prog_.seconds = meta.at("seconds").get<double>();
        prog_.train_seconds = meta.at("train_seconds").get<double>();
        prog_.samples = meta.at("samples").get<int64_t>();
        prog_.resumed = meta.at("resumed").get<std::vector<int>>();
        prog_.resumed.push_back(prog_.epochs_done);
        truncate_log(paths_.log, prog_.epochs_done);
        ctx_.info("resuming " + quote(o_.out) + " after epoch " + std::to_string(prog_.epochs_done) + " (step " +
                  std::to_string(prog_.step) + ")");
    }

    // What the bundle says of its inputs and its method.
    nn::BundleHeader base_header() const {
        nn::BundleHeader h;
        h.model = mo_;
        h.bands = data_.band_names;
        h.data_type = data_.dataset_json.value("data_type", "Float32");
        if (data_.dataset_json.contains("nodata") && data_.dataset_json["nodata"].is_number())
            h.nodata = data_.dataset_json["nodata"].get<double>();
        h.normalization = data_.norm;
        h.tile_size = data_.dataset_json.value("tile_size", 0);
        h.overlap = data_.dataset_json.value("overlap", 0);
        h.distillation = objective_->describe();
        return h;
    }

    // The options that decide the weights, by the flags that set them. A checkpoint records
    // them and --resume refuses one written with others: otherwise the run would go on
    // silently and its bundle would record options that only some epochs had. --epochs,
    // --max-steps, --save-last, --device, --workers, --threads and --memory-format may change.
    nlohmann::json determining() const {
        const auto path = [](const std::string& p) {
            return p.empty() ? nlohmann::json(nullptr) : nlohmann::json(fs::absolute(p).lexically_normal().string());
        };
        return {{"--train", path(o_.train)},
                {"--val", path(o_.val)},
                {"--init", path(o_.init)},
                {"--arch, --width, --model-option", nn::to_json(o_.model)},
                {"--scene-norm", o_.scene_norm},
                {"--seed", o_.seed},
                {"--batch-size", o_.batch_size},
                {"--optimizer", o_.optimizer},
                {"--lr", o_.lr},
                {"--weight-decay", o_.weight_decay},
                {"--schedule", o_.schedule},
                {"--warmup-steps", o_.warmup_steps},
                {"--ema", o_.ema},
                {"--crop", o_.augment.crop},
                {"--no-augment, --no-date-swap",
                 {{"flips", o_.augment.flips}, {"rot90", o_.augment.rot90}, {"swap_dates", o_.augment.swap_dates}}},
                {"--class-weights", o_.loss.class_weights},
                {"--dice-weight", o_.loss.dice_weight},
                {"--degrade", o_.degrade},
                {"--degrade-date", o_.degrade_date},
                {"--amp", o_.amp},
                {"the method's options", objective_->describe()}};
    }

    void check_same_options(const nlohmann::json& stored) const {
        const nlohmann::json now = determining();
        const auto text = [](const nlohmann::json& v) {
            return v.is_string() ? quote(v.get<std::string>()) : v.is_null() ? std::string("none") : v.dump();
        };
        std::string diff;
        for (const auto& [key, value] : now.items()) {
            const nlohmann::json before = stored.contains(key) ? stored[key] : nlohmann::json(nullptr);
            if (before != value)
                diff += (diff.empty() ? "" : "; ") + key + " " + text(before) + " (this run: " + text(value) + ")";
        }
        if (!diff.empty())
            throw ConfigError("checkpoint " + quote(paths_.ckpt) + " was written with other options: " + diff +
                              "; resume with the same options, or start again with --overwrite");
    }

    nlohmann::json training_record() const {
        return {
            {"train", manifest_summary(o_.train, *data_.train)},
            {"val", data_.val ? manifest_summary(o_.val, *data_.val) : nlohmann::json(nullptr)},
            {"val_overlap", data_.val_overlap},
            {"epochs", o_.epochs},
            {"batch_size", o_.batch_size},
            {"optimizer", o_.optimizer},
            {"lr", o_.lr},
            {"weight_decay", o_.weight_decay},
            {"schedule", o_.schedule},
            {"warmup_steps", o_.warmup_steps},
            {"ema", o_.ema},
            {"augment",
             {{"flips", o_.augment.flips}, {"rot90", o_.augment.rot90}, {"swap_dates", o_.augment.swap_dates},
              {"crop", o_.augment.crop}}},
            {"loss",
             {{"ce_weight", o_.loss.ce_weight}, {"dice_weight", o_.loss.dice_weight},
              {"class_weights", o_.loss.class_weights}}},
            {"init", o_.init.empty() ? nlohmann::json(nullptr) : nlohmann::json(o_.init)},
            {"degrade", o_.degrade.empty() ? nlohmann::json(nullptr)
                                           : nlohmann::json{{"spec", geo::DegradeSpec::parse(o_.degrade).text()},
                                                            {"date", o_.degrade_date}}},
            {"seed", o_.seed},
            {"device", device_.str()},
            {"memory_format", nhwc_ ? "channels-last" : "contiguous"},
            {"amp", o_.amp},
            {"max_steps", o_.max_steps},
        };
    }

    nlohmann::json header_for(const nlohmann::json& metrics, bool complete) const {
        nn::BundleHeader h = header_;
        nlohmann::json t = training_;
        t["epochs_completed"] = prog_.epochs_done;
        t["best_epoch"] = prog_.best_epoch;
        t["steps"] = prog_.step;
        t["samples"] = prog_.samples;
        t["seconds"] = prog_.seconds;
        t["complete"] = complete;
        t["resumed_after_epochs"] = prog_.resumed;
        h.training = t;
        h.metrics = metrics;
        return h.to_json();
    }

    void announce() {
        params_ = nn::parameter_count(model());
        if (const std::string w = geo::overlap_warning(data_.val_overlap, o_.val); !w.empty()) ctx_.warn(w);
        const auto& val = data_.val;
        ctx_.info("training " + mo_.arch + " (width " + std::to_string(mo_.width) + ", " + std::to_string(params_) +
                  " parameters" + (objective_->name() == "supervised" ? "" : ", " + objective_->name()) + ") on " +
                  std::to_string(data_.train->size()) + " tiles, " + std::to_string(data_.bands()) + " bands, " +
                  device_.str() + (o_.amp ? " in bfloat16 mixed precision" : "") +
                  (val ? ", validating on " + std::to_string(val->size()) + " tiles" : "") +
                  (average_ ? std::string(val ? ", " : ", keeping ") + "an average of the weights (decay " +
                                  fmt(o_.ema, 6) + ")"
                            : ""));
    }

    // One optimiser step; returns the batch's loss.
    double step(const Batch& cpu, EpochResult& r) {
        r.lr = lr_at(o_, prog_.step, total_steps_);
        for (auto& group : optimizer_->param_groups()) group.options().set_lr(r.lr);
        const Batch b = cpu.to(device_, nhwc_);
        const nn::Loss loss = objective_->loss(b, {device_, o_.amp});
        const auto n = double(b.size());
        for (const auto& [name, value] : loss.terms) {
            if (!r.term_sums.count(name)) r.term_order.push_back(name);
            r.term_sums[name] += value.item<double>() * n;
        }
        optimizer_->zero_grad();
        loss.total.backward();
        optimizer_->step();
        if (average_) average_into(*average_, model(), ema_decay_at(o_.ema, prog_.step));
        const double l = loss.total.item<double>();
        if (!std::isfinite(l))
            throw Error("training diverged at step " + std::to_string(prog_.step + 1) + " (loss " + fmt(l) +
                        "); lower --lr");
        return l;
    }

    EpochResult train_epoch(int epoch) {
        EpochResult r;
        r.lr = o_.lr;
        objective_->train();
        BatchLoader loader(*data_.train, o_.batch_size, true, augment_, epoch_seed(o_.seed, epoch), o_.workers);
        while (auto cpu = loader.next()) {
            const double l = step(*cpu, r);
            const auto n = int64_t(cpu->ids.size());
            r.loss_sum += l * double(n);
            r.samples += n;
            ++r.steps;
            ++prog_.step;
            ctx_.progress(double(prog_.step) / double(total_steps_), "training");
            if (o_.max_steps > 0 && prog_.step >= o_.max_steps) {
                r.stopped = true;
                break;
            }
        }
        return r;
    }

    bool image_selection() const { return objective_->selection() == "image"; }
    // What the best epoch is chosen by, for the log.
    std::string score_name() const { return image_selection() ? "val image accuracy" : "val F1"; }
    static double score_of(const nlohmann::json& j) {
        return j.contains("image") ? j["image"]["accuracy"].get<double>() : j["change"]["f1"].get<double>();
    }

    // Validation scores of a model: (the score the best epoch is chosen by, the JSON the log
    // and bundle record): change F1, or image-level accuracy for objective_->selection() "image".
    std::pair<double, nlohmann::json> score(nn::ChangeModelImpl& m) {
        if (image_selection()) return validate_image(m, *data_.val, o_, device_);
        const ValidationResult v = validate_model(m, *data_.val, o_, device_);
        nlohmann::json j = to_json(v.metrics);
        j["loss"] = v.loss;
        j["confusion"] = to_json(v.confusion);
        j["best_threshold"] = best_threshold(v);
        return {v.metrics.change.f1, j};
    }

    // Returns whether --max-steps stopped the run.
    bool run_epoch(int epoch) {
        const auto t_epoch = Clock::now();
        const EpochResult r = train_epoch(epoch);
        const double train_seconds = seconds_since(t_epoch);
        const bool partial = size_t(r.steps) < steps_per_epoch_;
        prog_.samples += r.samples;
        prog_.train_seconds += train_seconds;

        nlohmann::json val_json = nullptr, live_json = nullptr;
        double f1 = -1;
        if (data_.val) {
            std::tie(f1, val_json) = score(kept());
            if (average_) live_json = score(model()).second;
        }
        const double epoch_seconds = seconds_since(t_epoch);
        prog_.seconds += epoch_seconds;
        if (!partial) prog_.epochs_done = epoch + 1;
        const bool is_best = save_bundles(epoch, f1, val_json, partial);
        log_epoch(epoch, r, {val_json, live_json}, f1, is_best, partial, {epoch_seconds, train_seconds});
        if (!partial) save_checkpoint(paths_.ckpt, *objective_, *optimizer_, average_.get(), prog_, meta_);
        return r.stopped;
    }

    // The best bundle (without validation: the latest) and --save-last's. Returns whether
    // this epoch is the best so far.
    bool save_bundles(int epoch, double f1, const nlohmann::json& val_json, bool partial) {
        const bool is_best = !data_.val || f1 > prog_.best_f1;
        if (is_best) {
            prog_.best_f1 = f1;
            prog_.best_epoch = epoch + 1;
            nlohmann::json best_metrics = val_json;
            if (!best_metrics.is_null()) best_metrics["epoch"] = epoch + 1;
            kept().eval();
            nn::save_bundle(o_.out, kept(), header_for(best_metrics, false), true);
        }
        // --save-last: the weights of this epoch whatever their score, for a fixed-length
        // schedule or when the validation set is too small to choose an epoch by.
        if (!o_.save_last.empty() && !partial) {
            nlohmann::json last_metrics = val_json;
            if (!last_metrics.is_null()) last_metrics["epoch"] = epoch + 1;
            kept().eval();
            nn::save_bundle(o_.save_last, kept(), header_for(last_metrics, prog_.epochs_done >= o_.epochs), true);
        }
        return is_best;
    }

    struct Seconds {
        double epoch = 0, train = 0;
    };
    struct Scores {
        nlohmann::json kept, live;
    };

    void log_epoch(int epoch, const EpochResult& r, const Scores& val, double f1, bool is_best, bool partial,
                   Seconds secs) {
        const double train_loss = r.samples ? r.loss_sum / double(r.samples) : 0;
        const double sps = secs.train > 0 ? double(r.samples) / secs.train : 0;
        nlohmann::json line = {{"epoch", epoch + 1},
                               {"steps", prog_.step},
                               {"train_loss", train_loss},
                               {"val", val.kept},
                               {"lr", r.lr},
                               {"seconds", secs.epoch},
                               {"train_seconds", secs.train},
                               {"samples", r.samples},
                               {"samples_per_s", sps},
                               {"best", is_best}};
        // Every loss term's mean; "extra_loss" (the terms beyond the task loss) as before.
        nlohmann::json terms = nlohmann::json::object();
        double extra = 0;
        for (const auto& name : r.term_order) {
            const double mean = r.samples ? r.term_sums.at(name) / double(r.samples) : 0.0;
            terms[name] = mean;
            if (name != "task") extra += mean;
        }
        line["terms"] = terms;
        if (r.term_order.size() > 1) line["extra_loss"] = extra;
        if (!val.live.is_null()) line["val_live"] = val.live;
        if (partial) line["partial"] = true;
        append_line(paths_.log, line.dump());
        // The curves so far, redrawn each epoch: a picture to glance at during a long run.
        write_training_curves(paths_.log, paths_.curves,
                              objective_->name() + ": " + mo_.arch + " -> " + fs::path(o_.out).filename().string());
        std::string term_text;
        if (r.term_order.size() > 1)
            for (const auto& name : r.term_order) term_text += (term_text.empty() ? " (" : ", ") + name + " " + fmt(terms[name].get<double>(), 4);
        if (!term_text.empty()) term_text += ")";
        ctx_.info("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o_.epochs) + (partial ? " (partial)" : "") +
                  ": loss " + fmt(train_loss, 4) + term_text +
                  (data_.val ? ", " + score_name() + " " + fmt(f1, 4) +
                                   (average_ ? " averaged, " + fmt(score_of(val.live), 4) + " live" : "") +
                                   " (best " + fmt(prog_.best_f1, 4) + " at epoch " + std::to_string(prog_.best_epoch) + ")"
                             : std::string()) +
                  ", " + fmt(secs.epoch, 3) + " s, " + fmt(sps, 3) + " samples/s");
    }

    nlohmann::json finish(Clock::time_point t_start) {
        const bool complete = prog_.epochs_done >= o_.epochs;
        // Rewrite the best bundle's header with the run's final state (epochs, steps, resumes).
        nn::Bundle best = nn::load_bundle(o_.out, torch::kCPU);
        const nlohmann::json best_metrics = best.info.metrics;
        nn::save_bundle(o_.out, *best.model, header_for(best_metrics, complete), true);
        if (complete) fs::remove(paths_.ckpt);
        const bool have_ckpt_now = fs::exists(paths_.ckpt);
        if (!complete)
            ctx_.info("stopped after " + std::to_string(prog_.step) + " steps (--max-steps); " +
                      (have_ckpt_now ? std::string("continue with --resume")
                                     : std::string("inside the first epoch, before any checkpoint: --resume starts again")));
        const double sps = prog_.train_seconds > 0 ? double(prog_.samples) / prog_.train_seconds : 0;
        nlohmann::json s = {{"out", o_.out},
                            {"log", paths_.log},
                            {"curves", paths_.curves},
                            {"checkpoint", have_ckpt_now ? nlohmann::json(paths_.ckpt) : nlohmann::json(nullptr)},
                            {"last", o_.save_last.empty() ? nlohmann::json(nullptr) : nlohmann::json(o_.save_last)},
                            {"complete", complete},
                            {"arch", mo_.arch},
                            {"width", mo_.width},
                            {"parameters", params_},
                            {"bands", data_.bands()},
                            {"device", device_.str()},
                            {"train_tiles", data_.train->size()},
                            {"val_tiles", data_.val ? data_.val->size() : 0},
                            {"epochs", o_.epochs},
                            {"epochs_completed", prog_.epochs_done},
                            {"steps", prog_.step},
                            {"ema", o_.ema},
                            {"best_epoch", prog_.best_epoch},
                            {"metrics", best_metrics},
                            {"resumed_after_epochs", prog_.resumed},
                            {"seconds", seconds_since(t_start)},
                            {"training_seconds", prog_.seconds},
                            {"samples_per_s", sps}};
        if (const nlohmann::json d = objective_->summary(); !d.is_null()) s["distillation"] = d;
        return s;
    }

    const TrainOptions& o_;
    const RunContext& ctx_;
    RunPaths paths_;
    TrainData data_;
    nn::ModelOptions mo_;
    std::unique_ptr<nn::Objective> objective_;
    torch::Device device_;
    bool nhwc_ = false;
    std::unique_ptr<torch::optim::Optimizer> optimizer_;
    nn::ChangeModel average_;
    Progress prog_;
    nlohmann::json meta_;
    size_t steps_per_epoch_ = 0;
    int64_t total_steps_ = 0;
    std::optional<AugmentOptions> augment_;
    nn::BundleHeader header_;
    nlohmann::json training_;
    int64_t params_ = 0;
};

}  // namespace

nlohmann::json train_objective(const TrainOptions& o, const ObjectiveFactory& make_objective, const RunContext& ctx) {
    validate(o);
    const auto t_start = Clock::now();
    RunPaths paths = check_outputs(o, ctx);
    if (!paths.skip.is_null()) return paths.skip;
    TrainData data = open_data(o);

    // Device, seed, threads: set before the model exists so initialisation is seeded.
    const torch::Device device = nn::parse_device(o.device);
    if (o.amp) nn::check_amp(device, "--amp", ctx);
    nn::set_threads(o.threads);
    torch::manual_seed(o.seed);

    ModelStart start = start_model(o, paths, data.bands(), device, ctx);
    start.model->to(device);
    const bool nhwc = nn::use_channels_last(o.memory_format, device, start.options.width);
    if (nhwc) nn::to_channels_last(*start.model);
    std::unique_ptr<nn::Objective> objective = make_objective(start.model);
    check_labels(o, data, *objective);
    apply_degradation(o, data, *objective);
    Trainer trainer(o, ctx, std::move(paths), std::move(data), std::move(start), std::move(objective), device, nhwc);
    return trainer.run(t_start);
}

nlohmann::json train_model(const TrainOptions& o, const RunContext& ctx, const nn::ExtraLoss& extra) {
    return train_objective(
        o, [&](nn::ChangeModel model) { return std::make_unique<nn::SupervisedObjective>(model, o.loss, extra); }, ctx);
}

}  // namespace cdk::pipeline
