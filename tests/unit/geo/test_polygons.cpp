#include <catch2/catch.hpp>

#include <gdal_priv.h>
#include <ogrsf_frmts.h>

#include <filesystem>
#include <map>

#include "cdk/core/error.hpp"
#include "cdk/geo/polygons.hpp"
#include "cdk/geo/raster.hpp"
#include "support/support.hpp"

using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

// 20 x 10 mask, 10 m pixels in UTM 33N: a 2x2 region, a 3x3 region with a one-pixel hole
// (8 pixels), a diagonal neighbour of the 2x2 (4-connected: its own region), nodata column.
double mask_value(int x, int y) {
    if (x == 19) return 255;
    if (x >= 1 && x <= 2 && y >= 1 && y <= 2) return 1;
    if (x == 3 && y == 3) return 1;
    if (x >= 10 && x <= 12 && y >= 4 && y <= 6) return (x == 11 && y == 5) ? 0 : 1;
    return 0;
}

}  // namespace

TEST_CASE("change regions become polygons with pixels, area and mean probability", "[geo][polygons]") {
    TempDir tmp;
    cdk::test::RasterSpec spec;
    spec.width = 20;
    spec.height = 10;
    spec.nodata = 255;
    cdk::test::make_raster(tmp / "mask.tif", spec, [](int, int x, int y) { return mask_value(x, y); });
    cdk::test::RasterSpec pspec = spec;
    pspec.type = GDT_Float32;
    pspec.nodata = -1;
    cdk::test::make_raster(tmp / "prob.tif", pspec, [](int, int x, int) { return x < 5 ? 0.6 : 0.9; });

    cdk::geo::PolygonOptions o;
    o.mask = tmp / "mask.tif";
    o.prob = tmp / "prob.tif";
    o.out = tmp / "changes.gpkg";
    const auto s = cdk::geo::polygonize_changes(o);
    CHECK(s["regions"] == 3);
    CHECK(s["dropped"] == 0);
    CHECK(s["area_m2"].get<double>() == Approx((4 + 1 + 8) * 100.0));

    std::unique_ptr<GDALDataset> ds(GDALDataset::Open((tmp / "changes.gpkg").c_str(), GDAL_OF_VECTOR));
    REQUIRE(ds);
    OGRLayer* layer = ds->GetLayerByName("changes");
    REQUIRE(layer);
    CHECK(layer->GetSpatialRef() != nullptr);
    CHECK(std::string(layer->GetSpatialRef()->GetAuthorityCode(nullptr)) == "32633");
    std::map<long long, std::pair<double, double>> by_pixels;  // pixels -> (area, mean prob)
    for (auto& f : *layer) {
        const long long px = f->GetFieldAsInteger64("pixels");
        by_pixels[px] = {f->GetFieldAsDouble("area_m2"), f->GetFieldAsDouble("mean_prob")};
        // The polygon covers exactly its pixels (10 m x 10 m each), holes excluded.
        const auto* g = f->GetGeometryRef();
        REQUIRE(g);
        CHECK(g->toPolygon()->get_Area() == Approx(double(px) * 100.0));
    }
    REQUIRE(by_pixels.size() == 3);
    CHECK(by_pixels.count(4));
    CHECK(by_pixels.count(1));
    CHECK(by_pixels.count(8));
    CHECK(by_pixels[8].first == Approx(800.0));
    CHECK(by_pixels[8].second == Approx(0.9));
    CHECK(by_pixels[4].second == Approx(0.6));

    // A minimum area leaves the small regions out; an existing output needs overwrite.
    o.min_area_m2 = 500;
    CHECK_THROWS_AS(cdk::geo::polygonize_changes(o), cdk::ConfigError);
    o.overwrite = true;
    const auto big = cdk::geo::polygonize_changes(o);
    CHECK(big["regions"] == 1);
    CHECK(big["dropped"] == 2);

    // ogrinfo, GDAL's own client, reads it.
    const auto r = cdk::test::run_shell("ogrinfo -so -al '" + (tmp / "changes.gpkg") + "'");
    CHECK(r.rc == 0);
    CHECK(r.out.find("Feature Count: 1") != std::string::npos);
    CHECK(r.out.find("area_m2: Real") != std::string::npos);
    CHECK(r.out.find("mean_prob: Real") != std::string::npos);
}

TEST_CASE("polygons without a probability or georeferencing leave those fields null", "[geo][polygons]") {
    TempDir tmp;
    cdk::test::RasterSpec spec;
    spec.width = 20;
    spec.height = 10;
    spec.georeferenced = false;
    cdk::test::make_raster(tmp / "mask.tif", spec, [](int, int x, int y) { return mask_value(x, y) == 1 ? 1 : 0; });
    cdk::geo::PolygonOptions o;
    o.mask = tmp / "mask.tif";
    o.out = tmp / "c.gpkg";
    const auto s = cdk::geo::polygonize_changes(o);
    CHECK(s["regions"] == 3);
    CHECK(s["area_m2"].is_null());
    std::unique_ptr<GDALDataset> ds(GDALDataset::Open((tmp / "c.gpkg").c_str(), GDAL_OF_VECTOR));
    REQUIRE(ds);
    for (auto& f : *ds->GetLayer(0)) {
        CHECK(f->IsFieldNull(f->GetFieldIndex("area_m2")));
        CHECK(f->IsFieldNull(f->GetFieldIndex("mean_prob")));
    }
    // A minimum area in m² cannot apply to pixels without a size.
    o.out = tmp / "d.gpkg";
    o.min_area_m2 = 10;
    CHECK_THROWS_WITH(cdk::geo::polygonize_changes(o), Catch::Contains("georeferenced"));
    CHECK_FALSE(fs::exists(tmp / "d.gpkg"));
}

namespace {
cdk::geo::Grid grid_at(int epsg, std::array<double, 6> gt) {
    cdk::geo::Grid g;
    g.width = g.height = 100;
    g.geotransform = gt;
    g.has_geotransform = true;
    g.crs_wkt = cdk::geo::wkt_of_epsg(epsg);
    return g;
}
}  // namespace

TEST_CASE("pixel area: exact in UTM, ground area in Web Mercator and lon/lat", "[geo][polygons][area]") {
    using cdk::geo::pixel_area_m2;
    // UTM 33N, 10 m: the plane area.
    CHECK(pixel_area_m2(grid_at(32633, {500000, 10, 0, 5000000, 0, -10})) == 100.0);
    // Web Mercator, nominal 10 m, centre pixel near 60° N (y = 8399738 m): cos²(60°) of it.
    const double merc = pixel_area_m2(grid_at(3857, {1000000, 10, 0, 8399738 + 500, 0, -10}));
    CHECK(merc == Approx(25.0).epsilon(0.01));
    // ... and at the equator the plane area (within 2 % of the ground).
    CHECK(pixel_area_m2(grid_at(3857, {0, 10, 0, 500, 0, -10})) == 100.0);
    // WGS 84, 1e-4° at the equator: N·M·(1e-4 rad/°)² on the ellipsoid = 123.09 m².
    const double deg = pixel_area_m2(grid_at(4326, {10, 1e-4, 0, 0.005, 0, -1e-4}));
    CHECK(deg == Approx(123.09).epsilon(0.001));
    // No CRS: unknown.
    cdk::geo::Grid none;
    none.has_geotransform = true;
    CHECK(pixel_area_m2(none) == 0.0);
}
