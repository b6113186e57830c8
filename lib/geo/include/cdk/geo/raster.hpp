#pragma once

#include <gdal_priv.h>

#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cdk/core/fs.hpp"

namespace cdk::geo {

/// Shared, reference-counted GDAL dataset (GDAL's own counter: warped VRTs hold references
/// to their sources, so datasets are released, never deleted behind a VRT's back).
using DatasetPtr = std::shared_ptr<GDALDataset>;

/// Calls GDALAllRegister once; every entry point of lib/geo calls it.
void ensure_gdal_registered();

/// GDAL's last error message, or "unknown GDAL error" when it left none.
std::string gdal_message();

/// Open a raster read-only; throws IoError "cannot open raster 'p': <GDAL message>".
DatasetPtr open_raster(const std::string& path);

/// Wrap a dataset pointer the caller owns one reference of.
DatasetPtr adopt_dataset(GDALDataset* ds);

/// A pixel rectangle: column/row offset and size.
struct Window {
    int x = 0;       ///< first column
    int y = 0;       ///< first row
    int width = 0;   ///< columns
    int height = 0;  ///< rows
    /// Number of pixels.
    long long pixels() const { return static_cast<long long>(width) * height; }
    bool operator==(const Window& o) const {
        return x == o.x && y == o.y && width == o.width && height == o.height;
    }
};

/// Size and georeferencing of a raster.
struct Grid {
    int width = 0;                                ///< columns
    int height = 0;                               ///< rows
    std::array<double, 6> geotransform{0, 1, 0, 0, 0, 1};  ///< GDAL geotransform
    bool has_geotransform = false;                ///< false for plain images (PNG ...)
    std::string crs_wkt;                          ///< WKT of the CRS, empty when none

    /// The grid of a window of this grid (same CRS, shifted origin).
    Grid sub(const Window& w) const;
    /// Whether both grids have the same size, CRS and geotransform (within 1e-6 pixel).
    bool same_as(const Grid& o) const;
    /// Whether the CRS of both grids is the same (both empty counts as the same).
    bool same_crs(const Grid& o) const;
    /// Geographic extent (xmin, ymin, xmax, ymax) in the grid's CRS.
    std::array<double, 4> extent() const;
    /// Readable description for messages: "795x782, EPSG:4326, pixel 8.98e-05".
    std::string describe() const;
};

/// The grid of a dataset.
Grid grid_of(GDALDataset& ds);

/// EPSG code of a WKT CRS, or 0 when it has none.
int epsg_of(const std::string& wkt);

/// WKT2 of an EPSG code; throws ConfigError for an unknown code.
std::string wkt_of_epsg(int epsg);

/// Area of one pixel in square metres, 0 if unknown: the plane area in a projected CRS that
/// keeps area within 2 % at the scene centre (UTM, national grids, equal-area), else (lon/lat,
/// Mercator away from the equator) the ground area of the centre pixel on the ellipsoid.
double pixel_area_m2(const Grid& grid);

/// Data type from a name ("UInt16"); throws ConfigError for unknown names.
GDALDataType parse_data_type(const std::string& name);

/// Options for writing a raster, as in gdal_translate (-of, -co).
struct WriteOptions {
    /// GDAL driver: GTiff, COG or PNG; empty = from the output's extension as GDAL's own
    /// programs do (.tif/.tiff GTiff, .png PNG, none GTiff; another is refused).
    std::string format;
    std::vector<std::string> creation_options;  ///< KEY=VALUE pairs passed to the driver
    bool overwrite = false;                      ///< replace an existing output
    /// A GeoTIFF that a GIS keeps: tiled and DEFLATE-compressed (with the horizontal
    /// predictor for integer data wider than 8 bits, the floating-point one for floats)
    /// unless --co sets TILED, COMPRESS or PREDICTOR itself. Off for training tiles, which
    /// are small and read every epoch.
    bool compact = true;
    /// Metadata items (KEY=VALUE, default domain) of this output, after the process-wide
    /// provenance (set_provenance).
    std::vector<std::pair<std::string, std::string>> metadata;
    /// Write a plain tiled GeoTIFF first and copy it into the format at commit() (always so
    /// for COG). For writers that fill the raster out of block order (column strips): a
    /// compressed block written twice would otherwise leave its first copy as dead space.
    bool stage = false;
};

/// Set the most GDAL keeps in its block cache, unless the user set GDAL_CACHEMAX (which
/// wins). Returns the cache size in effect.
long long set_block_cache(long long bytes);

/// Check a driver name and its creation options before any work starts; with `path`, also
/// that the format can be guessed from its extension and agrees with it.
void validate(const WriteOptions& options, const std::string& path = "");

/// The GDAL driver that writes `path`: options.format, or the one its extension names.
/// ConfigError for an extension cdkit cannot write ("cannot guess the output format of
/// 'x.foo' …") or a format at odds with the extension.
std::string output_format(const WriteOptions& options, const std::string& path);

/// The creation options a raster of `type` gets: the user's, and for GTiff with `compact`
/// the defaults they do not set (TILED=YES, COMPRESS=DEFLATE, PREDICTOR=2|3).
std::vector<std::string> creation_options_for(const WriteOptions& options, const std::string& format,
                                              GDALDataType type);

/// Metadata every raster this process writes carries (CDK_VERSION, CDK_COMMAND ... and
/// TIFFTAG_SOFTWARE): where it came from, for whoever opens it later.
void set_provenance(std::vector<std::pair<std::string, std::string>> items);

/// A raster being written: it exists under a temporary name until commit(), which
/// flushes, closes (a failed close is an error) and renames. Destroying an uncommitted
/// writer removes the temporary file.
class RasterWriter {
public:
    /// Create `path` with `bands` bands of `type` on `grid`.
    RasterWriter(const std::string& path, const Grid& grid, int bands, GDALDataType type,
                 const WriteOptions& options, std::optional<double> nodata = std::nullopt);
    ~RasterWriter();
    RasterWriter(const RasterWriter&) = delete;
    RasterWriter& operator=(const RasterWriter&) = delete;

    /// Write one band's window from a buffer of `buf_type` (row-major, window-sized).
    void write(int band, const Window& w, const void* data, GDALDataType buf_type);
    /// Write all bands of a window from a band-sequential buffer.
    void write_all(const Window& w, const void* data, GDALDataType buf_type);
    /// The dataset being written (to set colour tables, descriptions ...).
    GDALDataset& dataset() { return *ds_; }
    /// Finish: build the final format, close, rename into place.
    void commit();
    /// Build the final format and close, but keep the temporary name: returns that
    /// complete file, for a step that reads it before commit() publishes it (the polygons
    /// of a mask, say, so that the mask appears only with them). No write() after this.
    const std::string& close();

private:
    bool staged() const { return options_.stage || format_ != "GTiff"; }

    std::string path_;
    WriteOptions options_;
    std::string format_;                    ///< the driver of the output
    std::vector<std::string> final_co_;     ///< its creation options
    AtomicPath out_;
    std::string work_path_;
    GDALDataset* ds_ = nullptr;
};

/// Give band 1 of a change mask the colour table 0 = grey, 1 = red, 255 = transparent.
void set_change_colour_table(GDALRasterBand& band);

/// Path of the QGIS style QGIS loads by default for a raster: "change.tif" -> "change.qml".
std::string style_path_for(const std::string& raster_path);

/// Write the QGIS style of a change mask (paletted: 0 no change, 1 change; 255 is the
/// raster's nodata) beside `raster_path`, atomically.
void write_change_style(const std::string& raster_path, bool overwrite = true);

}  // namespace cdk::geo
