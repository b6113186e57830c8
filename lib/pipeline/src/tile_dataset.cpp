#include "cdk/pipeline/tile_dataset.hpp"

#include <algorithm>
#include <condition_variable>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include <omp.h>

#include "cdk/core/car.hpp"
#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/geo/degrade.hpp"
#include "cdk/geo/raster.hpp"

namespace cdk::pipeline {

namespace fs = std::filesystem;

namespace {


nlohmann::json read_json_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw IoError("cannot open " + quote(path));
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw ConfigError("cannot parse " + quote(path) + ": " + e.what());
    }
}

std::string folder_of(const std::string& path) {
    const auto p = fs::path(path).parent_path();
    return p.empty() ? std::string(".") : p.string();
}

// splitmix64: a well-mixed 64-bit value from a counter; derives independent streams.
uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Uniform integer in [0, n) by rejection: std::uniform_int_distribution's output differs
// between standard libraries, this does not.
uint64_t draw(std::mt19937_64& rng, uint64_t n) {
    if (n <= 1) return 0;
    const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
    uint64_t v;
    do v = rng();
    while (v >= limit);
    return v % n;
}

// A tile as read: every band as Float32 [C, H, W], a validity mask [H, W] (a pixel is
// nodata when every band that has a nodata value holds it, as in geo::Scene) and the
// file's data type (the range a degradation clips to).
struct RawTile {
    torch::Tensor data, valid;
    GDALDataType type = GDT_Float32;
};

RawTile read_tile(const std::string& path) {
    auto ds = geo::open_raster(path);
    const int w = ds->GetRasterXSize(), h = ds->GetRasterYSize(), c = ds->GetRasterCount();
    auto data = torch::empty({c, h, w}, torch::kFloat32);
    if (ds->RasterIO(GF_Read, 0, 0, w, h, data.data_ptr<float>(), w, h, GDT_Float32, c, nullptr,
                     0, 0, 0, nullptr) != CE_None)
        throw IoError("cannot read raster " + quote(path) + ": " + CPLGetLastErrorMsg());
    auto invalid = torch::ones({h, w}, torch::kBool);
    bool any_nodata = false;
    for (int b = 0; b < c; ++b) {
        int has = 0;
        const double nd = ds->GetRasterBand(b + 1)->GetNoDataValue(&has);
        if (!has) continue;
        any_nodata = true;
        auto band = data[b];
        invalid = invalid.logical_and(std::isnan(nd) ? band.isnan() : band.eq(static_cast<float>(nd)));
    }
    if (!any_nodata) invalid.zero_();
    return {data, invalid.logical_not(), ds->GetRasterBand(1)->GetRasterDataType()};
}

// Degrade one date of a raw tile in place: draws (the date with `any`, the random mix, the
// noise) come from a copy of the sample's generator, so the augmentation that follows draws
// the same as without degradation.
void degrade_tile(RawTile& pre, RawTile& post, const geo::DegradeSpec& spec, const std::string& date,
                  const std::mt19937_64& rng) {
    std::mt19937_64 copy = rng;
    const uint64_t seed = mix64(copy() ^ 0x48694344ULL), pick = copy();
    RawTile& t = date == "1" || (date == "any" && pick % 2 == 0) ? pre : post;
    const auto valid = t.valid.to(torch::kUInt8).contiguous();
    geo::DegradeImageOptions o;
    o.range = geo::ValueRange::of(t.type);
    o.seed = seed;
    t.data = t.data.contiguous();
    geo::degrade_image(t.data.data_ptr<float>(), valid.data_ptr<uint8_t>(), int(t.data.size(0)), int(t.data.size(1)),
                       int(t.data.size(2)), spec, o);
}

double car_of(const torch::Tensor& label) {
    const auto valid = label.ne(255).sum().item<int64_t>();
    if (valid == 0) return 0;
    return double(label.eq(1).sum().item<int64_t>()) / double(valid);
}

// The stream of sample `index` in an epoch of a loader seeded with `seed`.
uint64_t sample_seed(uint64_t seed, uint64_t index) { return mix64(mix64(seed) ^ mix64(index + 1)); }

// 0 … n-1, shuffled by Fisher–Yates with our own bounded draw (std::shuffle's output is
// implementation-defined).
std::vector<size_t> shuffled_indices(size_t n, uint64_t seed) {
    std::vector<size_t> idx(n);
    for (size_t i = 0; i < n; ++i) idx[i] = i;
    std::mt19937_64 rng(seed);
    for (size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[draw(rng, i)]);
    return idx;
}

}  // namespace

