#include "cdk/geo/polygons.hpp"

#include <gdal_alg.h>
#include <gdal_priv.h>
#include <ogrsf_frmts.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <vector>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/geo/raster.hpp"
#include "gdal_messages.hpp"

namespace cdk::geo {

namespace {

// Band 1 of a raster as a W x H buffer of `type`.
template <typename T>
std::vector<T> read_whole(GDALDataset& ds, GDALDataType type, const std::string& path) {
    const int w = ds.GetRasterXSize(), h = ds.GetRasterYSize();
    std::vector<T> v(size_t(w) * size_t(h));
    CPLErrorReset();
    if (ds.GetRasterBand(1)->RasterIO(GF_Read, 0, 0, w, h, v.data(), w, h, type, 0, 0) != CE_None)
        throw IoError("cannot read raster " + quote(path) + ": " + gdal_message());
    return v;
}

}  // namespace

nlohmann::json polygonize_changes(const PolygonOptions& o, const RunContext& ctx) {
    if (o.mask.empty() || o.out.empty()) throw ConfigError("polygons need a change mask and an output path");
    if (!(o.min_area_m2 >= 0) || !std::isfinite(o.min_area_m2))
        throw ConfigError("minimum area " + quote(format_number(o.min_area_m2)) + " must be a number >= 0");
    ensure_gdal_registered();
    AtomicPath out(o.out, o.overwrite);
    auto mask_ds = open_raster(o.mask);
    const Grid grid = grid_of(*mask_ds);
    const int w = grid.width, h = grid.height;
    const double pixel_m2 = pixel_area_m2(grid);
    if (o.min_area_m2 > 0 && pixel_m2 <= 0)
        throw ConfigError("a minimum area needs a georeferenced mask; " + quote(o.mask) + " has no pixel size in metres");

    // Regions: OpenCV's connected components (4-connected, as GDALPolygonize's default).
    const auto mask = read_whole<uint8_t>(*mask_ds, GDT_Byte, o.mask);
    cv::Mat change(h, w, CV_8U);
    for (size_t i = 0; i < mask.size(); ++i) change.data[i] = mask[i] == 1 ? 1 : 0;
    cv::Mat labels;
    const int n = cv::connectedComponents(change, labels, 4, CV_32S);  // label 0 = background
    std::vector<long long> pixels(size_t(n), 0);
    std::vector<double> prob_sum(size_t(n), 0);
    const int32_t* lab = labels.ptr<int32_t>();
    for (size_t i = 0; i < mask.size(); ++i) ++pixels[size_t(lab[i])];
    if (!o.prob.empty()) {
        auto prob_ds = open_raster(o.prob);
        if (!grid_of(*prob_ds).same_as(grid))
            throw ConfigError("probability raster " + quote(o.prob) + " is not on the grid of " + quote(o.mask));
        const auto prob = read_whole<float>(*prob_ds, GDT_Float32, o.prob);
        for (size_t i = 0; i < prob.size(); ++i) prob_sum[size_t(lab[i])] += prob[i];
    }
    // Drop small regions (label -> 0) before polygonizing.
    std::vector<char> keep(size_t(n), 0);
    long long dropped = 0;
    for (int k = 1; k < n; ++k) {
        keep[size_t(k)] = (double(pixels[size_t(k)]) * pixel_m2 >= o.min_area_m2 || o.min_area_m2 <= 0) &&
                          pixels[size_t(k)] >= o.min_pixels;
        dropped += !keep[size_t(k)];
    }
    int32_t* lab_w = labels.ptr<int32_t>();
    for (size_t i = 0; i < mask.size(); ++i)
        if (!keep[size_t(lab_w[i])]) lab_w[i] = 0;

    // The labels as an in-memory raster on the mask's grid, polygonized into a temporary layer.
    auto* mem = GetGDALDriverManager()->GetDriverByName("MEM");
    std::unique_ptr<GDALDataset> lab_ds(mem->Create("", w, h, 1, GDT_Int32, nullptr));
    if (grid.has_geotransform) {
        double gt[6];
        std::copy(grid.geotransform.begin(), grid.geotransform.end(), gt);
        lab_ds->SetGeoTransform(gt);
    }
    if (lab_ds->GetRasterBand(1)->RasterIO(GF_Write, 0, 0, w, h, lab_w, w, h, GDT_Int32, 0, 0) != CE_None)
        throw IoError("cannot polygonize " + quote(o.mask) + ": " + gdal_message());

    auto* gpkg = GetGDALDriverManager()->GetDriverByName("GPKG");
    if (!gpkg) throw IoError("GDAL has no GeoPackage driver");
    // SQLite reports some failed writes (a full disk) only as GDAL errors from calls whose
    // results the driver does not pass on: any GDAL failure while the GeoPackage is written
    // makes it an error, or a truncated file would be published as complete.
    const GdalMessages gdal_messages;
    CPLErrorReset();
    std::unique_ptr<GDALDataset> vec(gpkg->Create(out.temp().c_str(), 0, 0, 0, GDT_Unknown, nullptr));
    if (!vec) throw IoError("cannot create " + quote(o.out) + ": " + gdal_message());
    OGRSpatialReference srs;
    const bool has_srs = !grid.crs_wkt.empty() && srs.importFromWkt(grid.crs_wkt.c_str()) == OGRERR_NONE;
    if (has_srs) srs.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
    OGRLayer* layer = vec->CreateLayer("changes", has_srs ? &srs : nullptr, wkbPolygon, nullptr);
    if (!layer) throw IoError("cannot create layer 'changes' in " + quote(o.out) + ": " + gdal_message());
    OGRFieldDefn f_id("id", OFTInteger), f_pixels("pixels", OFTInteger64), f_area("area_m2", OFTReal),
        f_prob("mean_prob", OFTReal);
    for (auto* f : {&f_id, &f_pixels, &f_area, &f_prob})
        if (layer->CreateField(f) != OGRERR_NONE)
            throw IoError("cannot add field " + quote(f->GetNameRef()) + " to " + quote(o.out) + ": " + gdal_message());
    const int id_field = layer->GetLayerDefn()->GetFieldIndex("id");

    // One transaction: a GeoPackage commits every feature otherwise.
    if (vec->StartTransaction() != OGRERR_NONE)
        throw IoError("cannot write " + quote(o.out) + ": " + gdal_message());
    auto* band = lab_ds->GetRasterBand(1);  // also the mask: label 0 (no kept region) is skipped
    CPLErrorReset();
    if (GDALPolygonize(GDALRasterBand::ToHandle(band), GDALRasterBand::ToHandle(band), OGRLayer::ToHandle(layer),
                       id_field, nullptr, nullptr, nullptr) != CE_None)  // fails as its writes do (a full disk)
        throw IoError("cannot write polygons " + quote(o.out) + ": " + gdal_message());
    long long regions = 0;
    double area_total = 0;
    layer->ResetReading();
    std::vector<std::unique_ptr<OGRFeature>> features;
    while (OGRFeature* f = layer->GetNextFeature()) features.emplace_back(f);
    for (auto& f : features) {
        const int k = f->GetFieldAsInteger(id_field);
        const long long px = pixels[size_t(k)];
        f->SetField("pixels", static_cast<GIntBig>(px));
        if (pixel_m2 > 0) {
            f->SetField("area_m2", double(px) * pixel_m2);
            area_total += double(px) * pixel_m2;
        } else {
            f->SetFieldNull(f->GetFieldIndex("area_m2"));
        }
        if (!o.prob.empty()) f->SetField("mean_prob", prob_sum[size_t(k)] / double(px));
        else f->SetFieldNull(f->GetFieldIndex("mean_prob"));
        if (layer->SetFeature(f.get()) != OGRERR_NONE)
            throw IoError("cannot write polygon " + std::to_string(k) + " to " + quote(o.out) + ": " + gdal_message());
        ++regions;
    }
    if (vec->CommitTransaction() != OGRERR_NONE)
        throw IoError("cannot write " + quote(o.out) + ": " + gdal_message());
    CPLErrorReset();
    vec.reset();  // closes the GeoPackage
    if (CPLGetLastErrorType() >= CE_Failure) throw IoError("cannot close " + quote(o.out) + ": " + gdal_message());
    if (const auto failure = gdal_messages.first_failure(); !failure.empty())
        throw IoError("cannot write " + quote(o.out) + ": " + failure);
    out.commit();
    ctx.info(std::to_string(regions) + " change regions written to " + quote(o.out) +
             (dropped ? " (" + std::to_string(dropped) + " smaller than the minimum area left out)" : ""));
    return {{"out", o.out},
            {"regions", regions},
            {"dropped", dropped},
            {"area_m2", pixel_m2 > 0 ? nlohmann::json(area_total) : nlohmann::json(nullptr)}};
}

}  // namespace cdk::geo
