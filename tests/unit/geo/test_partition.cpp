#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/geo/partition.hpp"
#include "support/support.hpp"

using namespace cdk::geo;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A cd-tile style manifest at DIR/tiles/tiles.csv with one row per CAR cell, empty tile
// files under A/ B/ label/, and an extra column (holding a comma) that must survive.
std::string make_manifest(const TempDir& tmp, const std::vector<std::string>& cars) {
    const fs::path dir = fs::path(tmp.path()) / "tiles";
    for (const char* sub : {"A", "B", "label"}) fs::create_directories(dir / sub);
    std::ofstream csv(dir / "tiles.csv");
    csv << "id,scene,x,y,width,height,car,valid_fraction,a,b,label,note\n";
    for (size_t i = 0; i < cars.size(); ++i) {
        const std::string id = "s_" + std::to_string(16 * i) + "_0";
        for (const char* sub : {"A", "B", "label"}) std::ofstream(dir / sub / (id + ".tif"));
        csv << id << ",s," << 16 * i << ",0,16,16," << cars[i] << ",1,A/" << id << ".tif,B/" << id
            << ".tif,label/" << id << ".tif,\"n," << i << "\"\n";
    }
    return (dir / "tiles.csv").string();
}

// n CARs spread over [0, 1] with a block of exact zeros, like OSCD.
std::vector<std::string> spread_cars(int n) {
    std::vector<std::string> cars;
    for (int i = 0; i < n; ++i)
        cars.push_back(i % 4 == 0 ? "0" : cdk::format_number(std::fmod(i * 0.137, 1.0)));
    return cars;
}

std::map<std::string, std::vector<std::string>> rows_by_id(const cdk::CsvTable& t) {
    std::map<std::string, std::vector<std::string>> m;
    for (const auto& r : t.rows) m[r[0]] = r;
    return m;
}

std::vector<std::string> ids(const cdk::CsvTable& t) {
    std::vector<std::string> v;
    for (const auto& r : t.rows) v.push_back(r[0]);
    return v;
}

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

TEST_CASE("partition_of follows the paper exactly at the thresholds", "[geo][partition]") {
    const std::vector<double> t{0.05, 0.20};
    CHECK(partition_of(0.0, t) == 0);
    CHECK(partition_of(0.05, t) == 0);
    CHECK(partition_of(0.05 + 1e-12, t) == 1);
    CHECK(partition_of(0.2, t) == 1);
    CHECK(partition_of(0.2 + 1e-12, t) == 2);
    CHECK(partition_of(1.0, t) == 2);
    CHECK(partition_of(0.5, {0.5}) == 0);
    CHECK(partition_of(0.7, {}) == 0);
    CHECK(partition_names(1) == std::vector<std::string>{"small", "large"});
    CHECK(partition_names(2) == std::vector<std::string>{"small", "medium", "large"});
    CHECK(partition_names(3) == std::vector<std::string>{"p1", "p2", "p3", "p4"});
    CHECK(partition_names(0) == std::vector<std::string>{"p1"});
}

TEST_CASE("quantile thresholds give equal counts, and handle ties", "[geo][partition]") {
    // 12 distinct CARs, K = 4: three tiles per partition.
    std::vector<double> cars;
    for (int i = 12; i >= 1; --i) cars.push_back(i / 100.0);
    auto t = quantile_thresholds(cars, 4);
    REQUIRE(t == std::vector<double>{0.03, 0.06, 0.09});
    std::vector<int> counts(4, 0);
    for (double c : cars) counts[partition_of(c, t)]++;
    CHECK(counts == std::vector<int>{3, 3, 3, 3});

    // 10 distinct CARs, K = 3: counts differ by at most one.
    cars.clear();
    for (int i = 1; i <= 10; ++i) cars.push_back(i / 20.0);
    t = quantile_thresholds(cars, 3);
    REQUIRE(t.size() == 2);
    counts.assign(3, 0);
    for (double c : cars) counts[partition_of(c, t)]++;
    CHECK(*std::max_element(counts.begin(), counts.end()) -
              *std::min_element(counts.begin(), counts.end()) <=
          1);

    // Six tiles with CAR 0 (OSCD-like): ties go to the lower partition, the duplicate
    // threshold is dropped with a warning.
    std::vector<std::string> warnings;
    cdk::RunContext ctx(
        [&](cdk::LogLevel level, const std::string& m) {
            if (level == cdk::LogLevel::Warning) warnings.push_back(m);
        },
        {});
    cars = {0, 0.4, 0, 0.1, 0, 0.3, 0, 0, 0.2, 0};
    t = quantile_thresholds(cars, 4, ctx);
    REQUIRE(t == std::vector<double>{0.0, 0.2});
    counts.assign(3, 0);
    for (double c : cars) counts[partition_of(c, t)]++;
    CHECK(counts == std::vector<int>{6, 2, 2});
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("made 3") != std::string::npos);

    // Ties at the top: a threshold at the largest CAR would leave an empty partition.
    t = quantile_thresholds({0.1, 0.5, 0.5, 0.5}, 2);
    CHECK(t.empty());
    CHECK(quantile_thresholds({}, 3).empty());
    CHECK_THROWS_AS(quantile_thresholds({0.1}, 1), cdk::ConfigError);
}

