#include <catch2/catch.hpp>

#include <gdal_utils.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "cdk/core/error.hpp"
#include "cdk/geo/scene.hpp"
#include "support/support.hpp"

using namespace cdk::geo;
using cdk::test::make_raster;
using cdk::test::RasterSpec;
using cdk::test::TempDir;

namespace {
SceneSpec one(const std::string& p) { return SceneSpec::parse(p); }
}  // namespace

TEST_CASE("a shifted date 2 is warped onto date 1's grid, outside pixels invalid", "[geo][scene]") {
    TempDir tmp;
    RasterSpec s;
    s.width = s.height = 32;
    s.type = GDT_UInt16;
    make_raster(tmp / "pre.tif", s, [](int, int x, int y) { return x + 100 * y + 1; });
    RasterSpec s2 = s;
    s2.gt = {500000 + 30, 10, 0, 5000000 - 20, 0, -10};  // 3 px east, 2 px south
    make_raster(tmp / "post.tif", s2, [](int, int x, int y) { return (x + 3) + 100 * (y + 2) + 1; });
    PairOptions opt;
    opt.resampling = "near";
    auto pair = open_pair(one(tmp / "pre.tif"), one(tmp / "post.tif"), "", opt);
    REQUIRE(pair.post.warped());
    REQUIRE(pair.post.grid().same_as(pair.pre.grid()));
    auto blk = pair.post.read({0, 0, 32, 32});
    int checked = 0;
    for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) {
            const bool inside = x >= 3 && y >= 2;
            REQUIRE(blk.valid[y * 32 + x] == (inside ? 1 : 0));
            if (inside) {
                REQUIRE(blk.value(0, x, y) == x + 100 * y + 1);
                ++checked;
            }
        }
    CHECK(checked == 29 * 30);
    opt.align = AlignMode::Strict;
    CHECK_THROWS_WITH(open_pair(one(tmp / "pre.tif"), one(tmp / "post.tif"), "", opt),
                      Catch::Contains("different grids") && Catch::Contains("post.tif"));
}

TEST_CASE("a reprojected date 2 (EPSG:4326) comes back onto date 1's UTM grid", "[geo][scene]") {
    TempDir tmp;
    RasterSpec s;
    s.width = s.height = 64;
    s.type = GDT_Float32;
    auto f = [](int, int x, int y) { return 10.0 * x + 3.0 * y; };  // smooth ramp
    make_raster(tmp / "pre.tif", s, f);
    {
        auto src = cdk::geo::open_raster(tmp / "pre.tif");
        const char* args[] = {"-t_srs", "EPSG:4326", "-r", "bilinear", nullptr};
        auto* o = GDALWarpAppOptionsNew(const_cast<char**>(args), nullptr);
        GDALDatasetH h = GDALDataset::ToHandle(src.get());
        GDALDatasetH out = GDALWarp((tmp / "post.tif").c_str(), nullptr, 1, &h, o, nullptr);
        GDALWarpAppOptionsFree(o);
        REQUIRE(out);
        GDALClose(out);
    }
    auto pair = open_pair(one(tmp / "pre.tif"), one(tmp / "post.tif"), "", {});
    REQUIRE(pair.post.warped());
    auto blk = pair.post.read({0, 0, 64, 64});
    double err = 0;
    int n = 0;
    for (int y = 8; y < 56; ++y)
        for (int x = 8; x < 56; ++x) {
            REQUIRE(blk.valid[y * 64 + x] == 1);
            err += std::abs(blk.value(0, x, y) - f(1, x, y));
            ++n;
        }
    CHECK(err / n < 3.0);  // within a fraction of a pixel's step (10 per column)
}

