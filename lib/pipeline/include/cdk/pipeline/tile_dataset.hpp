#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cdk/core/csv.hpp"
#include "cdk/geo/degrade.hpp"
#include "cdk/nn/batch.hpp"
#include "cdk/nn/normalization.hpp"

namespace cdk::pipeline {

using nn::DateStatistics;
using nn::Normalization;
using nn::validate_scene_normalization;
using nn::Batch;

/// dataset.json of a manifest: beside it (cd-tile output) or beside the tiles its rows
/// point at (cd-partition output). Throws ConfigError naming the manifest when not found.
nlohmann::json find_dataset_json(const std::string& manifest);

/// One row of a tile manifest, paths resolved.
struct TileRecord {
    std::string id;     ///< tile id
    std::string scene;  ///< scene name (the manifest's scene column; empty without one)
    std::string a;      ///< date 1 tile
    std::string b;      ///< date 2 tile
    std::string label;  ///< label tile (empty = unlabelled)
    double car = -1;    ///< CAR from the manifest, -1 when unlabelled
    int changed = -1;   ///< image-level label: the `changed` column, else CAR > 0 of a labelled tile; -1 unknown
};

/// Random augmentations applied identically to both dates and the label.
struct AugmentOptions {
    bool flips = true;       ///< random horizontal and vertical flips
    bool rot90 = true;       ///< random multiples of 90 degrees
    bool swap_dates = true;  ///< swap date 1 and date 2 (the change label is symmetric)
    int crop = 0;            ///< random crop of this size, 0 = whole tile
};

/// One date of every sample degraded before normalisation (HiCD, and training directly on
/// degraded pairs): geo::degrade_image with the spec, seeded per sample from the sample's
/// generator (a copy: the augmentation draws the same as without it). Validation loaders
/// draw the same seed for a tile every epoch, so validation sees fixed degradations.
struct TileDegradation {
    std::string spec;         ///< geo::DegradeSpec text ("res=4", "blur=1.5,noise=10", "random"); empty = off
    std::string date = "2";   ///< the date degraded: 2, 1, or any (one drawn per sample)
    bool keep_clean = false;  ///< keep the clean pair too (Sample::pre_clean, post_clean), for a teacher
};

/// Throws ConfigError for a bad spec (naming the term) or a date other than 1, 2, any.
void validate(const TileDegradation& degradation);

/// A training sample.
struct Sample {
    torch::Tensor pre;    ///< [C, H, W] float, normalised
    torch::Tensor post;   ///< [C, H, W] float, normalised
    torch::Tensor label;  ///< [H, W] int64: 0, 1, 255 = ignored
    torch::Tensor valid;  ///< [H, W] bool: both dates hold data (augmented like the label)
    double car = 0;       ///< CAR of the (augmented, cropped) label over valid pixels; 0 if none
    std::string id;       ///< tile id
    int changed = -1;     ///< image-level label of the tile (TileRecord::changed)
    bool pixel_labelled = false;  ///< whether the tile has a pixel label (else `label` is all 255)
    torch::Tensor pre_clean;   ///< with TileDegradation::keep_clean: date 1 undegraded, same augmentation
    torch::Tensor post_clean;  ///< the same for date 2
};

/// Stack samples into a batch; smaller samples (scene-edge tiles) are padded to the largest
/// with 0 inputs, ignored (255) labels and invalid pixels.
Batch collate(std::vector<Sample> samples);

/// Tiles of a manifest read through lib/geo, normalised, optionally augmented.
class TileDataset {
public:
    /// Open a manifest (tiles.csv or a cd-partition manifest). With per-scene
    /// standardisation (norm.scene), each scene's statistics come from the tile set's
    /// dataset.json (cd-tile records them); a scene without them is a ConfigError.
    TileDataset(const std::string& manifest, Normalization norm);
    /// Number of tiles.
    size_t size() const { return records_.size(); }
    /// Band count (from dataset.json).
    int bands() const { return bands_; }
    /// The manifest's rows.
    const std::vector<TileRecord>& records() const { return records_; }
    /// The manifest as read (all its columns, paths as written).
    const CsvTable& table() const { return table_; }
    /// Degrade one date of every sample from now on (an empty spec turns it off).
    void set_degradation(const TileDegradation& degradation);
    /// The degradation in force.
    const TileDegradation& degradation() const { return degradation_; }
    /// Read tile i; augment with `rng` when `augment` is given.
    Sample get(size_t i, const std::optional<AugmentOptions>& augment, std::mt19937_64& rng) const;

private:
    std::string manifest_;
    CsvTable table_;
    std::vector<TileRecord> records_;
    Normalization norm_;
    int bands_ = 0;
    // Per-scene standardisation: each record's scene's dates' normalisation.
    std::vector<std::pair<Normalization, Normalization>> scene_norms_;
    std::vector<size_t> record_scene_;  // index into scene_norms_ per record
    TileDegradation degradation_;
    std::optional<geo::DegradeSpec> degrade_;  // parsed degradation_.spec
};

/// Batches of a dataset assembled by worker threads ahead of the consumer.
class BatchLoader {
public:
    /// One epoch over `dataset`: shuffled with `seed` when `shuffle`, augmented when given.
    BatchLoader(const TileDataset& dataset, int batch_size, bool shuffle,
                std::optional<AugmentOptions> augment, uint64_t seed, int workers,
                bool drop_last = false);
    ~BatchLoader();
    BatchLoader(const BatchLoader&) = delete;
    BatchLoader& operator=(const BatchLoader&) = delete;
    /// The next batch in order, or nullopt at the end of the epoch.
    std::optional<Batch> next();
    /// Number of batches in the epoch.
    size_t batches() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace cdk::pipeline