TEST_CASE("seeded permutations are fixed across platforms", "[geo][partition]") {
    // Pinned values: std::mt19937_64's sequence is specified by the standard and the
    // bounded draw and Fisher-Yates are our own, so these never change.
    CHECK(seeded_permutation(10, 0) == std::vector<std::size_t>{7, 2, 0, 8, 3, 9, 6, 1, 5, 4});
    CHECK(seeded_permutation(10, 42) == std::vector<std::size_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6});
    auto p = seeded_permutation(1000, 7);
    std::sort(p.begin(), p.end());
    for (std::size_t i = 0; i < p.size(); ++i) REQUIRE(p[i] == i);
    CHECK(seeded_permutation(0, 1).empty());
}

TEST_CASE("validate refuses inconsistent options", "[geo][partition]") {
    PartitionOptions o;
    o.manifest = "tiles.csv";
    o.out = "parts";
    CHECK_NOTHROW(validate(o));
    CHECK(o.thresholds == std::vector<double>{0.05, 0.20});
    auto bad = [&](auto change) {
        PartitionOptions b = o;
        change(b);
        CHECK_THROWS_AS(validate(b), cdk::ConfigError);
    };
    bad([](PartitionOptions& b) { b.thresholds = {0.2, 0.05}; });
    bad([](PartitionOptions& b) { b.thresholds = {0.1, 0.1}; });
    bad([](PartitionOptions& b) { b.thresholds = {0.0, 0.5}; });
    bad([](PartitionOptions& b) { b.thresholds = {0.5, 1.0}; });
    bad([](PartitionOptions& b) { b.thresholds = {std::nan("")}; });
    bad([](PartitionOptions& b) { b.thresholds.clear(); });
    bad([](PartitionOptions& b) { b.quantiles = 3, b.thresholds = {0.1}; });
    bad([](PartitionOptions& b) { b.quantiles = 1; });
    bad([](PartitionOptions& b) { b.val_fraction = 1.0; });
    bad([](PartitionOptions& b) { b.val_fraction = -0.1; });
    bad([](PartitionOptions& b) { b.out.clear(); });
    // Quantiles with the untouched default thresholds (or none) are fine.
    PartitionOptions q = o;
    q.quantiles = 3;
    CHECK_NOTHROW(validate(q));
    q.thresholds.clear();
    CHECK_NOTHROW(validate(q));
}

