#include "cdk/geo/raster.hpp"

#include <cpl_string.h>
#include <ogr_spatialref.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <sstream>

#include "cdk/core/error.hpp"
#include "gdal_messages.hpp"

namespace cdk::geo {

void ensure_gdal_registered() {
    static std::once_flag once;
    std::call_once(once, [] { GDALAllRegister(); });
}

DatasetPtr adopt_dataset(GDALDataset* ds) {
    return DatasetPtr(ds, [](GDALDataset* d) {
        if (d) d->ReleaseRef();
    });
}

std::string gdal_message() {
    std::string msg = CPLGetLastErrorMsg();
    return msg.empty() ? "unknown GDAL error" : msg;
}

DatasetPtr open_raster(const std::string& path) {
    ensure_gdal_registered();
    CPLErrorReset();
    auto* ds = GDALDataset::Open(path.c_str(), GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR);
    if (!ds) {
        VSIStatBufL st;
        if (path.rfind("/vsi", 0) != 0 && VSIStatL(path.c_str(), &st) != 0)
            throw IoError("cannot open raster " + quote(path) + ": no such file");
        throw IoError("cannot open raster " + quote(path) + ": " + gdal_message());
    }
    if (ds->GetRasterCount() == 0) {
        ds->ReleaseRef();
        throw IoError("cannot open raster " + quote(path) + ": it has no raster bands");
    }
    return adopt_dataset(ds);
}

Grid Grid::sub(const Window& w) const {
    Grid g = *this;
    g.width = w.width;
    g.height = w.height;
    const auto& t = geotransform;
    g.geotransform[0] = t[0] + w.x * t[1] + w.y * t[2];
    g.geotransform[3] = t[3] + w.x * t[4] + w.y * t[5];
    return g;
}

bool Grid::same_crs(const Grid& o) const {
    if (crs_wkt.empty() || o.crs_wkt.empty()) return crs_wkt.empty() == o.crs_wkt.empty();
    if (crs_wkt == o.crs_wkt) return true;
    OGRSpatialReference a, b;
    if (a.importFromWkt(crs_wkt.c_str()) != OGRERR_NONE) return false;
    if (b.importFromWkt(o.crs_wkt.c_str()) != OGRERR_NONE) return false;
    const char* opts[] = {"IGNORE_DATA_AXIS_TO_SRS_AXIS_MAPPING=YES", nullptr};
    return a.IsSame(&b, opts);
}

bool Grid::same_as(const Grid& o) const {
    if (width != o.width || height != o.height) return false;
    if (has_geotransform != o.has_geotransform) return false;
    if (!has_geotransform) return true;
    const double px = std::max(std::abs(geotransform[1]), std::abs(geotransform[5]));
    for (int i = 0; i < 6; ++i)
        if (std::abs(geotransform[i] - o.geotransform[i]) > 1e-6 * px * std::max(1, width))
            return false;
    return same_crs(o);
}

std::array<double, 4> Grid::extent() const {
    const auto& t = geotransform;
    double xs[4], ys[4];
    int k = 0;
    for (int r : {0, height})
        for (int c : {0, width}) {
            xs[k] = t[0] + c * t[1] + r * t[2];
            ys[k] = t[3] + c * t[4] + r * t[5];
            ++k;
        }
    return {*std::min_element(xs, xs + 4), *std::min_element(ys, ys + 4),
            *std::max_element(xs, xs + 4), *std::max_element(ys, ys + 4)};
}

int epsg_of(const std::string& wkt) {
    if (wkt.empty()) return 0;
    OGRSpatialReference s;
    if (s.importFromWkt(wkt.c_str()) != OGRERR_NONE) return 0;
    s.AutoIdentifyEPSG();
    const char* code = s.GetAuthorityCode(nullptr);
    const char* auth = s.GetAuthorityName(nullptr);
    if (code && auth && std::string(auth) == "EPSG") return std::atoi(code);
    return 0;
}

std::string Grid::describe() const {
    std::ostringstream os;
    os.precision(12);  // origins of UTM grids differ in the 7th digit
    os << width << "x" << height;
    if (!has_geotransform) return os.str() + ", no georeferencing";
    int epsg = epsg_of(crs_wkt);
    os << ", " << (epsg ? "EPSG:" + std::to_string(epsg) : crs_wkt.empty() ? "no CRS" : "custom CRS");
    os << ", origin (" << geotransform[0] << ", " << geotransform[3] << "), pixel "
       << geotransform[1] << " x " << geotransform[5];
    return os.str();
}

Grid grid_of(GDALDataset& ds) {
    Grid g;
    g.width = ds.GetRasterXSize();
    g.height = ds.GetRasterYSize();
    double gt[6];
    if (ds.GetGeoTransform(gt) == CE_None) {
        g.has_geotransform = true;
        std::copy(gt, gt + 6, g.geotransform.begin());
    }
    if (const auto* srs = ds.GetSpatialRef()) {
        char* wkt = nullptr;
        const char* opts[] = {"FORMAT=WKT2_2019", nullptr};
        if (srs->exportToWkt(&wkt, opts) == OGRERR_NONE && wkt) g.crs_wkt = wkt;
        CPLFree(wkt);
    }
    return g;
}

std::string wkt_of_epsg(int epsg) {
    OGRSpatialReference srs;
    if (srs.importFromEPSG(epsg) != OGRERR_NONE)
        throw ConfigError("unknown EPSG code " + quote(std::to_string(epsg)));
    char* wkt = nullptr;
    const char* opts[] = {"FORMAT=WKT2_2019", nullptr};
    srs.exportToWkt(&wkt, opts);
    std::string s = wkt ? wkt : "";
    CPLFree(wkt);
    return s;
}

namespace {
// Ground area in m² of a small lon/lat polygon (degrees) on the ellipsoid (a, e²): the
// shoelace formula in local metres at its mean latitude (meridional radius M, prime
// vertical N), exact to second order in the polygon's size — plenty for one pixel.
double ellipsoidal_area_m2(const double* lon, const double* lat, int n, double a, double e2) {
    constexpr double rad = M_PI / 180.0;
    double lat0 = 0;
    for (int i = 0; i < n; ++i) lat0 += lat[i] / n;
    const double s = std::sin(lat0 * rad), w = std::sqrt(1 - e2 * s * s);
    const double N = a / w, M = a * (1 - e2) / (w * w * w), kx = N * std::cos(lat0 * rad) * rad, ky = M * rad;
    double sum = 0;
    for (int i = 0; i < n; ++i) {
        const int j = (i + 1) % n;
        const double xi = (lon[i] - lon[0]) * kx, yi = (lat[i] - lat[0]) * ky;
        const double xj = (lon[j] - lon[0]) * kx, yj = (lat[j] - lat[0]) * ky;
        sum += xi * yj - xj * yi;
    }
    return std::abs(sum) / 2;
}
}  // namespace

double pixel_area_m2(const Grid& grid) {
    if (!grid.has_geotransform || grid.crs_wkt.empty()) return 0;
    OGRSpatialReference s;
    if (s.importFromWkt(grid.crs_wkt.c_str()) != OGRERR_NONE) return 0;
    s.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
    const auto& t = grid.geotransform;
    const double plane = std::abs(t[1] * t[5] - t[2] * t[4]) * s.GetLinearUnits() * s.GetLinearUnits();
    // The corners of the scene's centre pixel, in the CRS, then in its own lon/lat.
    const double cx = std::floor(grid.width / 2.0), cy = std::floor(grid.height / 2.0);
    const double px[4] = {cx, cx + 1, cx + 1, cx}, py[4] = {cy, cy, cy + 1, cy + 1};
    double x[4], y[4];
    for (int i = 0; i < 4; ++i) {
        x[i] = t[0] + px[i] * t[1] + py[i] * t[2];
        y[i] = t[3] + px[i] * t[4] + py[i] * t[5];
    }
    OGRErr err = OGRERR_NONE;
    const double a = s.GetSemiMajor(&err), b = s.GetSemiMinor(&err);
    if (err != OGRERR_NONE || a <= 0) return s.IsGeographic() ? 0 : plane;
    const double e2 = 1 - (b * b) / (a * a);
    if (s.IsGeographic()) return ellipsoidal_area_m2(x, y, 4, a, e2);
    // A projection that does not keep area here (Mercator away from the equator: a Web
    // Mercator pixel covers cos²(lat) of its nominal area) gets the centre pixel's ground
    // area. UTM, national grids and equal-area projections stay within 2 % of it and keep
    // their exact plane area (100 m² for a 10 m pixel).
    std::unique_ptr<OGRSpatialReference> geog(s.CloneGeogCS());
    if (!geog) return plane;
    geog->SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
    std::unique_ptr<OGRCoordinateTransformation> ct(OGRCreateCoordinateTransformation(&s, geog.get()));
    if (!ct || !ct->Transform(4, x, y)) return plane;
    const double ground = ellipsoidal_area_m2(x, y, 4, a, e2);
    return std::abs(ground / plane - 1) > 0.02 ? ground : plane;
}

GDALDataType parse_data_type(const std::string& name) {
    GDALDataType t = GDALGetDataTypeByName(name.c_str());
    if (t == GDT_Unknown) throw ConfigError("unknown data type " + quote(name));
    return t;
}

namespace {

std::vector<std::pair<std::string, std::string>> g_provenance;

bool has_key(const std::vector<std::string>& co, const std::string& key) {
    for (const auto& kv : co)
        if (to_lower(kv.substr(0, kv.find('='))) == to_lower(key)) return true;
    return false;
}

}  // namespace

std::string output_format(const WriteOptions& options, const std::string& path) {
    const std::string ext = to_lower(std::filesystem::path(path).extension().string());
    std::string guessed;
    if (ext == ".tif" || ext == ".tiff") guessed = "GTiff";
    else if (ext == ".png") guessed = "PNG";
    else if (ext == ".jpg" || ext == ".jpeg") guessed = "JPEG";
    if (!options.format.empty()) {
        const bool tiff = options.format == "GTiff" || options.format == "COG";
        if (!guessed.empty() && (guessed == "GTiff") != tiff)
            throw ConfigError("output " + quote(path) + ": --of " + options.format + " does not go with a " + ext +
                              " name");
        return options.format;
    }
    if (ext.empty() || path.empty()) return "GTiff";
    if (guessed.empty())
        throw ConfigError("cannot guess the output format of " + quote(path) + " from its extension " +
                          quote(ext) + ": name it .tif (GeoTIFF) or .png, or give --of GTiff, COG or PNG");
    return guessed;
}

std::vector<std::string> creation_options_for(const WriteOptions& options, const std::string& format,
                                              GDALDataType type) {
    std::vector<std::string> co = options.creation_options;
    if (format != "GTiff" || !options.compact) return co;
    if (!has_key(co, "TILED")) co.push_back("TILED=YES");
    if (!has_key(co, "COMPRESS")) {
        co.push_back("COMPRESS=DEFLATE");
        // A 2048² synthetic scene: a UInt16 image 25.4 MB with DEFLATE alone, 19.3 MB with the
        // horizontal predictor; a Byte change mask 99 KB alone, 110 KB with it.
        if (!has_key(co, "PREDICTOR")) {
            if (GDALDataTypeIsFloating(type)) co.push_back("PREDICTOR=3");
            else if (GDALGetDataTypeSizeBits(type) > 8) co.push_back("PREDICTOR=2");
        }
    }
    return co;
}

void set_provenance(std::vector<std::pair<std::string, std::string>> items) { g_provenance = std::move(items); }

void validate(const WriteOptions& options, const std::string& path) {
    ensure_gdal_registered();
    const std::string format = output_format(options, path);
    if (format == "JPEG")
        throw ConfigError("output " + quote(path) +
                          ": JPEG is lossy and would change the values written (a map's classes, an image's "
                          "radiometry); use .tif or .png");
    if (format != "GTiff" && format != "COG" && format != "PNG")
        throw ConfigError("output format " + quote(format) + " is not supported (use GTiff, COG or PNG)");
    for (const auto& co : options.creation_options)
        if (co.find('=') == std::string::npos || co.front() == '=')
            throw ConfigError("creation option " + quote(co) + " is not of the form KEY=VALUE");
    if (options.creation_options.empty()) return;
    // GDAL only warns about an option it does not know, or a value outside an option's list,
    // and then ignores it: the user asked for something they would not get, so it is an error
    // here (--co COMPRESS=BOGUS). Its other complaints (a number outside the advised range,
    // as COG's BLOCKSIZE below 128) are advice the driver does not enforce: let through.
    auto* driver = GetGDALDriverManager()->GetDriverByName(format.c_str());
    if (!driver) return;  // a missing COG driver is reported when the file is written
    CPLStringList co;
    for (const auto& kv : options.creation_options) co.AddString(kv.c_str());
    std::string complaints;
    {
        const GdalMessages gdal_messages;
        GDALValidateCreationOptions(driver, co.List());
        for (const auto& m : gdal_messages.all())
            if (m.text.find("does not support") != std::string::npos || m.text.find("string-select") != std::string::npos)
                complaints += (complaints.empty() ? "" : "; ") + m.text;
    }
    if (!complaints.empty())
        throw ConfigError("--co refused (GDAL's " + format + " driver would ignore it): " + complaints);
}

long long set_block_cache(long long bytes) {
    if (!CPLGetConfigOption("GDAL_CACHEMAX", nullptr)) GDALSetCacheMax64(bytes);
    return GDALGetCacheMax64();
}

RasterWriter::RasterWriter(const std::string& path, const Grid& grid, int bands, GDALDataType type,
                           const WriteOptions& options, std::optional<double> nodata)
    : path_(path), options_(options), out_(path, options.overwrite) {
    validate(options, path);
    format_ = output_format(options, path);
    final_co_ = creation_options_for(options, format_, type);
    if (format_ == "PNG" && type != GDT_Byte && type != GDT_UInt16)
        throw ConfigError("output " + quote(path) + ": PNG cannot hold " + GDALGetDataTypeName(type) +
                          " data (only Byte and UInt16); use .tif");
    if (format_ == "PNG" && bands > 4)
        throw ConfigError("output " + quote(path) + ": PNG cannot hold " + std::to_string(bands) +
                          " bands (at most 4); use .tif");
    CPLStringList co;
    // COG and PNG cannot be created directly: write a plain tiled GeoTIFF, then CreateCopy at
    // commit().
    if (staged()) {
        work_path_ = out_.temp() + ".work.tif";
        co.SetNameValue("TILED", "YES");
    } else {
        work_path_ = out_.temp();
        for (const auto& kv : final_co_) co.AddString(kv.c_str());
    }
    auto* drv = GetGDALDriverManager()->GetDriverByName("GTiff");
    CPLErrorReset();
    ds_ = drv->Create(work_path_.c_str(), grid.width, grid.height, bands, type, co.List());
    if (!ds_) throw IoError("cannot create " + quote(path) + ": " + gdal_message());
    if (grid.has_geotransform) {
        double gt[6];
        std::copy(grid.geotransform.begin(), grid.geotransform.end(), gt);
        ds_->SetGeoTransform(gt);
    }
    if (!grid.crs_wkt.empty()) {
        // Parsing WKT through PROJ costs about a millisecond: tiling writes thousands of
        // files on one CRS, so keep the last one parsed per thread.
        thread_local std::string last_wkt;
        thread_local OGRSpatialReference last_srs;
        if (last_wkt != grid.crs_wkt) {
            last_srs.Clear();
            if (last_srs.importFromWkt(grid.crs_wkt.c_str()) != OGRERR_NONE)
                throw ConfigError("cannot parse the CRS of " + quote(path));
            last_wkt = grid.crs_wkt;
        }
        ds_->SetSpatialRef(&last_srs);
    }
    if (nodata)
        for (int b = 1; b <= bands; ++b) ds_->GetRasterBand(b)->SetNoDataValue(*nodata);
    for (const auto& [k, v] : g_provenance) ds_->SetMetadataItem(k.c_str(), v.c_str());
    for (const auto& [k, v] : options.metadata) ds_->SetMetadataItem(k.c_str(), v.c_str());
}

RasterWriter::~RasterWriter() {
    if (ds_) {
        GDALClose(ds_);
        ds_ = nullptr;
    }
    if (work_path_ != out_.temp()) VSIUnlink(work_path_.c_str());
    VSIUnlink((out_.temp() + ".aux.xml").c_str());  // a PNG's georeferencing, unpublished
}

void RasterWriter::write(int band, const Window& w, const void* data, GDALDataType buf_type) {
    CPLErrorReset();
    if (ds_->GetRasterBand(band)->RasterIO(GF_Write, w.x, w.y, w.width, w.height,
                                            const_cast<void*>(data), w.width, w.height, buf_type,
                                            0, 0) != CE_None)
        throw IoError("cannot write " + quote(path_) + ": " + gdal_message());
}

void RasterWriter::write_all(const Window& w, const void* data, GDALDataType buf_type) {
    CPLErrorReset();
    const int n = ds_->GetRasterCount();
    if (ds_->RasterIO(GF_Write, w.x, w.y, w.width, w.height, const_cast<void*>(data), w.width,
                      w.height, buf_type, n, nullptr, 0, 0, 0, nullptr) != CE_None)
        throw IoError("cannot write " + quote(path_) + ": " + gdal_message());
}

void RasterWriter::commit() {
    close();
    // A PNG keeps its georeferencing, nodata and metadata in NAME.aux.xml beside it (GDAL's
    // PAM): published first, so that the picture never appears without them.
    const std::string aux = out_.temp() + ".aux.xml";
    VSIStatBufL st;
    if (VSIStatL(aux.c_str(), &st) == 0) {
        if (VSIRename(aux.c_str(), (path_ + ".aux.xml").c_str()) != 0)
            throw IoError("cannot publish " + quote(path_ + ".aux.xml") + ": " + std::strerror(errno));
    } else if (format_ != "GTiff" && format_ != "COG") {
        VSIUnlink((path_ + ".aux.xml").c_str());  // an older output's, which no longer applies
    }
    out_.commit();
}

const std::string& RasterWriter::close() {
    if (!ds_) return out_.temp();
    CPLErrorReset();
    if (staged()) {
        auto* drv = GetGDALDriverManager()->GetDriverByName(format_.c_str());
        if (!drv) throw IoError("GDAL has no " + format_ + " driver (GDAL >= 3.1 is needed for COG)");
        CPLStringList co;
        for (const auto& kv : final_co_) co.AddString(kv.c_str());
        ds_->FlushCache();
        auto* copy = drv->CreateCopy(out_.temp().c_str(), ds_, FALSE, co.List(), nullptr, nullptr);
        if (!copy) throw IoError("cannot write " + quote(path_) + ": " + gdal_message());
        CPLErrorReset();
        GDALClose(copy);
        if (CPLGetLastErrorType() == CE_Failure)
            throw IoError("cannot close " + quote(path_) + ": " + gdal_message());
    }
    GDALDataset* ds = ds_;
    ds_ = nullptr;
    CPLErrorReset();
    GDALClose(ds);  // returns void before GDAL 3.7: a failed close shows in the error state
    if (CPLGetLastErrorType() == CE_Failure)
        throw IoError("cannot close " + quote(path_) + ": " + gdal_message());
    if (work_path_ != out_.temp()) VSIUnlink(work_path_.c_str());
    return out_.temp();
}

void set_change_colour_table(GDALRasterBand& band) {
    GDALColorTable ct;
    GDALColorEntry none{160, 160, 160, 255}, change{230, 30, 30, 255}, nodata{0, 0, 0, 0};
    ct.SetColorEntry(0, &none);
    ct.SetColorEntry(1, &change);
    for (int i = 2; i < 255; ++i) ct.SetColorEntry(i, &nodata);
    ct.SetColorEntry(255, &nodata);
    band.SetColorTable(&ct);
    band.SetColorInterpretation(GCI_PaletteIndex);
}

std::string style_path_for(const std::string& raster_path) {
    const auto dot = raster_path.find_last_of('.');
    const auto slash = raster_path.find_last_of('/');
    const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
    return (has_ext ? raster_path.substr(0, dot) : raster_path) + ".qml";
}

void write_change_style(const std::string& raster_path, bool overwrite) {
    // QGIS applies <name>.qml beside <name>.tif when it loads the layer.
    static const char* kQml = R"(<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <colorPalette>
        <paletteEntry value="0" color="#a0a0a0" alpha="255" label="no change"/>
        <paletteEntry value="1" color="#e61e1e" alpha="255" label="change"/>
      </colorPalette>
    </rasterrenderer>
  </pipe>
</qgis>
)";
    write_text_file(style_path_for(raster_path), kQml, overwrite);
}

}  // namespace cdk::geo