nlohmann::json find_dataset_json(const std::string& manifest) {
    const std::string beside = (fs::path(folder_of(manifest)) / "dataset.json").string();
    if (fs::exists(beside)) return read_json_file(beside);
    // A cd-partition manifest: its rows point at tiles in <tiles>/A/..., and dataset.json
    // lies in <tiles>.
    const CsvTable t = read_csv(manifest);
    const int a = t.column("a");
    if (t.rows.empty())  // e.g. a validation set that cd-partition --val-blocks left empty
        throw ConfigError("manifest " + quote(manifest) + " lists no tiles");
    if (a >= 0) {
        const std::string tile = resolve_path(t.rows[0][a], folder_of(manifest));
        const std::string above = (fs::path(tile).parent_path().parent_path() / "dataset.json").string();
        if (fs::exists(above)) return read_json_file(above);
    }
    throw ConfigError("no dataset.json found for manifest " + quote(manifest) +
                      " (looked beside it and beside the tiles its rows point at)");
}

// ---------------------------------------------------------------------------------------
// TileDataset

TileDataset::TileDataset(const std::string& manifest, Normalization norm)
    : manifest_(manifest), table_(read_csv(manifest)), norm_(std::move(norm)) {
    const CsvTable& t = table_;
    const int id = t.require_column("id", manifest), a = t.require_column("a", manifest),
              b = t.require_column("b", manifest);
    const int label = t.column("label"), car = t.column("car"), scene = t.column("scene"),
              changed = t.column("changed");
    const std::string base = folder_of(manifest);
    for (const auto& row : t.rows) {
        TileRecord r;
        r.id = row[id];
        if (scene >= 0) r.scene = row[scene];
        r.a = resolve_path(row[a], base);
        r.b = resolve_path(row[b], base);
        if (label >= 0 && !row[label].empty()) r.label = resolve_path(row[label], base);
        // Read as cd-partition reads the same column (one rule: a number in [0, 1]).
        const std::string car_text = car >= 0 ? trim(row[car]) : std::string();
        if (!car_text.empty() && !parse_car(car_text, r.car))
            throw ConfigError("manifest " + quote(manifest) + ": tile " + quote(r.id) + " has CAR " +
                              quote(row[car]) + ", not a number in [0, 1]");
        // The image-level label: the `changed` column (0/1, empty = unknown), else whether the
        // pixel label's CAR is above 0.
        const std::string changed_text = changed >= 0 ? trim(row[changed]) : std::string();
        if (changed_text == "0" || changed_text == "1")
            r.changed = changed_text == "1" ? 1 : 0;
        else if (!changed_text.empty())
            throw ConfigError("manifest " + quote(manifest) + ": tile " + quote(r.id) + " has a changed value " +
                              quote(row[changed]) + " that is not 0 or 1");
        else if (r.car >= 0 && !r.label.empty())
            r.changed = r.car > 0 ? 1 : 0;
        records_.push_back(std::move(r));
    }
    if (norm_.mean.size() != norm_.std.size())
        throw ConfigError("normalisation of manifest " + quote(manifest) + " has " +
                          std::to_string(norm_.mean.size()) + " means but " +
                          std::to_string(norm_.std.size()) + " standard deviations");
    bands_ = static_cast<int>(norm_.mean.size());
    if (bands_ == 0 && !records_.empty()) {  // no statistics given: identity normalisation
        bands_ = geo::open_raster(records_[0].a)->GetRasterCount();
        norm_.mean.assign(bands_, 0.f);
        norm_.std.assign(bands_, 1.f);
    }
    validate_scene_normalization(norm_.scene);
    if (norm_.scene != "none" && !records_.empty()) {
        const nlohmann::json ds = find_dataset_json(manifest);
        std::map<std::string, size_t> index;  // scene -> scene_norms_
        if (ds.contains("scenes") && ds["scenes"].is_array())
            for (const auto& sc : ds["scenes"]) {
                if (!sc.is_object() || !sc.contains("statistics")) continue;
                const auto& st = sc["statistics"];
                try {
                    scene_norms_.emplace_back(norm_.for_date(DateStatistics::from_json(st.value("pre", nlohmann::json()))),
                                              norm_.for_date(DateStatistics::from_json(st.value("post", nlohmann::json()))));
                } catch (const ConfigError& e) {
                    throw ConfigError("dataset.json of manifest " + quote(manifest) + ", scene " +
                                      quote(sc.value("scene", std::string())) + ": " + e.what());
                }
                index[sc.value("scene", std::string())] = scene_norms_.size() - 1;
            }
        for (const auto& r : records_) {
            const auto it = index.find(r.scene);
            if (it == index.end())
                throw ConfigError("per-scene standardisation: the tile set of manifest " + quote(manifest) +
                                  " has no statistics for scene " + quote(r.scene) + " (tile " + quote(r.id) +
                                  "); tile sets made before cdkit recorded them need cd-tile again");
            record_scene_.push_back(it->second);
        }
    }
}