TEST_CASE("partition_tiles splits by CAR, keeps every row once, and rewrites paths",
          "[geo][partition]") {
    TempDir tmp;
    const auto cars = spread_cars(60);
    PartitionOptions o;
    o.manifest = make_manifest(tmp, cars);
    o.out = tmp / "parts";
    const auto summary = partition_tiles(o);

    CHECK(cdk::test::list_dir(tmp / "parts") ==
          std::vector<std::string>{"large.csv", "medium.csv", "origin.csv", "small.csv",
                                   "summary.json", "val.csv"});
    CHECK(cdk::test::list_dir(tmp.path()) ==
          std::vector<std::string>{"parts", "tiles"});  // no temporaries
    const auto input = cdk::read_csv(o.manifest);
    const auto origin = cdk::read_csv(tmp / "parts/origin.csv");
    const auto val = cdk::read_csv(tmp / "parts/val.csv");
    auto header = input.header;
    header.push_back("partition");
    CHECK(origin.header == header);
    CHECK(val.header == header);

    // Union of origin and val = input, nothing lost or duplicated.
    auto all = ids(origin);
    const auto v = ids(val);
    all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    auto expected = ids(input);
    std::sort(expected.begin(), expected.end());
    CHECK(all == expected);

    // Partition files together = origin; the partition column and CAR range agree.
    const std::map<std::string, std::pair<double, double>> range = {
        {"small", {-1, 0.05}}, {"medium", {0.05, 0.2}}, {"large", {0.2, 1}}};
    std::vector<std::string> from_parts;
    std::map<std::string, int> val_per_part;
    for (const auto& r : val.rows) val_per_part[r.back()]++;
    for (const auto& [name, lohi] : range) {
        const auto part = cdk::read_csv(tmp / ("parts/" + name + ".csv"));
        for (const auto& r : part.rows) {
            CHECK(r.back() == name);
            const double car = std::stod(r[6]);
            CHECK(car > lohi.first);
            CHECK(car <= lohi.second);
            from_parts.push_back(r[0]);
        }
        const auto n = part.rows.size() + val_per_part[name];
        REQUIRE(n >= 2);
        CHECK(val_per_part[name] >= 1);  // every CAR range is validated
        CHECK(val_per_part[name] == std::max<long>(1, std::lround(0.1 * n)));
    }
    std::sort(from_parts.begin(), from_parts.end());
    auto origin_ids = ids(origin);
    std::sort(origin_ids.begin(), origin_ids.end());
    CHECK(from_parts == origin_ids);

    // Extra columns kept; paths rewritten relative to the output and resolving to the same files.
    const auto in_rows = rows_by_id(input);
    for (const auto* t : {&origin, &val}) {
        for (const auto& r : t->rows) {
            const auto& src = in_rows.at(r[0]);
            CHECK(r[11] == src[11]);
            CHECK(r[6] == src[6]);
            for (int c : {8, 9, 10}) {
                CHECK(r[c] != src[c]);
                CHECK(r[c].rfind("../tiles/", 0) == 0);
                CHECK(fs::equivalent(fs::path(tmp / "parts") / r[c],
                                     fs::path(tmp / "tiles") / src[c]));
            }
        }
    }

    // The summary, on disk and returned.
    const auto disk = nlohmann::json::parse(slurp(tmp / "parts/summary.json"));
    CHECK(disk == summary);
    CHECK(summary["mode"] == "thresholds");
    CHECK(summary["thresholds"] == nlohmann::json{0.05, 0.2});
    CHECK(summary["totals"]["tiles"] == 60);
    CHECK(summary["totals"]["train"] == origin.rows.size());
    CHECK(summary["totals"]["val"] == val.rows.size());
    REQUIRE(summary["partitions"].size() == 3);
    CHECK(summary["partitions"][0]["name"] == "small");
    CHECK(summary["partitions"][1]["car_range"] == nlohmann::json{0.05, 0.2});
    int hist_total = 0;
    for (const auto& c : summary["car_histogram"]["counts"]) hist_total += c.get<int>();
    CHECK(hist_total == 60);
    CHECK(summary["car_histogram"]["zero"] == 15);
}

TEST_CASE("the split is seeded: same seed same split, another seed another split",
          "[geo][partition]") {
    TempDir tmp;
    PartitionOptions o;
    o.manifest = make_manifest(tmp, spread_cars(80));
    o.val_fraction = 0.25;
    o.seed = 11;
    o.out = tmp / "a";
    partition_tiles(o);
    o.out = tmp / "b";
    partition_tiles(o);
    o.seed = 12;
    o.out = tmp / "c";
    partition_tiles(o);
    for (const char* f : {"origin.csv", "val.csv", "small.csv", "medium.csv", "large.csv"}) {
        CHECK(slurp(tmp / (std::string("a/") + f)) == slurp(tmp / (std::string("b/") + f)));
        CHECK(!slurp(tmp / (std::string("a/") + f)).empty());
    }
    CHECK(slurp(tmp / "a/val.csv") != slurp(tmp / "c/val.csv"));
    CHECK(cdk::read_csv(tmp / "a/val.csv").rows.size() ==
          cdk::read_csv(tmp / "c/val.csv").rows.size());
}

TEST_CASE("quantile mode writes equal-count partitions and its thresholds", "[geo][partition]") {
    TempDir tmp;
    std::vector<std::string> cars;
    for (int i = 1; i <= 40; ++i) cars.push_back(cdk::format_number(i / 50.0));
    PartitionOptions o;
    o.manifest = make_manifest(tmp, cars);
    o.out = tmp / "q";
    o.quantiles = 4;
    o.val_fraction = 0;
    const auto s = partition_tiles(o);
    CHECK(s["mode"] == "quantiles");
    CHECK(s["quantiles"] == 4);
    CHECK(s["thresholds"] == nlohmann::json{0.2, 0.4, 0.6});
    REQUIRE(s["partitions"].size() == 4);
    for (int k = 0; k < 4; ++k) {
        CHECK(s["partitions"][k]["name"] == "p" + std::to_string(k + 1));
        CHECK(s["partitions"][k]["train"] == 10);
        CHECK(s["partitions"][k]["val"] == 0);
        CHECK(cdk::read_csv(tmp / ("q/p" + std::to_string(k + 1) + ".csv")).rows.size() == 10);
    }
    CHECK(cdk::read_csv(tmp / "q/val.csv").rows.empty());
}