TEST_CASE("pairs that cannot be compared are refused with the culprit named", "[geo][scene]") {
    TempDir tmp;
    RasterSpec s;
    make_raster(tmp / "pre.tif", s, [](int, int x, int) { return x; });
    RasterSpec far = s;
    far.gt[0] += 1e6;
    make_raster(tmp / "far.tif", far, [](int, int x, int) { return x; });
    CHECK_THROWS_WITH(open_pair(one(tmp / "pre.tif"), one(tmp / "far.tif"), "", {}),
                      Catch::Contains("do not overlap"));
    RasterSpec three = s;
    three.bands = 3;
    make_raster(tmp / "three.tif", three, [](int b, int x, int) { return x + b; });
    CHECK_THROWS_WITH(open_pair(one(tmp / "pre.tif"), one(tmp / "three.tif"), "", {}),
                      Catch::Contains("different band counts") && Catch::Contains("three.tif"));
    RasterSpec plain = s;
    plain.georeferenced = false;
    plain.width = 20;
    make_raster(tmp / "plain.tif", plain, [](int, int x, int) { return x; });
    CHECK_THROWS_WITH(open_pair(one(tmp / "pre.tif"), one(tmp / "plain.tif"), "", {}),
                      Catch::Contains("is not"));
    // Label on another grid.
    RasterSpec lab = s;
    lab.width = 17;
    make_raster(tmp / "lab.tif", lab, [](int, int, int) { return 0; });
    CHECK_THROWS_WITH(open_pair(one(tmp / "pre.tif"), one(tmp / "pre.tif"), tmp / "lab.tif", {}),
                      Catch::Contains("not on date 1's grid") && Catch::Contains("lab.tif"));
    // Missing and non-raster files.
    CHECK_THROWS_WITH(Scene::open(one(tmp / "missing.tif")), Catch::Contains("no such file"));
    std::ofstream(tmp / "text.tif") << "not a raster";
    CHECK_THROWS_WITH(Scene::open(one(tmp / "text.tif")), Catch::Contains("cannot open raster"));
}

TEST_CASE("a raster with ground control points only is refused", "[geo][scene]") {
    TempDir tmp;
    RasterSpec s;
    s.georeferenced = false;
    make_raster(tmp / "gcp.tif", s, [](int, int x, int) { return x; });
    {
        GDALDatasetUniquePtr ds(GDALDataset::Open((tmp / "gcp.tif").c_str(), GDAL_OF_RASTER | GDAL_OF_UPDATE));
        GDAL_GCP gcps[3];
        GDALInitGCPs(3, gcps);
        double px[3][4] = {{0, 0, 10, 50}, {16, 0, 11, 50}, {0, 16, 10, 49}};
        for (int i = 0; i < 3; ++i) {
            gcps[i].dfGCPPixel = px[i][0];
            gcps[i].dfGCPLine = px[i][1];
            gcps[i].dfGCPX = px[i][2];
            gcps[i].dfGCPY = px[i][3];
        }
        OGRSpatialReference srs;
        srs.importFromEPSG(4326);
        ds->SetGCPs(3, gcps, &srs);
        GDALDeinitGCPs(3, gcps);
    }
    CHECK_THROWS_WITH(Scene::open(one(tmp / "gcp.tif")), Catch::Contains("ground control points"));
    if (auto qb = cdk::test::shared_data("geotiff/QB_Toulouse_Ortho_XS.tif")) {
        CHECK_THROWS_WITH(Scene::open(one(*qb)), Catch::Contains("ground control points"));
    } else {
        WARN("skipped the QuickBird GCP check: ../shared/data is absent");
    }
}

TEST_CASE("nodata: a pixel is invalid only when every band holds nodata", "[geo][scene]") {
    TempDir tmp;
    RasterSpec s;
    s.bands = 2;
    s.nodata = 0;
    // (0,0): both bands 0 -> invalid; (1,0): band 1 is 0 only -> valid.
    make_raster(tmp / "a.tif", s, [](int b, int x, int y) { return (y == 0 && x == 0) || (y == 0 && x == 1 && b == 1) ? 0 : 5; });
    auto sc = Scene::open(one(tmp / "a.tif"));
    auto blk = sc.read({0, 0, 16, 16});
    CHECK(blk.valid[0] == 0);
    CHECK(blk.valid[1] == 1);
    CHECK(std::count(blk.valid.begin(), blk.valid.end(), 0) == 1);
    // A user nodata overrides the file's.
    auto sc5 = Scene::open(one(tmp / "a.tif"), "bilinear", 5.0);
    auto b5 = sc5.read({0, 0, 16, 16});
    CHECK(std::count(b5.valid.begin(), b5.valid.end(), 0) == 256 - 2);
}

