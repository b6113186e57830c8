#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/geo/scene.hpp"

namespace cdk::geo {

/// One scene pair to process: a name and the two dates (and maybe a label).
struct PairJob {
    std::string scene;  ///< name used in manifests and tile names
    SceneSpec pre;      ///< date 1
    SceneSpec post;     ///< date 2
    std::string label;  ///< label raster path, empty when unlabelled
};

/// Read a pairs CSV with columns scene,pre,post[,label] (paths relative to the CSV; `;`
/// separates band files; a folder with `band_pattern` selects band files).
std::vector<PairJob> read_pairs_csv(const std::string& path, const std::string& band_pattern = "",
                                    const std::vector<int>& bands = {});

/// Pairs of a folder dataset A/ B/ [label/] with matching file names (LEVIR-CD layout).
std::vector<PairJob> folder_pairs(const std::string& dir, const std::vector<int>& bands = {});

/// Options of cd-tile.
struct TileOptions {
    std::string pre;                 ///< date 1 of a single scene
    std::string post;                ///< date 2 of a single scene
    std::string label;               ///< label of a single scene (optional)
    std::string scene_name = "scene";  ///< name of the single scene in the manifest
    std::string pairs;               ///< CSV of many scenes: scene,pre,post[,label]
    std::string folder;              ///< folder dataset with A/ B/ [label/]
    std::string out;                 ///< output folder (created; must not exist unless overwriting)
    std::string band_pattern;        ///< band file globs when a date is a folder ("B04,B03,B02")
    std::vector<int> bands;          ///< 1-based band selection applied to both dates
    int tile_size = 256;             ///< tile edge in pixels
    int overlap = 0;                 ///< pixels shared by neighbouring tiles
    double min_valid = 0.5;          ///< skip tiles with a smaller fraction of valid pixels
    long long min_changed_pixels = 1;  ///< image-level label: changed = at least this many changed valid pixels
    std::string tile_labels;         ///< CSV id,changed giving tiles' image-level labels by hand (wins over the label's)
    PairOptions pair;                ///< alignment, resampling and nodata
    /// Tile format and creation options; overwrite. Tiles are written uncompressed (not
    /// `compact`): small, and read every epoch.
    WriteOptions write = [] {
        WriteOptions w;
        w.compact = false;
        return w;
    }();
    int threads = 1;                 ///< tile-writing threads, 0 = one per core (1 measured fastest on 2 cores)
};

/// Cross-option checks: exactly one input form, sizes and fractions in range.
void validate(const TileOptions& options);

/// The pair jobs the options describe (single scene, pairs CSV or folder dataset).
std::vector<PairJob> pair_jobs(const TileOptions& options);

/// Cut scene pairs into tiles: OUT/A, OUT/B, OUT/label GeoTIFF tiles, OUT/tiles.csv and
/// OUT/dataset.json. tiles.csv's `changed` column is each tile's image-level label: 1 when
/// its label has at least min_changed_pixels changed valid pixels, else 0, or the value
/// tile_labels gives (empty when neither says). The folder appears only when complete. Returns the JSON summary.
nlohmann::json tile_scenes(const TileOptions& options, const RunContext& ctx = {});

}  // namespace cdk::geo
