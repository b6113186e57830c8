#include "cdk/geo/quicklook.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/geo/stats.hpp"

namespace cdk::geo {

namespace {

// The band (1-based) named one of `names` (a description "Red", a file "..._B04.tif"), or 0.
int band_named(const std::vector<std::string>& band_names, const std::vector<std::string>& names) {
    for (size_t b = 0; b < band_names.size(); ++b)
        for (const auto& want : names)
            if (same_band_name(band_names[b], want)) return static_cast<int>(b) + 1;
    return 0;
}

}  // namespace

void check_quicklook_path(const std::string& quicklook, const std::string& map) {
    const auto dot = quicklook.rfind('.');
    if (dot == std::string::npos || to_lower(quicklook.substr(dot)) != ".png")
        throw ConfigError("--quicklook " + quote(quicklook) + ": a quick look is a PNG picture; name it .png");
    if (quicklook == map) throw ConfigError("--quicklook and --out name the same file " + quote(map));
}

std::vector<int> quicklook_bands(const Scene& image, const std::vector<int>& asked) {
    const int n = image.band_count();
    if (!asked.empty()) {
        if (asked.size() != 1 && asked.size() != 3)
            throw ConfigError("--quicklook-bands takes one band (grey) or three (red, green, blue), not " +
                              std::to_string(asked.size()));
        for (int b : asked)
            if (b < 1 || b > n)
                throw ConfigError("--quicklook-bands: band " + std::to_string(b) + " is not among the " +
                                  std::to_string(n) + " bands of " + quote(image.name()));
        return asked;
    }
    if (n < 3) return {1};
    const auto& names = image.band_names();
    int r = band_named(names, {"red"}), g = band_named(names, {"green"}), b = band_named(names, {"blue"});
    if (r && g && b) return {r, g, b};
    if (n >= 10) {  // a Sentinel-2 stack
        r = band_named(names, {"b04", "b4"});
        g = band_named(names, {"b03", "b3"});
        b = band_named(names, {"b02", "b2"});
        if (r && g && b) return {r, g, b};
    }
    return {1, 2, 3};
}

nlohmann::json write_quicklook(const Scene& image, const std::string& mask_path, const QuicklookOptions& o,
                               const RunContext& ctx) {
    if (o.max_size < 16) throw ConfigError("--quicklook-size must be at least 16 pixels");
    const std::vector<int> bands = quicklook_bands(image, o.bands);
    const Grid& grid = image.grid();
    const double f = std::max(1.0, static_cast<double>(std::max(grid.width, grid.height)) / o.max_size);
    const int W = std::max(1, static_cast<int>(std::lround(grid.width / f)));
    const int H = std::max(1, static_cast<int>(std::lround(grid.height / f)));
    const size_t n = static_cast<size_t>(W) * H;

    // The image, decimated; each shown band stretched between its 2nd and 98th percentiles.
    const Block img = image.read_decimated(Window{0, 0, grid.width, grid.height}, W, H);
    std::vector<uint8_t> finite = img.valid;  // a NaN in a shown band stretches nothing
    for (int b : bands)
        for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x)
                if (!std::isfinite(img.value(b - 1, x, y))) finite[static_cast<size_t>(y) * W + x] = 0;
    std::vector<BandStatistics> stats(static_cast<size_t>(img.bands), BandStatistics(img.type));
    accumulate_block(stats, img, Window{0, 0, W, H}, finite.data());
    std::vector<uint8_t> rgb(3 * n, 0);
    for (size_t c = 0; c < 3; ++c) {
        const int band = bands[bands.size() == 1 ? 0 : c] - 1;
        const double lo = stats[size_t(band)].percentile(2), hi = stats[size_t(band)].percentile(98);
        const double scale = hi > lo ? 255.0 / (hi - lo) : 0.0;
        for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x)
                rgb[c * n + static_cast<size_t>(y) * W + x] = static_cast<uint8_t>(
                    std::clamp((img.value(band, x, y) - lo) * scale, 0.0, 255.0) + 0.5);
    }

    // The mask, read in strips at full resolution: a picture pixel counts the changed and the
    // nodata pixels under it.
    DatasetPtr mask = open_raster(mask_path);
    if (mask->GetRasterXSize() != grid.width || mask->GetRasterYSize() != grid.height)
        throw ConfigError("quick look: the mask " + quote(mask_path) + " is not on the image's grid");
    std::vector<uint32_t> changed(n, 0), nodata(n, 0), count(n, 0);
    std::vector<uint8_t> row;
    const int strip = std::max(1, static_cast<int>((8 << 20) / std::max(1, grid.width)));
    for (int y0 = 0; y0 < grid.height; y0 += strip) {
        const int h = std::min(strip, grid.height - y0);
        row.resize(static_cast<size_t>(grid.width) * h);
        CPLErrorReset();
        if (mask->GetRasterBand(1)->RasterIO(GF_Read, 0, y0, grid.width, h, row.data(), grid.width, h, GDT_Byte, 0,
                                             0) != CE_None)
            throw IoError("cannot read " + quote(mask_path) + ": " + gdal_message());
        for (int y = 0; y < h; ++y) {
            const int py = std::min(H - 1, static_cast<int>((y0 + y) / f));
            const uint8_t* r = row.data() + static_cast<size_t>(y) * grid.width;
            for (int x = 0; x < grid.width; ++x) {
                const size_t i = static_cast<size_t>(py) * W + std::min(W - 1, static_cast<int>(x / f));
                ++count[i];
                if (r[x] == 1) ++changed[i];
                else if (r[x] != 0) ++nodata[i];
            }
        }
        ctx.progress(static_cast<double>(y0 + h) / grid.height, "quick look");
    }
    long long changed_px = 0;
    for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
            const size_t i = static_cast<size_t>(y) * W + x;
            if (changed[i]) {
                ++changed_px;  // red over the image, strong enough to read on any background
                const uint8_t red[3] = {255, 20, 20};
                for (int c = 0; c < 3; ++c) rgb[c * n + i] = static_cast<uint8_t>(0.3 * rgb[c * n + i] + 0.7 * red[c]);
            } else if (nodata[i] == count[i] || !img.valid[i]) {
                const uint8_t g = ((x / 4 + y / 4) % 2) ? 96 : 64;  // a grey checker: no data
                for (int c = 0; c < 3; ++c) rgb[c * n + i] = g;
            }
        }

    Grid pg = grid;
    pg.width = W;
    pg.height = H;
    pg.geotransform[1] *= static_cast<double>(grid.width) / W;
    pg.geotransform[2] *= static_cast<double>(grid.height) / H;
    pg.geotransform[4] *= static_cast<double>(grid.width) / W;
    pg.geotransform[5] *= static_cast<double>(grid.height) / H;
    WriteOptions wo;
    wo.format = "PNG";
    wo.overwrite = o.overwrite;
    RasterWriter out(o.out, pg, 3, GDT_Byte, wo);
    const GDALColorInterp ci[3] = {GCI_RedBand, GCI_GreenBand, GCI_BlueBand};
    for (int c = 0; c < 3; ++c) out.dataset().GetRasterBand(c + 1)->SetColorInterpretation(ci[c]);
    out.write_all(Window{0, 0, W, H}, rgb.data(), GDT_Byte);
    out.commit();
    return {{"path", o.out}, {"width", W}, {"height", H}, {"bands", bands}, {"changed_pixels", changed_px}};
}

}  // namespace cdk::geo