TEST_CASE("an output folder inside the tiles folder gets paths that still resolve",
          "[geo][partition]") {
    TempDir tmp;
    PartitionOptions o;
    o.manifest = make_manifest(tmp, {"0", "0.1", "0.5"});
    o.out = tmp / "tiles/parts";
    o.thresholds = {0.3};
    partition_tiles(o);
    const auto t = cdk::read_csv(tmp / "tiles/parts/origin.csv");
    REQUIRE(!t.rows.empty());
    CHECK(t.rows[0][8].rfind("../A/", 0) == 0);
    CHECK(fs::exists(fs::path(tmp / "tiles/parts") / t.rows[0][8]));
    CHECK(cdk::test::exists(tmp / "tiles/parts/small.csv"));
    CHECK(cdk::test::exists(tmp / "tiles/parts/large.csv"));
}

TEST_CASE("partition_tiles refuses bad manifests and leaves nothing behind", "[geo][partition]") {
    TempDir tmp;
    PartitionOptions o;
    o.manifest = make_manifest(tmp, {"0", "", "0.5"});
    o.out = tmp / "parts";
    try {
        partition_tiles(o);
        FAIL("no error for an unlabelled tile");
    } catch (const cdk::ConfigError& e) {
        CHECK(std::string(e.what()).find("'s_16_0'") != std::string::npos);
        CHECK(std::string(e.what()).find(cdk::quote(o.manifest)) != std::string::npos);
    }
    CHECK(cdk::test::list_dir(tmp.path()) == std::vector<std::string>{"tiles"});

    TempDir tmp2;
    o.manifest = make_manifest(tmp2, {"0", "1.5"});
    o.out = tmp2 / "parts";
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("'1.5'"));
    o.manifest = make_manifest(tmp2, {"0", "abc"});
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("'abc'"));
    {
        o.manifest = make_manifest(tmp2, {"0", "0.3"});
        std::ofstream(o.manifest, std::ios::app)
            << "s_0_0,s,0,0,16,16,0.2,1,A/x.tif,B/x.tif,label/x.tif,n\n";
        CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("'s_0_0' twice"));
    }
    CHECK(cdk::test::list_dir(tmp2.path()) == std::vector<std::string>{"tiles"});

    // --overwrite onto the tiles' own folder would delete them: refused.
    TempDir tmp3;
    o.manifest = make_manifest(tmp3, {"0", "0.5"});
    o.out = tmp3 / "tiles";
    o.overwrite = true;
    CHECK_THROWS_AS(partition_tiles(o), cdk::ConfigError);
    o.out = tmp3.path();
    CHECK_THROWS_AS(partition_tiles(o), cdk::ConfigError);
    CHECK(cdk::test::exists(tmp3 / "tiles/A/s_0_0.tif"));
    CHECK(cdk::test::list_dir(tmp3 / "tiles") ==
          std::vector<std::string>{"A", "B", "label", "tiles.csv"});
}

namespace {

struct Tile {
    std::string id, scene;
    int x, y, size;
    double car;
};

// A manifest of explicit tiles (scene and position given), empty tile files.
std::string make_placed_manifest(const TempDir& tmp, const std::vector<Tile>& tiles) {
    const fs::path dir = fs::path(tmp.path()) / "tiles";
    for (const char* sub : {"A", "B", "label"}) fs::create_directories(dir / sub);
    std::ofstream csv(dir / "tiles.csv");
    csv << "id,scene,x,y,width,height,car,valid_fraction,a,b,label\n";
    for (const auto& t : tiles)
        csv << t.id << "," << t.scene << "," << t.x << "," << t.y << "," << t.size << ","
            << t.size << "," << cdk::format_number(t.car) << ",1,A/" << t.id << ".tif,B/" << t.id
            << ".tif,label/" << t.id << ".tif\n";
    return (dir / "tiles.csv").string();
}

}  // namespace

