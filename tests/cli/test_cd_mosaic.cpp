#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::check_one_error_line;
using cdk::test::exists;
using cdk::test::run_tool;
using cdk::test::TempDir;

TEST_CASE("cd-mosaic --help, --version, a mosaic and bad input", "[cli][mosaic]") {
    auto h = run_tool("cd-mosaic", {"--help"});
    CHECK(h.rc == 0);
    for (const char* flag : {"--out", "--crs", "--resolution", "--rule", "--polygons", "--of"})
        CHECK(h.out.find(flag) != std::string::npos);
    CHECK(run_tool("cd-mosaic", {"--version"}).out.find("cd-mosaic (cdkit)") != std::string::npos);

    TempDir tmp;
    cdk::test::RasterSpec a;
    a.width = a.height = 12;
    a.nodata = 255;
    cdk::test::RasterSpec b = a;
    b.gt[0] += 60;  // 6 pixels east
    cdk::test::make_raster(tmp / "a.tif", a, [](int, int x, int) { return x > 8 ? 1 : 0; });
    cdk::test::make_raster(tmp / "b.tif", b, [](int, int, int) { return 0; });
    auto r = run_tool("cd-mosaic", {tmp / "a.tif", tmp / "b.tif", "--out", tmp / "m.tif", "--of", "COG", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["width"] == 18);
    CHECK(j["changed_pixels"] == 36);
    CHECK(j["changed_area_m2"].get<double>() == Approx(3600));
    CHECK(exists(tmp / "m.tif"));

    check_one_error_line(run_tool("cd-mosaic", {tmp / "a.tif", tmp / "missing.tif", "--out", tmp / "n.tif"}),
                         "missing.tif");
    CHECK_FALSE(exists(tmp / "n.tif"));
    check_one_error_line(run_tool("cd-mosaic", {tmp / "a.tif", "--out", tmp / "m.tif"}), "m.tif");  // exists
}
