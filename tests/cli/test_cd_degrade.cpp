#include <catch2/catch.hpp>

#include <gdal_priv.h>

#include <nlohmann/json.hpp>

#include "cdk/geo/raster.hpp"
#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::check_one_error_line;
using cdk::test::exists;
using cdk::test::list_dir;
using cdk::test::read_band;
using cdk::test::run_tool;
using cdk::test::TempDir;

TEST_CASE("cd-degrade --help and --version", "[cli][degrade]") {
    auto h = run_tool("cd-degrade", {"--help"});
    CHECK(h.rc == 0);
    for (const char* flag : {"--in", "--out", "--degrade", "--seed", "--of", "--co", "--overwrite"})
        CHECK(h.out.find(flag) != std::string::npos);
    auto v = run_tool("cd-degrade", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cd-degrade (cdkit)") != std::string::npos);
}

TEST_CASE("cd-degrade degrades a cd-synth date and keeps its georeferencing", "[cli][degrade]") {
    TempDir tmp;
    cdk::test::synth_scene(tmp / "s");
    const std::string in = tmp / "s/post.tif", out = tmp / "post_lq.tif";
    auto r = run_tool("cd-degrade", {"--in", in, "--out", out, "--degrade", "blur=1.5,res=2,noise=3,jpeg=40",
                                     "--seed", "4", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["applied"] == "blur=1.5,res=2,noise=3,jpeg=40");
    CHECK(j["width"] == 96);
    CHECK(j["bands"] == 3);

    cdk::geo::ensure_gdal_registered();
    GDALDatasetUniquePtr a(GDALDataset::Open(in.c_str(), GDAL_OF_RASTER));
    GDALDatasetUniquePtr b(GDALDataset::Open(out.c_str(), GDAL_OF_RASTER));
    REQUIRE((a && b));
    CHECK(cdk::geo::grid_of(*b).same_as(cdk::geo::grid_of(*a)));
    CHECK(b->GetRasterBand(1)->GetRasterDataType() == a->GetRasterBand(1)->GetRasterDataType());
    int ha = 0, hb = 0;
    CHECK(b->GetRasterBand(1)->GetNoDataValue(&hb) == a->GetRasterBand(1)->GetNoDataValue(&ha));
    CHECK(ha == hb);
    CHECK(read_band(out, 2) != read_band(in, 2));

    // The same seed gives the same file; COG output through --of.
    r = run_tool("cd-degrade", {"--in", in, "--out", tmp / "again.tif", "--degrade", "blur=1.5,res=2,noise=3,jpeg=40",
                                "--seed", "4", "--of", "COG", "--quiet"});
    REQUIRE(r.rc == 0);
    CHECK(read_band(tmp / "again.tif", 3) == read_band(out, 3));
}

TEST_CASE("cd-degrade refuses bad input with one line and writes nothing", "[cli][degrade]") {
    TempDir tmp;
    cdk::test::RasterSpec rs;
    cdk::test::make_raster(tmp / "in.tif", rs, [](int, int x, int y) { return x + y; });
    const auto before = list_dir(tmp.path());

    check_one_error_line(run_tool("cd-degrade", {"--in", tmp / "in.tif", "--out", tmp / "o.tif", "--degrade", "blur=abc"}),
                         "'blur=abc'");
    check_one_error_line(
        run_tool("cd-degrade", {"--in", tmp / "in.tif", "--out", tmp / "o.tif", "--degrade", "noise=5,fog=2"}), "'fog=2'");
    check_one_error_line(run_tool("cd-degrade", {"--in", tmp / "missing.tif", "--out", tmp / "o.tif", "--degrade", "jpeg=50"}),
                         "missing.tif");
    CHECK(list_dir(tmp.path()) == before);

    // An existing output is kept unless --overwrite.
    REQUIRE(run_tool("cd-degrade", {"--in", tmp / "in.tif", "--out", tmp / "o.tif", "--degrade", "noise=5", "--quiet"}).rc == 0);
    check_one_error_line(run_tool("cd-degrade", {"--in", tmp / "in.tif", "--out", tmp / "o.tif", "--degrade", "noise=5"}),
                         "o.tif");
    CHECK(run_tool("cd-degrade", {"--in", tmp / "in.tif", "--out", tmp / "o.tif", "--degrade", "noise=5", "--overwrite",
                                  "--quiet"}).rc == 0);

    // Usage errors are CLI11's.
    auto u = run_tool("cd-degrade", {"--in", tmp / "in.tif", "--out", tmp / "p.tif"});
    CHECK(u.rc > 1);
    CHECK_FALSE(exists(tmp / "p.tif"));
}
