#include <catch2/catch.hpp>

#include <filesystem>

#include "cdk/core/error.hpp"
#include "cdk/geo/mosaic.hpp"
#include "cdk/geo/raster.hpp"
#include "support/support.hpp"

using cdk::test::read_band;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Two 10x10 masks at 10 m in UTM 33N; B lies 5 pixels east of A, so the mosaic is 15x10
// and columns 5..9 overlap. A: change in its columns 7..9. B: change in its columns 0..1
// (mosaic 5..6), nodata at its (2, 0), no change elsewhere.
void make_pair(const TempDir& tmp) {
    cdk::test::RasterSpec a;
    a.width = a.height = 10;
    a.nodata = 255;
    a.gt = {500000, 10, 0, 5000100, 0, -10};
    cdk::test::RasterSpec b = a;
    b.gt[0] = 500050;
    cdk::test::make_raster(tmp / "a.tif", a, [](int, int x, int) { return x >= 7 ? 1 : 0; });
    cdk::test::make_raster(tmp / "b.tif", b, [](int, int x, int y) { return x == 2 && y == 0 ? 255 : (x <= 1 ? 1 : 0); });
}

cdk::geo::MosaicOptions options(const TempDir& tmp, const std::string& rule, const std::string& out) {
    cdk::geo::MosaicOptions o;
    o.inputs = {tmp / "a.tif", tmp / "b.tif"};
    o.out = tmp / out;
    o.rule = rule;
    return o;
}

}  // namespace

TEST_CASE("a mosaic covers the union and resolves overlaps by its rule", "[geo][mosaic]") {
    TempDir tmp;
    make_pair(tmp);
    const auto s = cdk::geo::mosaic(options(tmp, "max", "max.tif"));
    CHECK(s["width"] == 15);
    CHECK(s["height"] == 10);
    CHECK(s["epsg"] == 32633);
    CHECK(s["inputs"][0]["changed_pixels"] == 30);
    CHECK(s["inputs"][1]["changed_pixels"] == 20);
    auto ds = cdk::geo::open_raster(tmp / "max.tif");
    const auto g = cdk::geo::grid_of(*ds);
    CHECK(g.geotransform[0] == Approx(500000));
    CHECK(g.geotransform[3] == Approx(5000100));
    CHECK(g.geotransform[1] == Approx(10));
    CHECK(ds->GetRasterBand(1)->GetColorTable() != nullptr);
    CHECK(fs::exists(tmp / "max.qml"));

    auto at = [](const std::vector<double>& v, int x, int y) { return v[size_t(y) * 15 + size_t(x)]; };
    const auto mx = read_band(tmp / "max.tif");
    CHECK(at(mx, 0, 3) == 0);   // A only
    CHECK(at(mx, 5, 3) == 1);   // overlap: B's change wins over A's 0
    CHECK(at(mx, 8, 3) == 1);   // overlap: A's change wins over B's 0
    CHECK(at(mx, 7, 0) == 1);   // B nodata there, A has change
    CHECK(at(mx, 12, 3) == 0);  // B only
    CHECK(s["changed_pixels"] == 50);  // columns 5..9, 10 rows

    cdk::geo::mosaic(options(tmp, "first", "first.tif"));
    const auto first = read_band(tmp / "first.tif");
    CHECK(at(first, 5, 3) == 0);  // A's value in the overlap
    CHECK(at(first, 8, 3) == 1);
    cdk::geo::mosaic(options(tmp, "last", "last.tif"));
    const auto last = read_band(tmp / "last.tif");
    CHECK(at(last, 5, 3) == 1);  // B's value
    CHECK(at(last, 8, 3) == 0);
    CHECK(at(last, 7, 0) == 1);  // B has no data there: A's value stays

    // Another CRS: the mosaic is warped into it.
    auto o = options(tmp, "max", "merc.tif");
    o.crs = "EPSG:3857";
    const auto m = cdk::geo::mosaic(o);
    CHECK(m["epsg"] == 3857);
    CHECK(m["changed_pixels"].get<long long>() > 0);

    // Polygons of the mosaic; refusals.
    o = options(tmp, "max", "poly.tif");
    o.polygons = tmp / "poly.gpkg";
    CHECK(cdk::geo::mosaic(o)["polygons"]["regions"] == 1);
    CHECK_THROWS_AS(cdk::geo::mosaic(o), cdk::ConfigError);  // exists
    auto bad = options(tmp, "median", "x.tif");
    CHECK_THROWS_AS(cdk::geo::validate(bad), cdk::ConfigError);
    bad = options(tmp, "max", "x.tif");
    bad.inputs.push_back(tmp / "x.tif");
    CHECK_THROWS_AS(cdk::geo::validate(bad), cdk::ConfigError);
}

TEST_CASE("a mosaic refuses mixed kinds and rasters without georeferencing", "[geo][mosaic]") {
    TempDir tmp;
    make_pair(tmp);
    cdk::test::RasterSpec p;
    p.width = p.height = 10;
    p.type = GDT_Float32;
    cdk::test::make_raster(tmp / "p.tif", p, [](int, int, int) { return 0.7; });
    auto o = options(tmp, "max", "x.tif");
    o.inputs = {tmp / "a.tif", tmp / "p.tif"};
    CHECK_THROWS_WITH(cdk::geo::mosaic(o), Catch::Contains("p.tif") && Catch::Contains("one kind"));
    CHECK_FALSE(fs::exists(tmp / "x.tif"));
    cdk::test::RasterSpec plain;
    plain.georeferenced = false;
    cdk::test::make_raster(tmp / "plain.tif", plain, [](int, int, int) { return 0; });
    o.inputs = {tmp / "plain.tif"};
    CHECK_THROWS_WITH(cdk::geo::mosaic(o), Catch::Contains("not georeferenced"));

    // Probabilities: the highest wins.
    o.inputs = {tmp / "p.tif"};
    o.out = tmp / "prob.tif";
    const auto s = cdk::geo::mosaic(o);
    CHECK(s["kind"] == "probability");
    CHECK(s["changed_pixels"] == 100);
}