TEST_CASE("the summary says how much drawn validation tiles overlap training tiles",
          "[geo][partition]") {
    // Two tiles of one partition: one is drawn for validation, the other covers a known
    // share of it (or nothing, when they lie in different scenes or apart).
    const auto overlap_of = [](std::vector<Tile> tiles) {
        TempDir tmp;
        PartitionOptions o;
        o.manifest = make_placed_manifest(tmp, tiles);
        o.out = tmp / "parts";
        o.thresholds = {0.5};
        const auto s = partition_tiles(o);
        REQUIRE(s["totals"]["val"] == 1);
        return s["val_overlap"];
    };
    auto half = overlap_of({{"a", "s", 0, 0, 16, 0.1}, {"b", "s", 8, 0, 16, 0.1}});
    CHECK(half["tiles"] == 1);
    CHECK(half["val_tiles"] == 1);
    CHECK(half["pixel_fraction"].get<double>() == Approx(0.5));
    auto quarter = overlap_of({{"a", "s", 0, 0, 16, 0.1}, {"b", "s", 8, 8, 16, 0.1}});
    CHECK(quarter["pixel_fraction"].get<double>() == Approx(0.25));
    auto other_scene = overlap_of({{"a", "s", 0, 0, 16, 0.1}, {"b", "t", 8, 0, 16, 0.1}});
    CHECK(other_scene["tiles"] == 0);
    CHECK(other_scene["pixel_fraction"].get<double>() == 0);
    auto touching = overlap_of({{"a", "s", 0, 0, 16, 0.1}, {"b", "s", 16, 0, 16, 0.1}});
    CHECK(touching["tiles"] == 0);

    // A grid of 16-px tiles at stride 8, half of them drawn for validation: the share is the
    // one a pixel-by-pixel count finds (pixels covered by several training tiles count once).
    TempDir tmp;
    std::vector<Tile> grid;
    for (int y = 0; y <= 32; y += 8)
        for (int x = 0; x <= 32; x += 8)
            grid.push_back({"g_" + std::to_string(x) + "_" + std::to_string(y), "s", x, y, 16,
                            x == 16 && y == 16 ? 0.9 : 0.0});
    PartitionOptions o;
    o.manifest = make_placed_manifest(tmp, grid);
    o.out = tmp / "parts";
    o.thresholds = {0.5};
    o.val_fraction = 0.5;  // the large partition holds one tile: kept for training
    const auto s = partition_tiles(o);
    const auto val = cdk::read_csv(tmp / "parts/val.csv");
    const auto train = cdk::read_csv(tmp / "parts/origin.csv");
    REQUIRE(val.rows.size() == 12);  // round(0.5 * 24) of the small partition
    long covered = 0, touched = 0;
    for (const auto& v : val.rows) {
        const int vx = std::stoi(v[2]), vy = std::stoi(v[3]);
        bool any = false;
        for (int py = vy; py < vy + 16; ++py)
            for (int px = vx; px < vx + 16; ++px) {
                bool in = false;
                for (const auto& t : train.rows) {
                    const int tx = std::stoi(t[2]), ty = std::stoi(t[3]);
                    in = in || (px >= tx && px < tx + 16 && py >= ty && py < ty + 16);
                }
                covered += in;
                any = any || in;
            }
        touched += any;
    }
    CHECK(s["val_overlap"]["tiles"] == touched);
    CHECK(s["val_overlap"]["val_tiles"] == 12);
    CHECK(s["val_overlap"]["pixel_fraction"].get<double>() == Approx(covered / (12.0 * 256)));
    CHECK(covered > 0);
}