void validate(const TileDegradation& d) {
    if (!d.spec.empty()) geo::DegradeSpec::parse(d.spec);
    if (d.date != "1" && d.date != "2" && d.date != "any")
        throw ConfigError("the degraded date must be 2, 1 or any, not " + quote(d.date));
}

void TileDataset::set_degradation(const TileDegradation& d) {
    validate(d);
    degradation_ = d;
    degrade_.reset();
    if (!d.spec.empty()) degrade_ = geo::DegradeSpec::parse(d.spec);
}

Sample TileDataset::get(size_t i, const std::optional<AugmentOptions>& augment,
                        std::mt19937_64& rng) const {
    if (i >= records_.size())
        throw ConfigError("tile index " + std::to_string(i) + " out of range for manifest " +
                          quote(manifest_) + " (" + std::to_string(records_.size()) + " tiles)");
    const TileRecord& r = records_[i];
    RawTile raw_pre = read_tile(r.a), raw_post = read_tile(r.b);
    torch::Tensor pre_clean, post_clean;  // raw, before degradation (kept for a teacher)
    if (degrade_) {
        if (degradation_.keep_clean) {
            pre_clean = raw_pre.data.clone();
            post_clean = raw_post.data.clone();
        }
        degrade_tile(raw_pre, raw_post, *degrade_, degradation_.date, rng);
    }
    torch::Tensor pre = raw_pre.data, valid_pre = raw_pre.valid, post = raw_post.data, valid_post = raw_post.valid;
    for (const auto& [tile, name] : {std::pair{&pre, &r.a}, std::pair{&post, &r.b}})
        if (tile->size(0) != bands_)
            throw ConfigError("tile " + quote(*name) + " has " + std::to_string(tile->size(0)) +
                              " bands, manifest " + quote(manifest_) + " has " +
                              std::to_string(bands_));
    if (!pre.sizes().equals(post.sizes()))
        throw ConfigError("tiles " + quote(r.a) + " and " + quote(r.b) + " differ in size");
    const int64_t h = pre.size(1), w = pre.size(2);

    torch::Tensor label;
    if (!r.label.empty()) {
        auto ds = geo::open_raster(r.label);
        if (ds->GetRasterXSize() != w || ds->GetRasterYSize() != h)
            throw ConfigError("label tile " + quote(r.label) + " is " +
                              std::to_string(ds->GetRasterXSize()) + "x" +
                              std::to_string(ds->GetRasterYSize()) + ", its image tiles " +
                              std::to_string(w) + "x" + std::to_string(h));
        auto raw = torch::empty({h, w}, torch::kUInt8);
        if (ds->GetRasterBand(1)->RasterIO(GF_Read, 0, 0, int(w), int(h), raw.data_ptr<uint8_t>(),
                                           int(w), int(h), GDT_Byte, 0, 0) != CE_None)
            throw IoError("cannot read raster " + quote(r.label) + ": " + CPLGetLastErrorMsg());
        // 0 = no change, 255 = ignored, anything else = change (as geo::Label reads it).
        label = raw.ne(0).to(torch::kInt64).masked_fill_(raw.eq(255), 255);
    } else {
        label = torch::full({h, w}, 255, torch::kInt64);
    }
    // Pixels without data in either date are never scored.
    const auto valid = valid_pre & valid_post;
    label.masked_fill_(valid.logical_not(), 255);
    torch::Tensor vmask = valid;  // augmented with the label

    const Normalization& n_pre = record_scene_.empty() ? norm_ : scene_norms_[record_scene_[i]].first;
    const Normalization& n_post = record_scene_.empty() ? norm_ : scene_norms_[record_scene_[i]].second;
    pre = n_pre.apply(pre, valid_pre);
    post = n_post.apply(post, valid_post);
    if (pre_clean.defined()) {
        pre_clean = n_pre.apply(pre_clean, valid_pre);
        post_clean = n_post.apply(post_clean, valid_post);
    }
    // Every image of the sample, so that crops, flips, rotations and swaps treat all alike.
    std::vector<torch::Tensor*> images = {&pre, &post};
    if (pre_clean.defined()) images.insert(images.end(), {&pre_clean, &post_clean});

    if (augment) {
        // Draw order is fixed (crop, flips, rotation, swap) so a seed always means the same.
        if (augment->crop > 0) {
            const int64_t c = augment->crop;
            if (h < c || w < c) {  // pad small (edge) tiles up to the crop; padding is ignored
                const int64_t ph = std::max<int64_t>(0, c - h), pw = std::max<int64_t>(0, c - w);
                for (auto* t : images) *t = torch::constant_pad_nd(*t, {0, pw, 0, ph}, 0);
                label = torch::constant_pad_nd(label, {0, pw, 0, ph}, 255);
                vmask = torch::constant_pad_nd(vmask, {0, pw, 0, ph}, 0);
            }
            const int64_t hh = pre.size(1), ww = pre.size(2);
            const int64_t y0 = static_cast<int64_t>(draw(rng, uint64_t(hh - c + 1)));
            const int64_t x0 = static_cast<int64_t>(draw(rng, uint64_t(ww - c + 1)));
            for (auto* t : images) *t = t->slice(1, y0, y0 + c).slice(2, x0, x0 + c);
            label = label.slice(0, y0, y0 + c).slice(1, x0, x0 + c);
            vmask = vmask.slice(0, y0, y0 + c).slice(1, x0, x0 + c);
        }
        const bool flip_h = augment->flips && draw(rng, 2) == 1;
        const bool flip_v = augment->flips && draw(rng, 2) == 1;
        const int rot = augment->rot90 ? static_cast<int>(draw(rng, 4)) : 0;
        const bool swap = augment->swap_dates && draw(rng, 2) == 1;
        if (flip_h) {
            for (auto* t : images) *t = t->flip({2});
            label = label.flip({1});
            vmask = vmask.flip({1});
        }
        if (flip_v) {
            for (auto* t : images) *t = t->flip({1});
            label = label.flip({0});
            vmask = vmask.flip({0});
        }
        if (rot) {
            for (auto* t : images) *t = torch::rot90(*t, rot, {1, 2});
            label = torch::rot90(label, rot, {0, 1});
            vmask = torch::rot90(vmask, rot, {0, 1});
        }
        if (swap) {
            std::swap(pre, post);
            std::swap(pre_clean, post_clean);
        }
    }
    Sample s;
    s.pre = pre.contiguous();
    s.post = post.contiguous();
    s.label = label.contiguous();
    s.valid = vmask.contiguous();
    s.car = car_of(s.label);
    s.id = r.id;
    s.changed = r.changed;
    s.pixel_labelled = !r.label.empty();
    if (pre_clean.defined()) {
        s.pre_clean = pre_clean.contiguous();
        s.post_clean = post_clean.contiguous();
    }
    return s;
}

