#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cdk/core/csv.hpp"
#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::list_dir;
using cdk::test::check_one_error_line;
using cdk::test::run_tool;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

// DIR/tiles/tiles.csv with the given header and rows, plus empty tile files (partitioning
// only reads the CSV).
std::string write_manifest(const TempDir& tmp, const std::string& header,
                           const std::vector<std::string>& rows) {
    const fs::path dir = fs::path(tmp.path()) / "tiles";
    fs::create_directories(dir / "A");
    std::ofstream csv(dir / "tiles.csv");
    csv << header << "\n";
    for (const auto& r : rows) csv << r << "\n";
    return (dir / "tiles.csv").string();
}

const std::string kHeader = "id,scene,x,y,width,height,car,valid_fraction,a,b,label";

std::vector<std::string> rows_with_cars(const std::vector<std::string>& cars) {
    std::vector<std::string> rows;
    for (size_t i = 0; i < cars.size(); ++i) {
        const std::string id = "t" + std::to_string(i);
        rows.push_back(id + ",s," + std::to_string(16 * i) + ",0,16,16," + cars[i] + ",1,A/" + id +
                       ".tif,B/" + id + ".tif,label/" + id + ".tif");
    }
    return rows;
}

std::vector<std::string> some_cars() {
    return {"0", "0", "0.01", "0.05", "0.07", "0.12", "0.2", "0.25", "0.5", "0.9", "0", "0.03"};
}

}  // namespace

TEST_CASE("cd-partition --help and --version", "[cli][partition]") {
    auto h = run_tool("cd-partition", {"--help"});
    CHECK(h.rc == 0);
    CHECK(h.out.find("--thresholds") != std::string::npos);
    CHECK(h.out.find("--quantiles") != std::string::npos);
    CHECK(h.out.find("--val-fraction") != std::string::npos);
    auto v = run_tool("cd-partition", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cd-partition (cdkit)") != std::string::npos);
}

TEST_CASE("cd-partition writes the partitions and a JSON summary", "[cli][partition]") {
    TempDir tmp;
    const auto manifest = write_manifest(tmp, kHeader, rows_with_cars(some_cars()));
    auto r = run_tool("cd-partition", {manifest, "--out", tmp / "parts", "--seed", "3"});
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["thresholds"] == nlohmann::json{0.05, 0.2});
    CHECK(j["seed"] == 3);
    CHECK(j["totals"]["tiles"] == 12);
    // small: 0,0,0.01,0.05,0,0.03 (6); medium: 0.07,0.12,0.2 (3); large: 0.25,0.5,0.9 (3)
    CHECK(j["partitions"][0]["train"].get<int>() + j["partitions"][0]["val"].get<int>() == 6);
    CHECK(j["partitions"][1]["train"].get<int>() + j["partitions"][1]["val"].get<int>() == 3);
    CHECK(j["partitions"][2]["train"].get<int>() + j["partitions"][2]["val"].get<int>() == 3);
    CHECK(list_dir(tmp / "parts") == std::vector<std::string>{"large.csv", "medium.csv",
                                                              "origin.csv", "small.csv",
                                                              "summary.json", "val.csv"});
    // The table goes to stderr, stdout holds only the JSON.
    CHECK(r.err.find("(0.05, 0.2]") != std::string::npos);
    CHECK(r.err.find("mean CAR") != std::string::npos);

    auto q = run_tool("cd-partition", {manifest, "--out", tmp / "q", "--quantiles", "2",
                                       "--val-fraction", "0", "-q"});
    REQUIRE(q.rc == 0);
    CHECK(q.err.empty());
    const auto jq = nlohmann::json::parse(q.out);
    CHECK(jq["mode"] == "quantiles");
    CHECK(jq["thresholds"] == nlohmann::json{0.05});  // the median CAR
    CHECK(jq["partitions"][0]["name"] == "small");    // one threshold: small, large
    CHECK(cdk::read_csv(tmp / "q/small.csv").rows.size() == 6);
    CHECK(cdk::read_csv(tmp / "q/large.csv").rows.size() == 6);

    auto t = run_tool("cd-partition", {manifest, "-o", tmp / "t", "--thresholds", "0.1", "-q"});
    REQUIRE(t.rc == 0);
    CHECK(cdk::read_csv(tmp / "t/small.csv").rows.size() +
              cdk::read_csv(tmp / "t/large.csv").rows.size() +
              cdk::read_csv(tmp / "t/val.csv").rows.size() ==
          12);
}

