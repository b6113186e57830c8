#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/geo/raster.hpp"

namespace cdk::geo {

// Synthetic image degradation (HiCD: a lower-quality copy of one date). The operations and
// their exact formulas are in docs/cd-degrade.md; the order is fixed: haze, blur, res,
// noise, jpeg (atmosphere, optics, sampling, sensor, compression).

/// Gaussian blur: sigma along the kernel's own x and y axes, the x axis turned `angle`
/// degrees clockwise from the image's columns (y points down).
struct BlurSpec {
    double sigma_x = 1;  ///< sigma along the rotated x axis, pixels (> 0)
    double sigma_y = 1;  ///< sigma along the rotated y axis, pixels (> 0)
    double angle = 0;    ///< rotation in degrees
};

/// Additive Gaussian noise.
struct NoiseSpec {
    double sigma = 0;       ///< standard deviation in the data's units, or a percentage
    bool relative = false;  ///< sigma is a percentage of each band's white level
};

/// Haze veil I·t + A·(1 − t).
struct HazeSpec {
    double transmission = 1;         ///< t in (0, 1]
    std::optional<double> airlight;  ///< A for every band; empty = each band's white level
};

/// A degradation: the operations to apply, or `random` (drawn per call from a seed).
struct DegradeSpec {
    std::optional<HazeSpec> haze;    ///< haze=T[:A]
    std::optional<BlurSpec> blur;    ///< blur=S or blur=SXxSY[@ANGLE]
    int res = 1;                     ///< res=F: integer down-sampling factor, 1 = off
    std::optional<NoiseSpec> noise;  ///< noise=S or noise=P%
    int jpeg = 0;                    ///< jpeg=Q: JPEG quality 1..100, 0 = off
    bool random = false;             ///< the random mix (docs/cd-degrade.md)

    /// Parse "blur=1.5,noise=10,jpeg=40", "random" or "none"; throws a one-line ConfigError
    /// naming the bad term.
    static DegradeSpec parse(const std::string& text);
    /// Canonical text that parse() reads back ("none" when nothing is applied).
    std::string text() const;
    /// The concrete operations of one call: this spec, or for `random` a draw from `seed`.
    DegradeSpec draw(uint64_t seed) const;
    /// Pixels of context a window needs on each side for an exact result (blur and res).
    int halo() const;
};

/// Statistics of one band over its valid pixels (they fix data-dependent defaults).
struct BandLevels {
    double mean = 0;   ///< fills nodata pixels before filtering
    double min = 0;    ///< lower end of the 8-bit rescale for JPEG of non-8-bit data
    double max = 0;    ///< upper end of that rescale
    double white = 0;  ///< 99th percentile: default airlight, base of relative noise
};

/// Levels of each band of a band-major float image; `valid` may be null (all valid). The
/// percentile is the order statistic of rank floor(0.99 · (n − 1)).
std::vector<BandLevels> image_levels(const float* image, const uint8_t* valid, int bands,
                                     int height, int width);

/// The values a data type holds, for clipping and rounding.
struct ValueRange {
    double lo = 0;         ///< smallest value
    double hi = 255;       ///< largest value
    bool integer = true;   ///< round results to integers
    /// The range of a GDAL data type (Byte 0..255, UInt16 0..65535, Float32 ±FLT_MAX ...).
    static ValueRange of(GDALDataType type);
    /// Whether this is the 8-bit range (JPEG without a rescale).
    bool is_byte() const { return integer && lo == 0 && hi == 255; }
};

/// How one in-memory image is degraded.
struct DegradeImageOptions {
    ValueRange range;                ///< clip (and round) the result to this range
    uint64_t seed = 0;               ///< noise field and random draws are functions of it
    std::vector<BandLevels> levels;  ///< per band; empty = computed from the image itself
    int x0 = 0;                      ///< column of the image in its raster (noise field origin)
    int y0 = 0;                      ///< row of the image in its raster
};

/// Degrade a band-major float image [bands, height, width] in place. Nodata pixels
/// (valid == 0; `valid` may be null) are filled with their band's mean for the filters and
/// keep their original values. Cheap enough per 256×256 training tile; no files involved.
void degrade_image(float* image, const uint8_t* valid, int bands, int height, int width,
                   const DegradeSpec& spec, const DegradeImageOptions& options);

/// Options of cd-degrade.
struct DegradeOptions {
    std::string in;        ///< input raster (Byte, UInt16 or Int16)
    std::string out;       ///< output raster: same grid, type, nodata and band descriptions
    std::string spec;      ///< degradation text (DegradeSpec::parse)
    uint64_t seed = 0;     ///< noise field and random draw
    int block = 512;       ///< core window edge in pixels (rounded to the spec's alignment)
    WriteOptions write;    ///< format, creation options, overwrite
};

/// Cross-option checks: input, output and a valid spec given, block size, write options.
void validate(const DegradeOptions& options);

/// Degrade a whole raster window by window (with a halo, so the result equals one
/// degrade_image call on the whole image with the image's own levels and the same seed).
/// Two passes: levels, then windows. Written atomically. Returns the JSON summary.
nlohmann::json degrade_raster(const DegradeOptions& options, const RunContext& ctx = {});

}  // namespace cdk::geo
