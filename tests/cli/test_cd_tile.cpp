#include <catch2/catch.hpp>

#include <gdal_priv.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/support.hpp"

using cdk::test::make_raster;
using cdk::test::RasterSpec;
using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {
void make_small_pair(const TempDir& tmp) {
    RasterSpec s;
    s.width = s.height = 40;
    s.bands = 3;
    make_raster(tmp / "pre.tif", s, [](int b, int x, int y) { return 10 * b + x % 7 + 1; });
    make_raster(tmp / "post.tif", s, [](int b, int x, int y) { return 10 * b + (x > 20 ? 90 : x % 7 + 1); });
    s.bands = 1;
    make_raster(tmp / "label.tif", s, [](int, int x, int) { return x > 20 ? 1 : 0; });
}

// Only the given inputs remain: no output and no temporary left behind.
void check_nothing_written(const TempDir& tmp, std::vector<std::string> inputs) {
    std::sort(inputs.begin(), inputs.end());
    CHECK(cdk::test::list_dir(tmp.path()) == inputs);
}

// One line on stderr, starting with ERROR and naming the culprit.
void check_one_error_line(const cdk::test::CommandResult& r, const std::string& culprit) {
    CHECK(r.rc == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("ERROR: ") != std::string::npos);
    CHECK(r.err.find(culprit) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}
}  // namespace

TEST_CASE("cd-tile --help and --version", "[cli][tile]") {
    auto h = run_tool("cd-tile", {"--help"});
    CHECK(h.rc == 0);
    CHECK(h.out.find("--tile-size") != std::string::npos);
    auto v = run_tool("cd-tile", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cdkit") != std::string::npos);
}

TEST_CASE("cd-tile writes tiles and prints a JSON summary", "[cli][tile]") {
    TempDir tmp;
    make_small_pair(tmp);
    auto r = run_tool("cd-tile", {"--pre", tmp / "pre.tif", "--post", tmp / "post.tif", "--label", tmp / "label.tif",
                                  "--out", tmp / "out", "--tile-size", "16", "--co", "COMPRESS=DEFLATE"});
    REQUIRE(r.rc == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["tiles"] == 9);
    CHECK(cdk::test::exists(tmp / "out/tiles.csv"));
    CHECK(cdk::test::exists(tmp / "out/dataset.json"));
    CHECK(cdk::test::list_dir(tmp / "out/A").size() == 9);
    CHECK(r.err.find("100 - done") != std::string::npos);  // GDAL-style progress, not a tty
    // --quiet: nothing on stderr
    auto q = run_tool("cd-tile", {"--pre", tmp / "pre.tif", "--post", tmp / "post.tif", "--out", tmp / "out2",
                                  "--tile-size", "16", "--quiet"});
    CHECK(q.rc == 0);
    CHECK(q.err.empty());
    // COG tiles
    auto c = run_tool("cd-tile", {"--pre", tmp / "pre.tif", "--post", tmp / "post.tif", "--out", tmp / "out3",
                                  "--tile-size", "32", "--of", "COG", "-q"});
    CHECK(c.rc == 0);
}

TEST_CASE("cd-tile refuses bad input with one clear line, exit 1, and nothing written", "[cli][tile]") {
    TempDir tmp;
    make_small_pair(tmp);
    const std::vector<std::string> inputs = {"label.tif", "post.tif", "pre.tif"};
    const std::string pre = tmp / "pre.tif", post = tmp / "post.tif", out = tmp / "out";

    SECTION("missing file") {
        auto r = run_tool("cd-tile", {"--pre", pre, "--post", tmp / "nope.tif", "--out", out});
        check_one_error_line(r, "nope.tif");
        check_nothing_written(tmp, inputs);
    }
    SECTION("not a raster") {
        std::ofstream(tmp / "text.tif") << "hello";
        auto r = run_tool("cd-tile", {"--pre", pre, "--post", tmp / "text.tif", "--out", out});
        check_one_error_line(r, "text.tif");
        check_nothing_written(tmp, {"label.tif", "post.tif", "pre.tif", "text.tif"});
    }
    SECTION("label on another grid") {
        RasterSpec s;
        s.width = 41;
        s.height = 40;
        make_raster(tmp / "biglabel.tif", s, [](int, int, int) { return 0; });
        auto r = run_tool("cd-tile", {"--pre", pre, "--post", post, "--label", tmp / "biglabel.tif", "--out", out});
        check_one_error_line(r, "biglabel.tif");
        check_nothing_written(tmp, {"biglabel.tif", "label.tif", "post.tif", "pre.tif"});
    }
    SECTION("dates that do not overlap") {
        RasterSpec s;
        s.width = s.height = 40;
        s.bands = 3;
        s.gt[0] += 5e5;
        make_raster(tmp / "far.tif", s, [](int, int, int) { return 1; });
        auto r = run_tool("cd-tile", {"--pre", pre, "--post", tmp / "far.tif", "--out", out});
        check_one_error_line(r, "do not overlap");
        check_nothing_written(tmp, {"far.tif", "label.tif", "post.tif", "pre.tif"});
    }
    SECTION("dates with different band counts") {
        RasterSpec s;
        s.width = s.height = 40;
        s.bands = 4;
        make_raster(tmp / "four.tif", s, [](int, int, int) { return 1; });
        auto r = run_tool("cd-tile", {"--pre", pre, "--post", tmp / "four.tif", "--out", out});
        check_one_error_line(r, "band counts");
        check_nothing_written(tmp, {"four.tif", "label.tif", "post.tif", "pre.tif"});
    }
    SECTION("a raster with ground control points only") {
        auto qb = cdk::test::shared_data("geotiff/QB_Toulouse_Ortho_XS.tif");
        if (!qb) {
            WARN("skipped: ../shared/data/geotiff/QB_Toulouse_Ortho_XS.tif is absent");
            return;
        }
        auto r = run_tool("cd-tile", {"--pre", *qb, "--post", *qb, "--out", out});
        check_one_error_line(r, "ground control points");
        check_nothing_written(tmp, inputs);
    }
    SECTION("an output folder that exists without --overwrite") {
        std::filesystem::create_directory(out);
        std::ofstream(out + "/keep.txt") << "mine";
        auto r = run_tool("cd-tile", {"--pre", pre, "--post", post, "--out", out});
        check_one_error_line(r, "--overwrite");
        CHECK(cdk::test::list_dir(out) == std::vector<std::string>{"keep.txt"});
        check_nothing_written(tmp, {"label.tif", "out", "post.tif", "pre.tif"});
        auto ok = run_tool("cd-tile", {"--pre", pre, "--post", post, "--out", out, "--overwrite", "-q", "--tile-size", "20"});
        CHECK(ok.rc == 0);
        CHECK_FALSE(cdk::test::exists(out + "/keep.txt"));
        CHECK(cdk::test::exists(out + "/tiles.csv"));
        check_nothing_written(tmp, {"label.tif", "out", "post.tif", "pre.tif"});
    }
    SECTION("usage errors exit with CLI11's code, not 0 or 1") {
        auto r = run_tool("cd-tile", {"--pre", pre, "--post", post});
        CHECK(r.rc != 0);
        CHECK(r.rc != 1);
        CHECK(r.err.find("--out") != std::string::npos);
        auto t = run_tool("cd-tile", {"--pre", pre, "--post", post, "--out", out, "--tile-size", "3"});
        CHECK(t.rc != 0);
        check_nothing_written(tmp, inputs);
    }
}
