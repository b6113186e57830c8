#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "cdk/core/context.hpp"
#include "cdk/geo/quicklook.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/geo/scene.hpp"

namespace cdk::geo {

/// Options of cd-cva: change vector analysis of a scene pair, a classical baseline.
struct CvaOptions {
    std::string pre;   ///< date 1 (SceneSpec text: a raster, or band files separated by ';')
    std::string post;  ///< date 2, same forms as `pre`
    std::string out;   ///< output change mask (UInt8: 0, 1, 255 = nodata)
    std::optional<double> threshold;  ///< magnitude threshold; empty = Otsu's automatic threshold
    PairOptions pair;                 ///< alignment of date 2, resampling, nodata override
    WriteOptions write;               ///< output format, creation options, overwrite
    QuicklookOptions quicklook;       ///< a quick-look PNG of date 2 with the changes (out empty: none)
    int block_rows = 256;             ///< rows read and written at a time
    int sample_limit =
        1000000;  ///< at most this many pixels (a regular grid) feed Otsu's histogram
};

/// Cross-option checks: inputs and output given, threshold finite and >= 0, block size,
/// write options.
void validate(const CvaOptions& options);

/// Threshold of a histogram by Otsu's method (maximum between-class variance): the index of
/// the first bin of the upper class. Returns 0 for an empty or single-valued histogram.
size_t otsu_threshold(const std::vector<double>& histogram);

/// Change vector analysis: each band of each date standardised by its own mean and
/// standard deviation over the pair's valid pixels; a pixel changed where the magnitude of
/// the difference vector exceeds the threshold. Streams the pair in strips twice (statistics,
/// then the mask). Writes a UInt8 mask on date 1's grid (0/1, 255 where either date is
/// nodata, colour table). Returns the JSON summary.
nlohmann::json change_vector_analysis(const CvaOptions& options, const RunContext& ctx = {});

}  // namespace cdk::geo
