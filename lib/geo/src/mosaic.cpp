#include "cdk/geo/mosaic.hpp"

#include <gdal_alg.h>
#include <ogr_spatialref.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/geo/polygons.hpp"
#include "cdk/geo/scene.hpp"

namespace cdk::geo {

namespace {

constexpr uint8_t kMaskNodata = 255;
constexpr float kProbNodata = -1.f;
constexpr double kMaxPixels = 4e9;  // a mosaic larger than this is almost surely a wrong --resolution

// Footprint (xmin, ymin, xmax, ymax) of a raster in `wkt`, and the pixel size GDAL
// suggests there (GDALSuggestedWarpOutput2).
struct Footprint {
    std::array<double, 4> extent{};
    double pixel = 0;
};

Footprint footprint_in(GDALDataset& ds, const std::string& wkt, const std::string& path) {
    CPLStringList opts;
    opts.SetNameValue("DST_SRS", wkt.c_str());
    void* tr = GDALCreateGenImgProjTransformer2(GDALDataset::ToHandle(&ds), nullptr, opts.List());
    if (!tr) throw ConfigError("cannot transform " + quote(path) + " into the mosaic's CRS: " + gdal_message());
    double gt[6];
    int w = 0, h = 0;
    double ext[4];
    const CPLErr err = GDALSuggestedWarpOutput2(GDALDataset::ToHandle(&ds), GDALGenImgProjTransform, tr, gt, &w, &h,
                                                ext, 0);
    GDALDestroyGenImgProjTransformer(tr);
    if (err != CE_None) throw ConfigError("cannot place " + quote(path) + " in the mosaic's CRS: " + gdal_message());
    return {{ext[0], ext[1], ext[2], ext[3]}, gt[1]};
}

}  // namespace

void validate(const MosaicOptions& o) {
    if (o.inputs.empty()) throw ConfigError("a mosaic needs at least one input raster");
    if (o.out.empty()) throw ConfigError("an output raster is needed (--out)");
    if (o.rule != "max" && o.rule != "first" && o.rule != "last")
        throw ConfigError("overlap rule " + quote(o.rule) + " is not one of max, first, last");
    if (!(o.resolution >= 0) || !std::isfinite(o.resolution))
        throw ConfigError("resolution must be a positive number (or 0 for the first input's)");
    if (o.strip_rows < 1) throw ConfigError("strip rows must be positive");
    if (!(o.min_area_m2 >= 0)) throw ConfigError("minimum area must be >= 0");
    std::vector<NamedInput> inputs;
    for (const auto& in : o.inputs) inputs.push_back({"raster", in});
    for (const auto* out : {&o.out, &o.polygons}) check_not_input(*out, inputs);
    validate(o.write, o.out);
}

nlohmann::json mosaic(const MosaicOptions& o, const RunContext& ctx) {
    validate(o);
    ensure_gdal_registered();
    for (const auto* path : {&o.out, &o.polygons})
        if (!path->empty() && !o.write.overwrite && std::filesystem::exists(*path))
            throw ConfigError("output " + quote(*path) + " exists (use --overwrite to replace it)");
    // Inputs: one band each, all masks or all probabilities, georeferenced.
    std::vector<DatasetPtr> ds;
    bool prob = false;
    for (size_t i = 0; i < o.inputs.size(); ++i) {
        auto d = open_raster(o.inputs[i]);
        const Grid g = grid_of(*d);
        if (!g.has_geotransform || g.crs_wkt.empty())
            throw ConfigError("input " + quote(o.inputs[i]) + " is not georeferenced (no geotransform or CRS)");
        if (d->GetRasterCount() != 1)
            throw ConfigError("input " + quote(o.inputs[i]) + " has " + std::to_string(d->GetRasterCount()) +
                              " bands; a change mask or probability has one");
        const bool p = d->GetRasterBand(1)->GetRasterDataType() != GDT_Byte;
        if (i == 0) prob = p;
        else if (p != prob)
            throw ConfigError("input " + quote(o.inputs[i]) + " is a " + (p ? "probability" : "mask") + ", " +
                              quote(o.inputs[0]) + " a " + (prob ? "probability" : "mask") + "; mosaic one kind");
        ds.push_back(d);
    }
    if (prob && !o.polygons.empty()) throw ConfigError("polygons are made from change masks, not probabilities");

    // The target grid: the union of the footprints in the target CRS.
    std::string wkt = grid_of(*ds[0]).crs_wkt;
    if (!o.crs.empty()) {
        OGRSpatialReference srs;
        if (srs.SetFromUserInput(o.crs.c_str()) != OGRERR_NONE)
            throw ConfigError("cannot understand the CRS " + quote(o.crs));
        char* text = nullptr;
        srs.exportToWkt(&text);
        wkt = text;
        CPLFree(text);
    }
    std::array<double, 4> u{std::numeric_limits<double>::max(), std::numeric_limits<double>::max(),
                            std::numeric_limits<double>::lowest(), std::numeric_limits<double>::lowest()};
    double res = o.resolution;
    for (size_t i = 0; i < ds.size(); ++i) {
        const Footprint f = footprint_in(*ds[i], wkt, o.inputs[i]);
        if (i == 0 && res == 0) res = f.pixel;
        u = {std::min(u[0], f.extent[0]), std::min(u[1], f.extent[1]), std::max(u[2], f.extent[2]),
             std::max(u[3], f.extent[3])};
    }
    Grid grid;
    grid.crs_wkt = wkt;
    grid.has_geotransform = true;
    grid.width = std::max(1, int(std::ceil((u[2] - u[0]) / res - 1e-9)));
    grid.height = std::max(1, int(std::ceil((u[3] - u[1]) / res - 1e-9)));
    grid.geotransform = {u[0], res, 0, u[3], 0, -res};
    if (double(grid.width) * double(grid.height) > kMaxPixels)
        throw ConfigError("the mosaic would be " + std::to_string(grid.width) + "x" + std::to_string(grid.height) +
                          " pixels; give a coarser --resolution");
    ctx.info("mosaic of " + std::to_string(ds.size()) + " inputs: " + grid.describe() + ", rule " + o.rule);

    // Every input on that grid (validity: its nodata and its footprint).
    const std::string resampling = prob ? "bilinear" : "near";
    std::vector<Scene> on_grid;
    for (const auto& in : o.inputs) {
        SceneSpec spec;
        spec.files = {in};
        std::optional<double> nd;
        if (prob) nd = double(kProbNodata);
        Scene s = Scene::open(spec, resampling, nd);
        on_grid.push_back(s.grid().same_as(grid) ? s : s.warped_to(grid, resampling));
    }

    RasterWriter writer(o.out, grid, 1, prob ? GDT_Float32 : GDT_Byte, o.write,
                        prob ? double(kProbNodata) : double(kMaskNodata));
    if (!prob) set_change_colour_table(*writer.dataset().GetRasterBand(1));
    std::vector<long long> per_input(ds.size(), 0);
    long long changed = 0;
    for (int y = 0; y < grid.height; y += o.strip_rows) {
        const Window w{0, y, grid.width, std::min(o.strip_rows, grid.height - y)};
        const size_t n = size_t(w.pixels());
        std::vector<float> value(n, kProbNodata);  // -1 = nothing yet
        for (size_t i = 0; i < on_grid.size(); ++i) {
            const Block b = on_grid[i].read(w);
            for (size_t k = 0; k < n; ++k) {
                if (!b.valid[k]) continue;
                const float v = float(b.value(0, int(k % size_t(w.width)), int(k / size_t(w.width))));
                if (!prob && v != 0 && v != 1) continue;  // other values of a mask are not data
                if (prob ? v >= 0.5f : v == 1) ++per_input[i];
                float& out = value[k];  // < 0: no input had data here yet
                if (out < 0 || o.rule == "last" || (o.rule == "max" && v > out)) out = v;
            }
        }
        if (prob) {
            for (float v : value) changed += v >= 0.5f;
            writer.write(1, w, value.data(), GDT_Float32);
        } else {
            std::vector<uint8_t> mask(n);
            for (size_t k = 0; k < n; ++k) {
                mask[k] = value[k] < 0 ? kMaskNodata : uint8_t(value[k]);
                changed += mask[k] == 1;
            }
            writer.write(1, w, mask.data(), GDT_Byte);
        }
        ctx.progress(double(y + w.height) / double(grid.height), "mosaic");
    }
    writer.commit();
    if (!prob) write_change_style(o.out, true);

    const double pixel_m2 = pixel_area_m2(grid);
    auto area = [&](long long px) { return pixel_m2 > 0 ? nlohmann::json(double(px) * pixel_m2) : nlohmann::json(nullptr); };
    nlohmann::json inputs = nlohmann::json::array();
    for (size_t i = 0; i < ds.size(); ++i)
        inputs.push_back({{"path", o.inputs[i]}, {"changed_pixels", per_input[i]}, {"changed_area_m2", area(per_input[i])}});
    nlohmann::json polygons = nullptr;
    if (!o.polygons.empty()) {
        PolygonOptions po;
        po.mask = o.out;
        po.out = o.polygons;
        po.min_area_m2 = o.min_area_m2;
        po.min_pixels = o.min_pixels;
        po.overwrite = o.write.overwrite;
        polygons = polygonize_changes(po, ctx);
    }
    return {{"out", o.out},
            {"width", grid.width},
            {"height", grid.height},
            {"epsg", epsg_of(wkt)},
            {"resolution", res},
            {"rule", o.rule},
            {"kind", prob ? "probability" : "mask"},
            {"inputs", inputs},
            {"changed_pixels", changed},
            {"changed_area_m2", area(changed)},
            {"polygons", polygons}};
}

}  // namespace cdk::geo