TEST_CASE("cd-partition refuses bad input with one clear line, exit 1, and nothing written",
          "[cli][partition]") {
    TempDir tmp;
    const auto manifest = write_manifest(tmp, kHeader, rows_with_cars(some_cars()));
    const std::vector<std::string> inputs = {"tiles"};
    const std::string out = tmp / "parts";

    SECTION("missing manifest") {
        auto r = run_tool("cd-partition", {tmp / "nope.csv", "--out", out});
        check_one_error_line(r, "nope.csv");
    }
    SECTION("a manifest without a car column") {
        TempDir t2;
        const auto m = write_manifest(t2, "id,scene,x,y,width,height,valid_fraction,a,b,label",
                                      {"t0,s,0,0,16,16,1,A/t0.tif,B/t0.tif,label/t0.tif"});
        auto r = run_tool("cd-partition", {m, "--out", t2 / "parts"});
        check_one_error_line(r, "'car'");
        CHECK(r.err.find(m) != std::string::npos);
        CHECK(list_dir(t2.path()) == inputs);
    }
    SECTION("an unlabelled tile (empty car)") {
        TempDir t2;
        auto cars = some_cars();
        cars[4] = "";
        const auto m = write_manifest(t2, kHeader, rows_with_cars(cars));
        auto r = run_tool("cd-partition", {m, "--out", t2 / "parts"});
        check_one_error_line(r, "'t4'");
        CHECK(r.err.find(m) != std::string::npos);
        CHECK(list_dir(t2.path()) == inputs);
    }
    SECTION("thresholds not increasing") {
        auto r = run_tool("cd-partition", {manifest, "--out", out, "--thresholds", "0.2,0.05"});
        check_one_error_line(r, "0.2,0.05");
    }
    SECTION("thresholds outside (0, 1)") {
        auto r = run_tool("cd-partition", {manifest, "--out", out, "--thresholds", "0,0.5"});
        check_one_error_line(r, "'0'");
        auto r2 = run_tool("cd-partition", {manifest, "--out", out, "--thresholds", "0.5,1.5"});
        CHECK(r2.rc != 0);
    }
    SECTION("thresholds and quantiles together: a usage error") {
        auto r = run_tool("cd-partition",
                          {manifest, "--out", out, "--thresholds", "0.1", "--quantiles", "3"});
        CHECK(r.rc != 0);
        CHECK(r.rc != 1);
        CHECK(r.out.empty());
    }
    SECTION("validation fraction of 1") {
        auto r = run_tool("cd-partition", {manifest, "--out", out, "--val-fraction", "1"});
        check_one_error_line(r, "'1'");
    }
    SECTION("no --out") {
        auto r = run_tool("cd-partition", {manifest});
        CHECK(r.rc != 0);
        CHECK(r.rc != 1);
    }
    SECTION("an existing output folder without --overwrite stays untouched") {
        fs::create_directories(out);
        std::ofstream(out + "/keep.txt") << "old";
        auto r = run_tool("cd-partition", {manifest, "--out", out});
        check_one_error_line(r, out);
        CHECK(r.err.find("--overwrite") != std::string::npos);
        CHECK(list_dir(out) == std::vector<std::string>{"keep.txt"});
        CHECK(list_dir(tmp.path()) == std::vector<std::string>{"parts", "tiles"});
        // With --overwrite it is replaced as a whole.
        auto o = run_tool("cd-partition", {manifest, "--out", out, "--overwrite", "-q"});
        CHECK(o.rc == 0);
        CHECK(!cdk::test::exists(out + "/keep.txt"));
        CHECK(cdk::test::exists(out + "/origin.csv"));
        CHECK(list_dir(tmp.path()) == std::vector<std::string>{"parts", "tiles"});
        return;
    }
    CHECK(list_dir(tmp.path()) == inputs);
}

