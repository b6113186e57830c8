#include <catch2/catch.hpp>

#include <gdal_priv.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cdk/geo/raster.hpp"
#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::list_dir;
using cdk::test::check_one_error_line;
using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {
const std::vector<std::string> kSceneFiles = {"label.tif", "post.tif", "pre.tif", "truth.json"};

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    return std::string(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST_CASE("cd-synth --help and --version", "[cli][synth]") {
    auto h = run_tool("cd-synth", {"--help"});
    CHECK(h.rc == 0);
    CHECK(h.out.find("--misregistration") != std::string::npos);
    CHECK(h.out.find("--overwrite") != std::string::npos);
    auto v = run_tool("cd-synth", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cdkit") != std::string::npos);
}

TEST_CASE("cd-synth writes the pair, label and truth, and a JSON summary", "[cli][synth]") {
    TempDir tmp;
    auto r = run_tool("cd-synth", {"--out", tmp / "s", "--width", "128", "--height", "96",
                                   "--bands", "5", "--type", "UInt16", "--seed", "9", "--epsg",
                                   "32631", "--pixel-size", "20", "--co", "COMPRESS=DEFLATE"});
    REQUIRE(r.rc == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["width"] == 128);
    CHECK(j["height"] == 96);
    CHECK(j["bands"] == 5);
    CHECK(j["type"] == "UInt16");
    CHECK(j["valid_pixels"].get<long long>() > 0);
    CHECK(j["car"].get<double>() >= 0);
    CHECK(list_dir(tmp / "s") == kSceneFiles);
    CHECK(r.err.find("100 - done") != std::string::npos);
    auto truth = nlohmann::json::parse(read_text(tmp / "s/truth.json"));
    CHECK(truth["seed"] == 9);
    CHECK(truth["changed_pixels"] == j["changed_pixels"]);
    auto ds = cdk::geo::open_raster(tmp / "s/post.tif");
    CHECK(ds->GetRasterCount() == 5);
    CHECK(ds->GetRasterBand(1)->GetRasterDataType() == GDT_UInt16);
    auto g = cdk::geo::grid_of(*ds);
    CHECK(cdk::geo::epsg_of(g.crs_wkt) == 32631);
    CHECK(g.geotransform[1] == 20);
    // --quiet: nothing on stderr
    auto q = run_tool("cd-synth", {"--out", tmp / "q", "--width", "64", "--height", "64", "-q"});
    CHECK(q.rc == 0);
    CHECK(q.err.empty());
}

TEST_CASE("cd-synth refuses an existing output without --overwrite and keeps it", "[cli][synth]") {
    TempDir tmp;
    std::filesystem::create_directory(tmp / "s");
    std::ofstream(tmp / "s/old.txt") << "old";
    auto r = run_tool("cd-synth", {"--out", tmp / "s", "--width", "64", "--height", "64"});
    check_one_error_line(r, tmp / "s");
    CHECK(r.err.find("--overwrite") != std::string::npos);
    CHECK(list_dir(tmp / "s") == std::vector<std::string>{"old.txt"});
    CHECK(read_text(tmp / "s/old.txt") == "old");
    CHECK(list_dir(tmp.path()) == std::vector<std::string>{"s"});
    auto o = run_tool("cd-synth",
                      {"--out", tmp / "s", "--width", "64", "--height", "64", "--overwrite", "-q"});
    CHECK(o.rc == 0);
    CHECK(list_dir(tmp / "s") == kSceneFiles);
}

TEST_CASE("cd-synth rejects bad options before writing anything", "[cli][synth]") {
    TempDir tmp;
    auto t = run_tool("cd-synth", {"--out", tmp / "s", "--type", "Float32"});
    CHECK(t.rc != 0);
    CHECK(t.rc != 1);  // a usage error: CLI11's code
    CHECK(t.err.find("--type") != std::string::npos);
    auto b = run_tool("cd-synth",
                      {"--out", tmp / "s", "--width", "64", "--height", "64", "--border", "40"});
    check_one_error_line(b, "'40'");
    auto m = run_tool("cd-synth", {"--out", tmp / "nowhere/s", "--width", "64", "--height", "64"});
    check_one_error_line(m, tmp / "nowhere");
    CHECK(list_dir(tmp.path()).empty());
}

TEST_CASE("cd-cva --help and --version", "[cli][cva]") {
    auto h = run_tool("cd-cva", {"--help"});
    CHECK(h.rc == 0);
    CHECK(h.out.find("--threshold") != std::string::npos);
    auto v = run_tool("cd-cva", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cdkit") != std::string::npos);
}

TEST_CASE("cd-cva writes a change mask and a JSON summary", "[cli][cva]") {
    TempDir tmp;
    REQUIRE(
        run_tool("cd-synth", {"--out", tmp / "s", "--width", "200", "--height", "160", "-q"}).rc ==
        0);
    auto r = run_tool("cd-cva", {"--pre", tmp / "s/pre.tif", "--post", tmp / "s/post.tif", "--out",
                                 tmp / "c.tif"});
    REQUIRE(r.rc == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["threshold_method"] == "otsu");
    CHECK(j["changed_pixels"].get<long long>() > 0);
    CHECK(j["changed_area_m2"].get<double>() == Approx(j["changed_pixels"].get<double>() * 100));
    CHECK(r.err.find("100 - done") != std::string::npos);
    auto mask = cdk::test::read_band(tmp / "c.tif");
    CHECK(std::count(mask.begin(), mask.end(), 1.0) == j["changed_pixels"].get<long long>());
    CHECK(mask[0] == 255);  // date 2's nodata border

    auto f = run_tool("cd-cva", {"--pre", tmp / "s/pre.tif", "--post", tmp / "s/post.tif", "--out",
                                 tmp / "f.tif", "--threshold", "1000", "--of", "COG", "-q"});
    CHECK(f.rc == 0);
    CHECK(nlohmann::json::parse(f.out)["changed_pixels"] == 0);
    // An existing output is kept without --overwrite.
    auto e = run_tool("cd-cva", {"--pre", tmp / "s/pre.tif", "--post", tmp / "s/post.tif", "--out",
                                 tmp / "c.tif"});
    check_one_error_line(e, tmp / "c.tif");
    CHECK(cdk::test::read_band(tmp / "c.tif") == mask);
}

TEST_CASE("cd-cva refuses bad input with one clear line, exit 1, and nothing written",
          "[cli][cva]") {
    TempDir tmp;
    REQUIRE(
        run_tool("cd-synth", {"--out", tmp / "s", "--width", "64", "--height", "64", "-q"}).rc ==
        0);
    const std::string pre = tmp / "s/pre.tif", post = tmp / "s/post.tif";
    auto m =
        run_tool("cd-cva", {"--pre", tmp / "missing.tif", "--post", post, "--out", tmp / "c.tif"});
    check_one_error_line(m, "missing.tif");
    auto f = run_tool("cd-cva", {"--pre", pre, "--post", post, "--out", tmp / "nowhere/c.tif"});
    check_one_error_line(f, tmp / "nowhere");
    auto t = run_tool(
        "cd-cva", {"--pre", pre, "--post", post, "--out", tmp / "c.tif", "--threshold", "high"});
    CHECK(t.rc != 0);
    CHECK(t.rc != 1);
    CHECK(t.err.find("high") != std::string::npos);
    CHECK(list_dir(tmp.path()) == std::vector<std::string>{"s"});
    CHECK(list_dir(tmp / "s") == kSceneFiles);
}
