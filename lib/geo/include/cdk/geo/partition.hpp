#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cdk/core/car.hpp"
#include "cdk/core/csv.hpp"
#include "cdk/core/context.hpp"

namespace cdk::geo {

/// CAR thresholds of the JL1-CD paper: small <= 0.05 < medium <= 0.20 < large.
inline const std::vector<double> kPaperThresholds{0.05, 0.20};

/// Options of cd-partition (Origin-Partition of a tile manifest plus a train/validation split).
struct PartitionOptions {
    std::string manifest;  ///< tiles.csv written by cd-tile (needs car, a, b, label)
    std::string out;       ///< output folder (must not exist unless overwrite)
    std::vector<double> thresholds{0.05, 0.20};  ///< CAR upper bounds, increasing, in (0, 1)
    int quantiles = 0;                           ///< K equal-count partitions; 0 = use thresholds
    double val_fraction = 0.1;  ///< validation share drawn from each partition, in [0, 1)
    /// Scenes (the manifest's `scene` column) whose tiles are all held out for validation,
    /// instead of the per-partition draw: no validation pixel is then also a training pixel.
    std::vector<std::string> val_scenes;
    /// Side in pixels of square blocks of each scene (by tile centre, from the manifest's
    /// scene, x, y, width, height) drawn whole for validation, about val_fraction of each
    /// scene's tiles; the training tiles that overlap a validation tile are left out of every
    /// file. Every scene is then validated on and no validation pixel is a training pixel.
    /// 0 = off (tiles drawn one by one per partition).
    int val_block = 0;
    std::uint64_t seed = 0;     ///< seed of the train/validation draw
    bool overwrite = false;     ///< replace an existing output folder
};

/// Cross-option checks: manifest and out given; thresholds strictly increasing in (0, 1);
/// thresholds and quantiles exclusive (with quantiles > 0, thresholds must be empty or the
/// untouched default, which is then ignored); quantiles 0 or >= 2; val_fraction in [0, 1);
/// val_scenes without empty names, and exclusive with a val_fraction other than the default
/// (which is then ignored) or 0; val_block >= 0, exclusive with val_scenes, and with a
/// val_fraction above 0.
void validate(const PartitionOptions& options);

// The partition rule lives in lib/core so that lib/nn routes samples by the same code.
using cdk::partition_names;
using cdk::partition_of;

/// Thresholds of K equal-count partitions of `cars`: the CAR at each k/K boundary of the
/// sorted list (ties go to the lower partition), duplicates and values >= the largest CAR
/// removed (each removal warned through ctx) so that no partition is empty.
std::vector<double> quantile_thresholds(std::vector<double> cars, int quantiles,
                                        const RunContext& ctx = {});

/// Indices 0 … n-1 in a seeded order that is the same on every platform (Fisher–Yates over
/// std::mt19937_64 with its own bounded draw; std::shuffle's output is implementation-defined).
std::vector<std::size_t> seeded_permutation(std::size_t n, std::uint64_t seed);

/// Split a tile manifest by CAR: OUT/origin.csv (all training tiles), OUT/<partition>.csv
/// (its training tiles), OUT/val.csv (validation tiles drawn per partition, the tiles of
/// val_scenes, or blocks of val_block pixels) and OUT/summary.json. The folder appears only
/// when complete. Returns the JSON summary, which also says how many validation tiles overlap
/// training tiles of their scene and what share of their pixels those cover (`val_overlap`;
/// warned, since validation then flatters).
nlohmann::json partition_tiles(const PartitionOptions& options, const RunContext& ctx = {});

/// How much the tiles of a validation manifest overlap tiles of a training manifest from the
/// same scene (both need cd-tile's scene, x, y, width and height columns, in the scene's pixel
/// grid): {"tiles": validation tiles meeting a training tile, "val_tiles": all of them,
/// "pixel_fraction": share of validation pixels that training tiles cover, null without
/// validation tiles}. null when either manifest lacks a column or a value is not a number.
nlohmann::json tile_overlap(const CsvTable& train, const CsvTable& val);

/// The warning for an overlap report of tile_overlap or partition_tiles (`val_overlap`):
/// "N of M validation tiles[ (VAL_NAME)] overlap training tiles of their scene (X % of their
/// pixels …)" and the remedy; empty when no validation tile overlaps (or overlap is null).
std::string overlap_warning(const nlohmann::json& overlap, const std::string& val_name = "");

}  // namespace cdk::geo