TEST_CASE("band files at mixed resolutions stack onto the first one's grid", "[geo][scene]") {
    TempDir tmp;
    std::filesystem::create_directory(tmp / "imgs");
    RasterSpec fine;
    fine.width = fine.height = 32;
    fine.type = GDT_UInt16;
    make_raster(tmp / "imgs/T_B02.tif", fine, [](int, int x, int y) { return 1000 + x + y; });
    RasterSpec coarse = fine;
    coarse.width = coarse.height = 16;
    coarse.gt[1] = 20;
    coarse.gt[5] = -20;
    make_raster(tmp / "imgs/T_B05.tif", coarse, [](int, int x, int y) { return 2000 + 16 * y + x; });
    make_raster(tmp / "imgs/T_B8A.tif", coarse, [](int, int x, int y) { return 3000 + x; });
    auto spec = SceneSpec::parse(tmp / "imgs", "B02,B05,B8A");
    REQUIRE(spec.files.size() == 3);
    auto sc = Scene::open(spec, "near");
    REQUIRE(sc.band_count() == 3);
    CHECK(sc.grid().width == 32);
    CHECK(sc.band_names() == std::vector<std::string>{"B02", "B05", "B8A"});
    auto blk = sc.read({0, 0, 32, 32});
    for (int y = 0; y < 32; y += 5)
        for (int x = 0; x < 32; x += 3) {
            CHECK(blk.value(0, x, y) == 1000 + x + y);
            CHECK(blk.value(1, x, y) == 2000 + 16 * (y / 2) + x / 2);
            CHECK(blk.value(2, x, y) == 3000 + x / 2);
        }
    CHECK_THROWS_WITH(SceneSpec::parse(tmp / "imgs", "B0"), Catch::Contains("matches 2 files"));
    CHECK_THROWS_WITH(SceneSpec::parse(tmp / "imgs", "B99"), Catch::Contains("matches no file"));
    CHECK_THROWS_WITH(SceneSpec::parse(tmp / "imgs"), Catch::Contains("--band-pattern"));
    // ';' lists and band selection
    auto listed = SceneSpec::parse((tmp / "imgs/T_B8A.tif") + ";" + (tmp / "imgs/T_B02.tif"));
    listed.bands = {2};
    auto sel = Scene::open(listed, "near");
    REQUIRE(sel.band_count() == 1);
    CHECK(sel.read({0, 0, 32, 32}).value(0, 5, 3) == 1000 + 5 + 3);
    CHECK(sel.grid().width == 32);  // the finest grid, even when listed second
    listed.bands = {3};
    CHECK_THROWS_WITH(Scene::open(listed), Catch::Contains("band 3"));
}

TEST_CASE("labels read as 0/1/255 with nodata honoured", "[geo][scene]") {
    TempDir tmp;
    RasterSpec s;
    s.width = 4;
    s.height = 1;
    s.nodata = 9;
    make_raster(tmp / "l.tif", s, [](int, int x, int) { return std::vector<double>{0, 1, 255, 9}[x]; });
    auto l = open_label(tmp / "l.tif", grid_of(*open_raster(tmp / "l.tif")));
    CHECK(l.read({0, 0, 4, 1}) == std::vector<uint8_t>{0, 1, 1, 255});
    CHECK(parse_band_list("4,3,2") == std::vector<int>{4, 3, 2});
    CHECK_THROWS_AS(parse_band_list("0,1"), cdk::ConfigError);
    CHECK_THROWS_AS(validate_resampling("fancy"), cdk::ConfigError);
}

TEST_CASE("change masks get a QGIS style beside them", "[geo][style]") {
    TempDir tmp;
    CHECK(style_path_for("/a/b/change.tif") == "/a/b/change.qml");
    CHECK(style_path_for("/a.b/change") == "/a.b/change.qml");
    write_change_style(tmp / "change.tif");
    std::ifstream f(tmp / "change.qml");
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string qml = ss.str();
    CHECK(qml.find("type=\"paletted\"") != std::string::npos);
    CHECK(qml.find("value=\"1\"") != std::string::npos);
    CHECK(cdk::test::list_dir(tmp.path()) == std::vector<std::string>{"change.qml"});
    CHECK_THROWS_AS(write_change_style(tmp / "change.tif", false), cdk::ConfigError);
}