TEST_CASE("tile_overlap compares two manifests as the partition summary does",
          "[geo][partition]") {
    const auto table = [](std::vector<std::vector<std::string>> rows) {
        cdk::CsvTable t;
        t.header = {"id", "scene", "x", "y", "width", "height"};
        t.rows = std::move(rows);
        return t;
    };
    const auto train = table({{"a", "s", "0", "0", "16", "16"}, {"b", "s", "8", "0", "16", "16"},
                              {"c", "t", "0", "0", "16", "16"}});
    // The same tile in both manifests is all training pixels; a tile half under "a" and half
    // under "b" counts its shared pixels once; another scene's tile at the same place, none.
    auto same = tile_overlap(train, table({{"a", "s", "0", "0", "16", "16"}}));
    CHECK(same["tiles"] == 1);
    CHECK(same["pixel_fraction"].get<double>() == Approx(1.0));
    auto shifted = tile_overlap(train, table({{"v", "s", "16", "0", "16", "16"}}));
    CHECK(shifted["pixel_fraction"].get<double>() == Approx(0.5));
    auto two = tile_overlap(train, table({{"v", "s", "16", "0", "16", "16"},
                                          {"w", "u", "0", "0", "16", "16"}}));
    CHECK(two["tiles"] == 1);
    CHECK(two["val_tiles"] == 2);
    CHECK(two["pixel_fraction"].get<double>() == Approx(0.25));
    CHECK(tile_overlap(train, table({}))["pixel_fraction"].is_null());
    // Without the placement columns, or with a value that is not a number: null.
    cdk::CsvTable bare;
    bare.header = {"id", "a", "b"};
    bare.rows = {{"x", "A/x.tif", "B/x.tif"}};
    CHECK(tile_overlap(train, bare).is_null());
    CHECK(tile_overlap(table({{"a", "s", "zero", "0", "16", "16"}}), train).is_null());
    // The warning both tools print: the counts, the share and the manifest named; nothing
    // when no tile overlaps or the columns are missing.
    CHECK(overlap_warning(two, "v.csv").rfind("1 of 2 validation tiles ('v.csv') overlap training "
                                              "tiles of their scene (25.0 % of",
                                              0) == 0);
    CHECK(overlap_warning(two).rfind("1 of 2 validation tiles overlap", 0) == 0);
    CHECK(overlap_warning(tile_overlap(train, table({{"w", "u", "0", "0", "16", "16"}}))).empty());
    CHECK(overlap_warning(nullptr).empty());

    // On a drawn split, the two written manifests give the summary's own figures.
    TempDir tmp;
    std::vector<Tile> grid;
    for (int y = 0; y <= 32; y += 8)
        for (int x = 0; x <= 32; x += 8)
            grid.push_back({"g_" + std::to_string(x) + "_" + std::to_string(y), "s", x, y, 16, 0.0});
    PartitionOptions o;
    o.manifest = make_placed_manifest(tmp, grid);
    o.out = tmp / "parts";
    o.thresholds = {0.5};
    o.val_fraction = 0.4;
    const auto s = partition_tiles(o);
    const auto from_files =
        tile_overlap(cdk::read_csv(tmp / "parts/origin.csv"), cdk::read_csv(tmp / "parts/val.csv"));
    CHECK(from_files == s["val_overlap"]);
    CHECK(from_files["tiles"].get<int>() > 0);
}

TEST_CASE("validation scenes hold out whole scenes", "[geo][partition]") {
    TempDir tmp;
    std::vector<Tile> tiles;
    for (const char* scene : {"rome", "oslo", "lima"})
        for (int i = 0; i < 6; ++i)
            tiles.push_back({std::string(scene) + std::to_string(i), scene, 8 * i, 0, 16,
                             i % 3 == 0 ? 0.3 : 0.01 * i});
    PartitionOptions o;
    o.manifest = make_placed_manifest(tmp, tiles);
    o.out = tmp / "parts";
    o.val_scenes = {"oslo", "lima", "oslo"};
    const auto s = partition_tiles(o);
    const auto val = cdk::read_csv(tmp / "parts/val.csv");
    const auto origin = cdk::read_csv(tmp / "parts/origin.csv");
    REQUIRE(val.rows.size() == 12);
    for (const auto& r : val.rows) CHECK((r[1] == "oslo" || r[1] == "lima"));
    REQUIRE(origin.rows.size() == 6);
    for (const auto& r : origin.rows) CHECK(r[1] == "rome");
    CHECK(s["val_scenes"] == nlohmann::json{"oslo", "lima", "oslo"});
    CHECK(s["val_fraction"].is_null());
    CHECK(s["val_overlap"]["tiles"] == 0);  // the tiles overlap, but only within a scene
    CHECK(s["val_overlap"]["val_tiles"] == 12);
    CHECK(s["totals"]["val"] == 12);

    // A scene the manifest lacks is named, with the scenes it has.
    o.out = tmp / "bad";
    o.val_scenes = {"rome", "paris"};
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("'paris'") &&
                                              Catch::Contains("lima, oslo, rome"));
    o.val_scenes = {"rome", "oslo", "lima"};
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("nothing is left to train on"));
    o.val_scenes = {"rome"};
    o.val_fraction = 0.2;
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("exclusive"));
    o.val_fraction = 0;
    o.val_scenes = {" "};
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("empty validation scene"));
    CHECK(cdk::test::list_dir(tmp.path()) == std::vector<std::string>{"parts", "tiles"});
}