// ---------------------------------------------------------------------------------------
// Batches

Batch collate(std::vector<Sample> samples) {
    Batch b;
    int64_t h = 0, w = 0;
    for (const auto& s : samples) {
        h = std::max(h, s.pre.size(1));
        w = std::max(w, s.pre.size(2));
    }
    std::vector<torch::Tensor> pre, post, label, valid, pre_clean, post_clean;
    for (auto& s : samples) {
        if (!s.valid.defined()) s.valid = torch::ones({s.pre.size(1), s.pre.size(2)}, torch::kBool);
        const int64_t ph = h - s.pre.size(1), pw = w - s.pre.size(2);
        if (ph || pw) {  // tiles of different sizes (scene edges): pad, padding ignored
            for (auto* t : {&s.pre, &s.post, &s.pre_clean, &s.post_clean})
                if (t->defined()) *t = torch::constant_pad_nd(*t, {0, pw, 0, ph}, 0);
            s.label = torch::constant_pad_nd(s.label, {0, pw, 0, ph}, 255);
            s.valid = torch::constant_pad_nd(s.valid, {0, pw, 0, ph}, 0);
        }
        pre.push_back(s.pre);
        post.push_back(s.post);
        if (s.pre_clean.defined()) {
            pre_clean.push_back(s.pre_clean);
            post_clean.push_back(s.post_clean);
        }
        label.push_back(s.label);
        valid.push_back(s.valid);
        b.car.push_back(s.car);
        b.ids.push_back(s.id);
        b.changed.push_back(s.changed);
        b.pixel_labelled.push_back(s.pixel_labelled);
    }
    b.pre = torch::stack(pre);
    b.post = torch::stack(post);
    b.label = torch::stack(label);
    b.valid = torch::stack(valid);
    if (!pre_clean.empty()) {
        if (pre_clean.size() != samples.size()) throw ConfigError("a batch mixes samples with and without clean inputs");
        b.pre_clean = torch::stack(pre_clean);
        b.post_clean = torch::stack(post_clean);
    }
    return b;
}

