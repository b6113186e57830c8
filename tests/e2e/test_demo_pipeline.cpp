// The README's main job, end to end through the built programs, on the embedded default:
// cd-synth -> cd-tile -> cd-partition -> cd-cva -> cd-eval, with checks that the tools agree
// with each other (the tiles' CAR adds up to the generator's, partitions cover the tiles).
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cdk/core/csv.hpp"
#include "cdk/geo/raster.hpp"
#include "support/support.hpp"

using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {
nlohmann::json run_json(const std::string& tool, const std::vector<std::string>& args) {
    auto r = run_tool(tool, args);
    INFO(tool << " stderr: " << r.err);
    REQUIRE(r.rc == 0);
    return nlohmann::json::parse(r.out);
}
}  // namespace

TEST_CASE("synthetic pair -> tiles -> partitions -> CVA change map -> evaluation", "[e2e]") {
    TempDir tmp;
    auto synth = run_json("cd-synth", {"--out", tmp / "scene", "--width", "256", "--height", "256", "--bands", "3",
                                       "--type", "UInt16", "--seed", "3", "-q"});
    const double truth_car = synth["car"];
    REQUIRE(truth_car > 0.005);

    // Tiles that partition the scene exactly (256 = 4 x 64, no overlap, all kept).
    auto tiles = run_json("cd-tile", {"--pre", tmp / "scene/pre.tif", "--post", tmp / "scene/post.tif", "--label",
                                      tmp / "scene/label.tif", "--out", tmp / "tiles", "--tile-size", "64",
                                      "--min-valid", "0", "-q"});
    auto manifest = cdk::read_csv(tmp / "tiles/tiles.csv");
    REQUIRE(tiles["tiles"] == manifest.rows.size());
    double changed = 0, valid = 0;
    for (const auto& r : manifest.rows) {
        const double v = std::stod(r[7]) * std::stoi(r[4]) * std::stoi(r[5]);
        valid += v;
        changed += std::stod(r[6]) * v;
    }
    CHECK(valid == Approx(synth["valid_pixels"].get<double>()));
    CHECK(changed / valid == Approx(truth_car).epsilon(1e-5));  // the summary rounds to 6 significant digits

    auto parts = run_json("cd-partition", {tmp / "tiles/tiles.csv", "--out", tmp / "parts", "--quantiles", "2",
                                           "--val-fraction", "0.25", "-q"});
    auto origin = cdk::read_csv(tmp / "parts/origin.csv");
    auto val = cdk::read_csv(tmp / "parts/val.csv");
    CHECK(origin.rows.size() + val.rows.size() == manifest.rows.size());
    CHECK(val.rows.size() >= 2);
    // Paths in the partition manifests still point at the tiles.
    CHECK(cdk::test::exists(tmp / "parts" + "/" + origin.rows[0][origin.column("a")]));

    auto cva = run_json("cd-cva", {"--pre", tmp / "scene/pre.tif", "--post", tmp / "scene/post.tif", "--out",
                                   tmp / "change.tif", "-q"});
    auto change = cdk::geo::open_raster(tmp / "change.tif");
    auto pre = cdk::geo::open_raster(tmp / "scene/pre.tif");
    CHECK(cdk::geo::grid_of(*change).same_as(cdk::geo::grid_of(*pre)));
    CHECK(cdk::test::exists(tmp / "change.qml"));  // QGIS style sidecar
    CHECK(cva["style"] == tmp / "change.qml");

    auto eval = run_json("cd-eval", {"--pred", tmp / "change.tif", "--ref", tmp / "scene/label.tif", "-q"});
    const double f1 = eval["pooled"]["change"]["f1"];
    CHECK(f1 > 0.3);  // far above chance (about 2 x CAR) for this simple baseline
    CHECK(eval["pooled"]["confusion"]["valid"].get<double>() == Approx(valid));
}

TEST_CASE("many scenes through a pairs file, evaluated pooled and per scene", "[e2e]") {
    TempDir tmp;
    for (int seed : {11, 12})
        run_json("cd-synth", {"--out", tmp / ("s" + std::to_string(seed)), "--width", "160", "--height", "128",
                              "--bands", "2", "--type", "UInt8", "--seed", std::to_string(seed), "-q"});
    std::ofstream(tmp / "pairs.csv") << "scene,pre,post,label\n"
                                     << "a,s11/pre.tif,s11/post.tif,s11/label.tif\n"
                                     << "b,s12/pre.tif,s12/post.tif,s12/label.tif\n";
    auto tiles = run_json("cd-tile", {"--pairs", tmp / "pairs.csv", "--out", tmp / "tiles", "--tile-size", "64",
                                      "--overlap", "16", "-q"});
    CHECK(tiles["scenes"] == 2);
    std::ifstream jf(tmp / "tiles/dataset.json");
    auto ds = nlohmann::json::parse(jf);
    CHECK(ds["bands"] == 2);
    CHECK(ds["scenes"].size() == 2);
    for (const char* s : {"s11", "s12"})
        run_json("cd-cva", {"--pre", tmp / s + "/pre.tif", "--post", tmp / s + "/post.tif", "--out",
                            tmp / s + "/change.tif", "-q"});
    std::ofstream(tmp / "eval.csv") << "scene,pred,ref\na,s11/change.tif,s11/label.tif\nb,s12/change.tif,s12/label.tif\n";
    auto eval = run_json("cd-eval", {"--pairs", tmp / "eval.csv", "-q"});
    REQUIRE(eval["scenes"].size() == 2);
    long long tp = 0;
    for (const auto& s : eval["scenes"]) tp += s["confusion"]["tp"].get<long long>();
    CHECK(eval["pooled"]["confusion"]["tp"].get<long long>() == tp);
}