TEST_CASE("validation blocks take whole blocks of every scene and leave out their border",
          "[geo][partition]") {
    // Two scenes, each a 12 x 12 grid of 16-px tiles at stride 8 (neighbours share pixels),
    // CARs spread over both partitions.
    TempDir tmp;
    std::vector<Tile> tiles;
    for (const char* scene : {"s", "t"})
        for (int y = 0; y < 96; y += 8)
            for (int x = 0; x < 96; x += 8)
                tiles.push_back({std::string(scene) + "_" + std::to_string(x) + "_" + std::to_string(y),
                                 scene, x, y, 16, ((x + y) / 8 % 5) * 0.2});
    PartitionOptions o;
    o.manifest = make_placed_manifest(tmp, tiles);
    o.out = tmp / "parts";
    o.thresholds = {0.5};
    o.val_fraction = 0.2;
    o.val_block = 32;  // 4 x 4 tile centres per block
    const auto s = partition_tiles(o);
    CHECK(s["val_block"] == 32);
    CHECK(s["val_overlap"]["tiles"] == 0);

    std::map<std::string, const Tile*> by_id;
    for (const auto& t : tiles) by_id[t.id] = &t;
    std::set<std::string> val_ids, train_ids;
    for (const auto& r : cdk::read_csv(tmp / "parts/val.csv").rows) val_ids.insert(r[0]);
    for (const auto& r : cdk::read_csv(tmp / "parts/origin.csv").rows) train_ids.insert(r[0]);
    const auto meets = [](const Tile& a, const Tile& b) {
        return a.scene == b.scene && std::abs(a.x - b.x) < 16 && std::abs(a.y - b.y) < 16;
    };
    const auto block = [](const Tile& t) {
        return std::make_tuple(t.scene, (t.x + 8) / 32, (t.y + 8) / 32);
    };
    std::map<std::string, std::size_t> val_per_scene;
    for (const auto& id : val_ids) ++val_per_scene[by_id[id]->scene];
    // Every scene is validated on, near its share (within one block of 16 tiles).
    for (const char* scene : {"s", "t"}) {
        CHECK(val_per_scene[scene] > 0);
        CHECK(std::abs(static_cast<double>(val_per_scene[scene]) - 0.2 * 144) <= 16);
    }
    std::size_t left_out = 0;
    for (const auto& t : tiles) {
        const bool is_val = val_ids.count(t.id) > 0, is_train = train_ids.count(t.id) > 0;
        CHECK_FALSE((is_val && is_train));
        bool touches_val = false;
        for (const auto& id : val_ids) touches_val = touches_val || (!is_val && meets(t, *by_id[id]));
        // A training tile shares no pixel with a validation tile; a tile in no file does.
        if (is_train) CHECK_FALSE(touches_val);
        if (!is_val && !is_train) {
            CHECK(touches_val);
            ++left_out;
        }
        // Validation tiles come in whole blocks.
        for (const auto& id : val_ids)
            if (block(*by_id[id]) == block(t)) CHECK(is_val);
    }
    CHECK(left_out > 0);
    CHECK(s["totals"]["left_out"] == left_out);
    CHECK(s["totals"]["train"].get<std::size_t>() + s["totals"]["val"].get<std::size_t>() + left_out ==
          tiles.size());
    std::size_t parts_out = 0;
    for (const auto& p : s["partitions"]) parts_out += p["left_out"].get<std::size_t>();
    CHECK(parts_out == left_out);

    // Seeded: the same seed draws the same blocks, another seed others.
    o.out = tmp / "again";
    CHECK(partition_tiles(o)["totals"] == s["totals"]);
    CHECK(slurp(tmp / "again/val.csv") == slurp(tmp / "parts/val.csv"));
    o.out = tmp / "other";
    o.seed = 7;
    partition_tiles(o);
    CHECK(slurp(tmp / "other/val.csv") != slurp(tmp / "parts/val.csv"));

    // Blocks larger than a scene fit no share: warned, no validation tiles.
    std::vector<std::string> warnings;
    cdk::RunContext ctx(
        [&](cdk::LogLevel level, const std::string& m) {
            if (level == cdk::LogLevel::Warning) warnings.push_back(m);
        },
        nullptr);
    o.out = tmp / "huge";
    o.val_block = 1000;
    const auto huge = partition_tiles(o, ctx);
    CHECK(huge["totals"]["val"] == 0);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("2 scene(s) (s, t)") != std::string::npos);
}

