#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "cdk/core/context.hpp"

namespace cdk::geo {

/// Options of polygonize_changes.
struct PolygonOptions {
    std::string mask;            ///< change mask: 1 = change (0 no change, 255 nodata)
    std::string prob;            ///< change probability on the mask's grid (empty = no mean_prob)
    std::string out;             ///< GeoPackage to write (layer "changes")
    double min_area_m2 = 0;      ///< drop regions smaller than this (needs a georeferenced mask)
    int min_pixels = 0;          ///< and regions of fewer pixels than this
    bool overwrite = false;      ///< replace an existing output
};

/// Connected change regions (4-connected pixels of value 1) of a mask as polygons in the
/// mask's CRS, one feature each with `id`, `pixels`, `area_m2` (pixel count × the pixel's
/// area, geodesic estimate for geographic CRSs; null without georeferencing) and `mean_prob`
/// (mean change probability of its pixels; null without `prob`). Regions smaller than
/// `min_area_m2` or of fewer than `min_pixels` pixels are left out. The GeoPackage appears only when complete. Holds the mask
/// (1 byte), the region labels (4 bytes) and the probability (4 bytes) per pixel in memory.
/// Returns {"out", "regions", "dropped", "area_m2"}.
nlohmann::json polygonize_changes(const PolygonOptions& options, const RunContext& ctx = {});

}  // namespace cdk::geo
