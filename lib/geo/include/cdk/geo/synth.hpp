#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "cdk/core/context.hpp"
#include "cdk/geo/raster.hpp"

namespace cdk::geo {

/// Options of cd-synth: the size, data type and georeferencing of a synthetic scene pair,
/// and the distractors it carries.
struct SynthOptions {
    std::string out;             ///< output folder (created; must not exist unless overwriting)
    int width = 1024;            ///< columns
    int height = 1024;           ///< rows
    int bands = 4;               ///< bands per date (B, G, R, NIR, SWIR1, SWIR2, then variations)
    std::string type = "UInt8";  ///< data type: UInt8 (values 1..255) or UInt16 (1..10000)
    uint64_t seed = 1;           ///< every pixel is a function of (seed, options, x, y)
    double pixel_size = 10;      ///< pixel edge in metres (north-up grid)
    int epsg = 32633;            ///< EPSG code of the CRS (origin 500000, 5000000)
    int border = 16;             ///< nodata border on date 2's left and top edges; 0 = no nodata
    int misregistration = 1;     ///< integer shift of date 2 in pixels (both axes)
    int strip_height =
        256;             ///< rows generated and written at a time (output does not depend on it)
    int threads = 0;     ///< worker threads, 0 = one per core
    WriteOptions write;  ///< raster format and creation options; overwrite the folder
};

/// Cross-option checks: sizes, band count, data type, EPSG code, border and shift in range.
void validate(const SynthOptions& options);

/// Generate OUT/pre.tif, OUT/post.tif, OUT/label.tif and OUT/truth.json strip by strip
/// (memory does not grow with the scene). The folder appears only when complete.
/// Returns the JSON summary (files, size, changed and valid pixels, CAR, seconds).
nlohmann::json synthesize_pair(const SynthOptions& options, const RunContext& ctx = {});

}  // namespace cdk::geo