TEST_CASE("validation blocks refuse what they cannot do", "[geo][partition]") {
    TempDir tmp;
    PartitionOptions o;
    o.manifest = make_manifest(tmp, spread_cars(12));
    o.out = tmp / "parts";
    o.val_block = 32;
    o.val_scenes = {"s"};
    CHECK_THROWS_AS(validate(o), cdk::ConfigError);
    o.val_scenes.clear();
    o.val_fraction = 0;
    CHECK_THROWS_AS(validate(o), cdk::ConfigError);
    o.val_fraction = 0.1;
    o.val_block = -1;
    CHECK_THROWS_AS(validate(o), cdk::ConfigError);
    o.val_block = 32;
    CHECK_NOTHROW(validate(o));

    // A manifest without tile positions: one error naming the columns, nothing written.
    const fs::path bare = fs::path(tmp.path()) / "bare.csv";
    {
        std::ofstream f(bare);
        f << "id,car,a,b,label\nx,0.1,A/x.tif,B/x.tif,label/x.tif\ny,0.2,A/y.tif,B/y.tif,label/y.tif\n";
    }
    o.manifest = bare.string();
    CHECK_THROWS_AS(partition_tiles(o), cdk::ConfigError);
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("scene, x, y, width and height"));
    CHECK_FALSE(fs::exists(tmp / "parts"));

    // Three overlapping tiles, one block each: two validate, the third borders them.
    TempDir tmp2;
    o.manifest = make_placed_manifest(
        tmp2, {{"a", "s", 0, 0, 16, 0.1}, {"b", "s", 8, 0, 16, 0.1}, {"c", "s", 16, 0, 16, 0.1}});
    o.out = tmp2 / "parts";
    o.val_block = 8;
    o.val_fraction = 0.5;
    CHECK_THROWS_AS(partition_tiles(o), cdk::ConfigError);
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("leave no training tile"));
    CHECK_FALSE(fs::exists(tmp2 / "parts"));
}

TEST_CASE("a manifest of image-level labels only is split by its changed bit, the column kept",
          "[geo][partition][kdmsi]") {
    TempDir tmp;
    const fs::path dir = fs::path(tmp.path()) / "tiles";
    for (const char* sub : {"A", "B"}) fs::create_directories(dir / sub);
    {
        std::ofstream csv(dir / "tiles.csv");
        csv << "id,scene,x,y,width,height,car,valid_fraction,a,b,label,changed\n";
        for (int i = 0; i < 40; ++i) {
            const std::string id = "s_" + std::to_string(16 * i) + "_0";
            for (const char* sub : {"A", "B"}) std::ofstream(dir / sub / (id + ".tif"));
            csv << id << ",s," << 16 * i << ",0,16,16,,1,A/" << id << ".tif,B/" << id << ".tif,," << (i % 3 == 0) << "\n";
        }
    }
    PartitionOptions o;
    o.manifest = (dir / "tiles.csv").string();
    o.out = tmp / "parts";
    o.val_fraction = 0.25;
    std::vector<std::string> warnings;
    cdk::RunContext ctx([&](cdk::LogLevel l, const std::string& m) { if (l == cdk::LogLevel::Warning) warnings.push_back(m); },
                        nullptr);
    const auto s = partition_tiles(o, ctx);
    CHECK(s["image_level_tiles"] == 40);
    INFO((warnings.empty() ? std::string() : warnings.front()));
    CHECK(warnings.empty());  // the empty middle partition is expected, not news
    const auto val = cdk::read_csv(tmp / "parts/val.csv"), origin = cdk::read_csv(tmp / "parts/origin.csv");
    CHECK(val.rows.size() + origin.rows.size() == 40);
    // Both bits are represented in validation (drawn per partition = per bit).
    int val_changed = 0;
    for (const auto& r : val.rows) val_changed += r[size_t(val.column("changed"))] == "1";
    CHECK(val_changed > 0);
    CHECK(val_changed < int(val.rows.size()));
    for (const auto& r : origin.rows) {
        CHECK(r[size_t(origin.column("label"))].empty());  // no label path made up
        CHECK(r[size_t(origin.column("car"))].empty());
    }
    // A tile with neither a CAR nor a bit is still refused.
    std::ofstream(dir / "tiles.csv", std::ios::app) << "s_x,s,0,16,16,16,,1,A/s_0_0.tif,B/s_0_0.tif,,\n";
    o.out = tmp / "parts2";
    CHECK_THROWS_WITH(partition_tiles(o), Catch::Contains("no image-level label"));
}
