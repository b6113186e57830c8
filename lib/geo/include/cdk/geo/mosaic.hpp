#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/geo/raster.hpp"

namespace cdk::geo {

/// Options of cd-mosaic.
struct MosaicOptions {
    std::vector<std::string> inputs;  ///< change masks (Byte: 0, 1, 255 nodata) or change probabilities (Float32), not mixed
    std::string out;                  ///< the mosaic raster
    std::string crs;                  ///< target CRS as GDAL reads it (EPSG:32633, WKT, PROJ string); empty = the first input's
    double resolution = 0;            ///< target pixel size in the target CRS's units; 0 = the first input's, carried into that CRS
    std::string rule = "max";         ///< where inputs overlap: max (change wins / highest probability), first, last (order given)
    std::string polygons;             ///< optional GeoPackage of the mosaic's change regions (masks only)
    double min_area_m2 = 0;           ///< leave out smaller regions from the polygons
    int min_pixels = 0;               ///< and regions of fewer pixels than this
    int strip_rows = 256;             ///< rows combined at a time
    WriteOptions write;               ///< format, creation options, overwrite
};

/// Cross-option checks.
void validate(const MosaicOptions& options);

/// Mosaic change rasters: each input is warped (nearest neighbour for masks, bilinear for
/// probabilities) onto one grid covering the union of their footprints in the target CRS,
/// strip by strip, and overlaps are resolved by `rule`; a pixel no input covers with data
/// is nodata (255, or -1 for probabilities). Masks get a colour table and a QGIS style.
/// Returns {"out", "width", "height", "epsg", "rule", "inputs": [{"path", "changed_pixels",
/// "changed_area_m2"}], "changed_pixels", "changed_area_m2", "polygons"}: per input its
/// change on the mosaic grid, in total the mosaic's.
nlohmann::json mosaic(const MosaicOptions& options, const RunContext& ctx = {});

}  // namespace cdk::geo
