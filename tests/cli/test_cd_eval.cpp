#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::make_raster;
using cdk::test::RasterSpec;
using cdk::test::check_one_error_line;
using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {

// ref: change for x < 8; pred: change for x < 6 and on the last row. 16x16.
void make_masks(const TempDir& tmp) {
    RasterSpec s;
    make_raster(tmp / "ref.tif", s, [](int, int x, int) { return x < 8 ? 1 : 0; });
    make_raster(tmp / "pred.tif", s, [](int, int x, int y) { return x < 6 || y == 15 ? 1 : 0; });
}

}  // namespace

TEST_CASE("cd-eval --help and --version", "[cli][eval]") {
    auto h = run_tool("cd-eval", {"--help"});
    CHECK(h.rc == 0);
    CHECK(h.out.find("--pairs") != std::string::npos);
    CHECK(h.out.find("--pred") != std::string::npos);
    auto v = run_tool("cd-eval", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cd-eval (cdkit)") != std::string::npos);
}

TEST_CASE("cd-eval prints per-scene and pooled metrics as JSON", "[cli][eval]") {
    TempDir tmp;
    make_masks(tmp);
    auto r = run_tool("cd-eval", {"--pred", tmp / "pred.tif", "--ref", tmp / "ref.tif"});
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    // tp: x < 6 (16 rows) + x 6..7 on row 15 = 96 + 2; fp: x >= 8 on row 15 = 8;
    // fn: x 6..7 on rows 0..14 = 30; tn: x >= 8 on rows 0..14 = 120.
    const auto& c = j["pooled"]["confusion"];
    CHECK(c["tp"] == 98);
    CHECK(c["fp"] == 8);
    CHECK(c["fn"] == 30);
    CHECK(c["tn"] == 120);
    CHECK(c["excluded"] == 0);
    CHECK(j["pooled"]["change"]["f1"].get<double>() == Approx(196.0 / 234));
    REQUIRE(j["scenes"].size() == 1);
    CHECK(j["scenes"][0]["scene"] == "ref");
    CHECK(j["scenes"][0]["confusion"] == c);
    CHECK(r.err.find("100 - done") != std::string::npos);

    auto q = run_tool("cd-eval", {"--pred", tmp / "pred.tif", "--ref", tmp / "ref.tif", "--quiet",
                                  "--scene-name", "city", "--strip-rows", "5"});
    REQUIRE(q.rc == 0);
    CHECK(q.err.empty());
    const auto k = nlohmann::json::parse(q.out);
    CHECK(k["scenes"][0]["scene"] == "city");
    CHECK(k["pooled"]["confusion"] == c);
}

TEST_CASE("cd-eval --pairs pools the scenes' confusions", "[cli][eval]") {
    TempDir tmp;
    make_masks(tmp);
    RasterSpec s;
    s.width = 5;
    s.height = 4;
    s.nodata = 255;
    make_raster(tmp / "ref2.tif", s, [](int, int x, int) { return x == 0 ? 255 : 1; });
    make_raster(tmp / "pred2.tif", s, [](int, int x, int y) { return y == 0 ? 0 : 1; });
    {
        std::ofstream csv(tmp / "pairs.csv");
        csv << "scene,pred,ref\none,pred.tif,ref.tif\ntwo,pred2.tif,ref2.tif\n";
    }
    auto r = run_tool("cd-eval", {"--pairs", tmp / "pairs.csv", "-q"});
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(j["scenes"].size() == 2);
    const auto& two = j["scenes"][1]["confusion"];
    CHECK(j["scenes"][1]["scene"] == "two");
    CHECK(two["excluded"] == 4);
    CHECK(two["tp"] == 12);
    CHECK(two["fn"] == 4);
    for (const char* k : {"tp", "fp", "fn", "tn", "excluded", "valid"}) {
        INFO(k);
        CHECK(j["pooled"]["confusion"][k].get<long long>() ==
              j["scenes"][0]["confusion"][k].get<long long>() +
                  j["scenes"][1]["confusion"][k].get<long long>());
    }
}

TEST_CASE("cd-eval refuses bad input with one clear line and exit 1", "[cli][eval]") {
    TempDir tmp;
    make_masks(tmp);
    const std::string pred = tmp / "pred.tif", ref = tmp / "ref.tif";
    {
        std::ofstream f(tmp / "x.tif");
        f << "this is not a raster\n";
    }
    RasterSpec shifted;
    shifted.gt[3] -= 20;
    make_raster(tmp / "shifted.tif", shifted, [](int, int, int) { return 0; });
    const auto before = cdk::test::list_dir(tmp.path());

    check_one_error_line(run_tool("cd-eval", {"--pred", tmp / "missing.tif", "--ref", ref}),
                         {"'" + (tmp / "missing.tif") + "'", "no such file"});
    check_one_error_line(run_tool("cd-eval", {"--pred", tmp / "x.tif", "--ref", ref}),
                         {"'" + (tmp / "x.tif") + "'", "cannot open raster"});
    check_one_error_line(run_tool("cd-eval", {"--pred", pred, "--ref", tmp / "x.tif"}), "x.tif");
    check_one_error_line(run_tool("cd-eval", {"--pred", tmp / "shifted.tif", "--ref", ref}),
                         {"'" + (tmp / "shifted.tif") + "'", "'" + ref + "'",
                          "prediction is 16x16, EPSG:32633", "reference is 16x16, EPSG:32633"});
    check_one_error_line(run_tool("cd-eval", {"--pairs", tmp / "missing.csv"}), "missing.csv");
    CHECK(cdk::test::list_dir(tmp.path()) == before);  // cd-eval writes no file
}

TEST_CASE("cd-eval usage errors: exactly one of --pred/--ref or --pairs", "[cli][eval]") {
    TempDir tmp;
    make_masks(tmp);
    const std::string pred = tmp / "pred.tif", ref = tmp / "ref.tif";
    auto none = run_tool("cd-eval", {});
    CHECK(none.rc != 0);
    CHECK(none.rc != 1);  // CLI11's usage code, not a run-time error
    CHECK(none.out.empty());
    CHECK(none.err.find("--pairs") != std::string::npos);
    auto half = run_tool("cd-eval", {"--pred", pred});
    CHECK(half.rc != 0);
    CHECK(half.err.find("--ref") != std::string::npos);
    auto both = run_tool("cd-eval", {"--pred", pred, "--ref", ref, "--pairs", tmp / "p.csv"});
    CHECK(both.rc != 0);
    CHECK(both.err.find("--pairs") != std::string::npos);
    CHECK(both.out.empty());
}