TEST_CASE("cd-partition --val-scenes holds out whole scenes and warns about overlapping draws",
          "[cli][partition]") {
    TempDir tmp;
    // Two scenes of 16-px tiles at stride 8: neighbours share half their pixels.
    std::vector<std::string> rows;
    for (const char* scene : {"rome", "oslo"})
        for (int i = 0; i < 10; ++i) {
            const std::string id = std::string(scene) + std::to_string(i);
            rows.push_back(id + "," + scene + "," + std::to_string(8 * i) + ",0,16,16," +
                           (i % 2 ? "0.01" : "0.3") + ",1,A/" + id + ".tif,B/" + id +
                           ".tif,label/" + id + ".tif");
        }
    const auto manifest = write_manifest(tmp, kHeader, rows);

    auto drawn = run_tool("cd-partition", {manifest, "--out", tmp / "drawn", "--val-fraction", "0.2"});
    REQUIRE(drawn.rc == 0);
    CHECK(drawn.err.find("validation tiles overlap training tiles") != std::string::npos);
    CHECK(nlohmann::json::parse(drawn.out)["val_overlap"]["tiles"].get<int>() > 0);

    auto held = run_tool("cd-partition", {manifest, "--out", tmp / "held", "--val-scenes", "oslo"});
    REQUIRE(held.rc == 0);
    CHECK(held.err.find("overlap") == std::string::npos);
    const auto j = nlohmann::json::parse(held.out);
    CHECK(j["val_scenes"] == nlohmann::json{"oslo"});
    CHECK(j["val_overlap"]["tiles"] == 0);
    const auto val = cdk::read_csv(tmp / "held/val.csv");
    REQUIRE(val.rows.size() == 10);
    for (const auto& r : val.rows) CHECK(r[1] == "oslo");
    CHECK(cdk::read_csv(tmp / "held/origin.csv").rows.size() == 10);

    auto unknown = run_tool("cd-partition", {manifest, "--out", tmp / "u", "--val-scenes", "oslo,lima"});
    check_one_error_line(unknown, "'lima'");
    CHECK(unknown.err.find("oslo, rome") != std::string::npos);
    CHECK(!fs::exists(tmp / "u"));
    auto both = run_tool("cd-partition", {manifest, "--out", tmp / "b", "--val-scenes", "oslo",
                                          "--val-fraction", "0.2"});
    CHECK(both.rc != 0);
    CHECK(both.rc != 1);  // a usage error
    CHECK(!fs::exists(tmp / "b"));

    // Blocks of 24 px (3 tile centres) from each scene, their neighbours in no file.
    auto blocks = run_tool("cd-partition", {manifest, "--out", tmp / "blocks", "--val-fraction",
                                            "0.3", "--val-blocks", "24"});
    INFO(blocks.err);
    REQUIRE(blocks.rc == 0);
    CHECK(blocks.err.find("overlap training tiles") == std::string::npos);
    CHECK(blocks.err.find("overlap validation blocks and are in no file (--val-blocks 24)") !=
          std::string::npos);
    const auto b = nlohmann::json::parse(blocks.out);
    CHECK(b["val_block"] == 24);
    CHECK(b["val_overlap"]["tiles"] == 0);
    // Blocks hold 2 or 3 tiles; each scene's share is 3: one block of 3, or two of 2.
    CHECK(b["totals"]["val"].get<int>() >= 6);
    CHECK(b["totals"]["val"].get<int>() <= 8);
    CHECK(b["totals"]["left_out"].get<int>() >= 2);
    std::set<std::string> val_scenes_seen;
    for (const auto& r : cdk::read_csv(tmp / "blocks/val.csv").rows) val_scenes_seen.insert(r[1]);
    CHECK(val_scenes_seen == std::set<std::string>{"oslo", "rome"});
    auto blocks_and_scenes = run_tool("cd-partition", {manifest, "--out", tmp / "bs", "--val-scenes",
                                                       "oslo", "--val-blocks", "24"});
    CHECK(blocks_and_scenes.rc != 0);
    CHECK(blocks_and_scenes.rc != 1);  // a usage error
    CHECK(!fs::exists(tmp / "bs"));
}