struct BatchLoader::State {
    const TileDataset* dataset = nullptr;
    int batch_size = 1;
    std::optional<AugmentOptions> augment;
    uint64_t seed = 0;
    std::vector<size_t> order;
    size_t batches = 0;
    size_t capacity = 2;  // batches made ahead of the consumer

    std::mutex mu;
    std::condition_variable ready_cv, space_cv;
    size_t next_to_make = 0;
    size_t next_to_take = 0;
    std::map<size_t, Batch> ready;
    std::map<size_t, std::exception_ptr> failed;
    bool stop = false;
    std::vector<std::thread> threads;

    Batch make(size_t k) const {
        const size_t first = k * size_t(batch_size);
        const size_t last = std::min(order.size(), first + size_t(batch_size));
        std::vector<Sample> samples;
        for (size_t p = first; p < last; ++p) {
            // Each sample's stream depends only on (seed, position in the epoch): the same
            // batches whatever the number of workers.
            std::mt19937_64 rng(sample_seed(seed, p));
            samples.push_back(dataset->get(order[p], augment, rng));
        }
        return collate(std::move(samples));
    }

    void work() {
        // Like PyTorch's DataLoader workers: one intra-op thread each. Without this every
        // loader thread's small tensor ops fork an OpenMP team of all cores, which competes
        // with (and spin-waits against) the training step's own team.
        omp_set_num_threads(1);
        for (;;) {
            size_t k;
            {
                std::unique_lock<std::mutex> lock(mu);
                space_cv.wait(lock, [&] { return stop || next_to_make < next_to_take + capacity; });
                if (stop || next_to_make >= batches) return;
                k = next_to_make++;
            }
            std::optional<Batch> b;
            std::exception_ptr err;
            try {
                b = make(k);
            } catch (...) {
                err = std::current_exception();
            }
            {
                std::lock_guard<std::mutex> lock(mu);
                if (err) failed[k] = err;
                else ready.emplace(k, std::move(*b));
            }
            ready_cv.notify_all();
        }
    }
};

BatchLoader::BatchLoader(const TileDataset& dataset, int batch_size, bool shuffle,
                         std::optional<AugmentOptions> augment, uint64_t seed, int workers,
                         bool drop_last)
    : state_(std::make_unique<State>()) {
    if (batch_size < 1) throw ConfigError("batch size must be at least 1, not " + std::to_string(batch_size));
    auto& s = *state_;
    s.dataset = &dataset;
    s.batch_size = batch_size;
    s.augment = std::move(augment);
    s.seed = seed;
    s.order = shuffled_indices(dataset.size(), mix64(~seed));
    if (!shuffle) std::sort(s.order.begin(), s.order.end());
    s.batches = drop_last ? s.order.size() / size_t(batch_size)
                          : (s.order.size() + size_t(batch_size) - 1) / size_t(batch_size);
    s.capacity = size_t(std::max(2, 2 * workers));
    for (int t = 0; t < workers; ++t) s.threads.emplace_back([&s] { s.work(); });
}

BatchLoader::~BatchLoader() {
    {
        std::lock_guard<std::mutex> lock(state_->mu);
        state_->stop = true;
    }
    state_->space_cv.notify_all();
    for (auto& t : state_->threads) t.join();
}

size_t BatchLoader::batches() const { return state_->batches; }

std::optional<Batch> BatchLoader::next() {
    auto& s = *state_;
    if (s.next_to_take >= s.batches) return std::nullopt;
    const size_t k = s.next_to_take;
    if (s.threads.empty()) {  // no workers: read in the caller's thread
        ++s.next_to_take;
        return s.make(k);
    }
    std::unique_lock<std::mutex> lock(s.mu);
    s.ready_cv.wait(lock, [&] { return s.ready.count(k) || s.failed.count(k); });
    if (auto f = s.failed.find(k); f != s.failed.end()) std::rethrow_exception(f->second);
    Batch b = std::move(s.ready.at(k));
    s.ready.erase(k);
    ++s.next_to_take;
    lock.unlock();
    s.space_cv.notify_all();
    return b;
}

}  // namespace cdk::pipeline
