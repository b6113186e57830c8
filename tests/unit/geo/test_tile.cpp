#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/geo/stats.hpp"
#include "cdk/geo/tile.hpp"
#include "support/support.hpp"

using namespace cdk::geo;
using cdk::test::make_raster;
using cdk::test::RasterSpec;
using cdk::test::TempDir;

namespace {
// 40 x 30 pair, 2 bands; date 2 has nodata (0) in columns 0..3; the label marks change in
// rows 0..7 of columns 10..19 and nodata (255, tagged) at (39, 29).
void make_pair(const TempDir& tmp) {
    RasterSpec s;
    s.width = 40;
    s.height = 30;
    s.bands = 2;
    s.nodata = 0;
    make_raster(tmp / "pre.tif", s, [](int b, int, int) { return 10 * b; });
    make_raster(tmp / "post.tif", s, [](int b, int x, int) { return x < 4 ? 0 : 10 * b + 5; });
    RasterSpec l = s;
    l.bands = 1;
    l.nodata = 255;
    make_raster(tmp / "label.tif", l, [](int, int x, int y) {
        if (x == 39 && y == 29) return 255;
        return (x >= 10 && x < 20 && y < 8) ? 1 : 0;
    });
}
// make_pair's dates and label, tiled 16 px into TMP/tiles, every tile kept.
TileOptions labelled_pair_options(const TempDir& tmp) {
    TileOptions o;
    o.pre = tmp / "pre.tif";
    o.post = tmp / "post.tif";
    o.label = tmp / "label.tif";
    o.out = tmp / "tiles";
    o.tile_size = 16;
    o.min_valid = 0.0;
    return o;
}
}  // namespace

TEST_CASE("tiling writes tiles, a manifest with CAR over valid pixels, and statistics", "[geo][tile]") {
    TempDir tmp;
    make_pair(tmp);
    const auto o = labelled_pair_options(tmp);
    auto summary = tile_scenes(o);
    // x offsets 0,16,24; y offsets 0,14 -> 6 tiles
    CHECK(summary["tiles"] == 6);
    auto t = cdk::read_csv(tmp / "tiles/tiles.csv");
    REQUIRE(t.header == std::vector<std::string>{"id", "scene", "x", "y", "width", "height", "car",
                                                  "valid_fraction", "a", "b", "label", "changed"});
    REQUIRE(t.rows.size() == 6);
    const auto& r0 = t.rows[0];  // tile (0,0): 16x16, columns 0..3 invalid (date 2 nodata)
    CHECK(r0[0] == "scene_0_0");
    CHECK(std::stod(r0[7]) == Approx(12.0 * 16 / 256));
    // changed: columns 10..15, rows 0..7 = 48 pixels over 192 valid
    CHECK(std::stod(r0[6]) == Approx(48.0 / 192));
    const auto& r5 = t.rows[5];  // tile (24,14): includes the label nodata pixel (39,29)
    CHECK(r5[2] == "24");
    CHECK(r5[3] == "14");
    CHECK(std::stod(r5[7]) == Approx(255.0 / 256));
    CHECK(std::stod(r5[6]) == 0.0);
    // The label tile is 0/1/255 with 255 where any input is invalid.
    auto lab = cdk::test::read_band(tmp / "tiles" + "/" + r0[10]);
    CHECK(lab[0] == 255);
    CHECK(lab[4] == 0);
    CHECK(lab[12] == 1);
    // Tiles are georeferenced on the scene's grid, shifted to the tile origin.
    auto ds = open_raster(tmp / "tiles" + "/" + r5[8]);
    auto g = grid_of(*ds);
    CHECK(g.geotransform[0] == Approx(500000 + 24 * 10));
    CHECK(g.geotransform[3] == Approx(5000000 - 14 * 10));
    CHECK(g.width == 16);
    CHECK(epsg_of(g.crs_wkt) == 32633);
    CHECK(ds->GetRasterCount() == 2);
    // dataset.json statistics: pre band 2 is 20 everywhere, post band 2 is 25 where valid.
    std::ifstream jf(tmp / "tiles/dataset.json");
    auto j = nlohmann::json::parse(jf);
    CHECK(j["bands"] == 2);
    CHECK(j["data_type"] == "Byte");
    CHECK(j["nodata"] == 0);
    CHECK(j["statistics"]["pre"][1]["mean"] == Approx(20));
    CHECK(j["statistics"]["post"][1]["p98"] == Approx(25));
    CHECK(j["statistics"]["all"][1]["mean"] == Approx(22.5));
    CHECK(j["statistics"]["all"][1]["std"] == Approx(2.5));
    CHECK(j["epsg"] == 32633);
    // No temporary folders left beside the output.
    CHECK(cdk::test::list_dir(tmp.path()) ==
          std::vector<std::string>{"label.tif", "post.tif", "pre.tif", "tiles"});
}

TEST_CASE("tiles.csv carries each tile's image-level label: from the label, or given by hand", "[geo][tile][kdmsi]") {
    TempDir tmp;
    make_pair(tmp);
    auto o = labelled_pair_options(tmp);
    auto changed_column = [&](const std::string& dir) {
        const auto t = cdk::read_csv(dir + "/tiles.csv");
        const int c = t.column("changed");
        std::vector<std::string> v;
        for (const auto& r : t.rows) v.push_back(r[size_t(c)]);
        return v;
    };
    // Tiles (0,0) and (16,0) hold 48 and 32 changed valid pixels; the others none.
    auto s = tile_scenes(o);
    CHECK(changed_column(o.out) == std::vector<std::string>{"1", "1", "0", "0", "0", "0"});
    CHECK(s["changed_tiles"] == 2);
    CHECK(s["image_labelled_tiles"] == 6);
    o.out = tmp / "tiles40";
    o.min_changed_pixels = 40;
    tile_scenes(o);
    CHECK(changed_column(o.out) == std::vector<std::string>{"1", "0", "0", "0", "0", "0"});
    std::ifstream jf(o.out + "/dataset.json");
    CHECK(nlohmann::json::parse(jf)["image_labels"]["min_changed_pixels"] == 40);
    // Without a label raster, by hand: --tile-labels id,changed; tiles it does not name stay unknown.
    o.label.clear();
    o.min_changed_pixels = 1;
    cdk::write_text_file(tmp / "bits.csv", "id,changed\nscene_16_14,1\nscene_0_0,0\n");
    o.tile_labels = tmp / "bits.csv";
    o.out = tmp / "by_hand";
    s = tile_scenes(o);
    CHECK(changed_column(o.out) == std::vector<std::string>{"0", "", "", "", "1", ""});
    CHECK(s["image_labelled_tiles"] == 2);
    // A tile the tiling does not write, a value other than 0/1, a missing file: refused, nothing left.
    cdk::write_text_file(tmp / "typo.csv", "id,changed\nscene_16_41,1\n");
    o.tile_labels = tmp / "typo.csv";
    o.out = tmp / "typo";
    CHECK_THROWS_WITH(tile_scenes(o), Catch::Contains("scene_16_41"));
    CHECK_FALSE(std::filesystem::exists(o.out));
    cdk::write_text_file(tmp / "two.csv", "id,changed\nscene_0_0,2\n");
    o.tile_labels = tmp / "two.csv";
    CHECK_THROWS_WITH(tile_scenes(o), Catch::Contains("must be 0 or 1"));
    o.tile_labels = tmp / "absent.csv";
    CHECK_THROWS_AS(tile_scenes(o), cdk::IoError);
    o.tile_labels.clear();
    o.min_changed_pixels = 0;
    CHECK_THROWS_AS(tile_scenes(o), cdk::ConfigError);
}

TEST_CASE("each scene's statistics count every pixel valid in both dates once, whatever the overlap",
          "[geo][tile][scene-norm]") {
    TempDir tmp;
    RasterSpec s;
    s.width = 40;
    s.height = 30;
    s.bands = 2;
    s.nodata = 0;
    // Date 1 varies by row and column; date 2 has nodata in columns 0..3.
    make_raster(tmp / "pre.tif", s, [](int b, int x, int y) { return 1 + x + 2 * y + 50 * (b - 1); });  // bands 1-based
    make_raster(tmp / "post.tif", s, [](int b, int x, int y) { return x < 4 ? 0 : 3 + y + 60 * (b - 1); });
    TileOptions o;
    o.pre = tmp / "pre.tif";
    o.post = tmp / "post.tif";
    o.out = tmp / "tiles";
    o.tile_size = 16;
    o.overlap = 6;  // rows and columns shared by up to four tiles
    o.min_valid = 0.9;  // tiles over the nodata columns are skipped; their pixels still count
    tile_scenes(o);
    std::ifstream jf(tmp / "tiles/dataset.json");
    const auto j = nlohmann::json::parse(jf);
    const auto& st = j["scenes"][0]["statistics"];
    // Columns 4..39 of 30 rows, each once.
    REQUIRE(st["pre"][0]["count"] == 36 * 30);
    REQUIRE(st["post"][1]["count"] == 36 * 30);
    double sum = 0, sumsq = 0;
    for (int y = 0; y < 30; ++y)
        for (int x = 4; x < 40; ++x) {
            sum += 1 + x + 2 * y;
            sumsq += double(1 + x + 2 * y) * (1 + x + 2 * y);
        }
    const double mean = sum / (36 * 30);
    CHECK(st["pre"][0]["mean"].get<double>() == Approx(mean));
    CHECK(st["pre"][0]["std"].get<double>() == Approx(std::sqrt(sumsq / (36 * 30) - mean * mean)));
    CHECK(st["pre"][1]["mean"].get<double>() == Approx(mean + 50));
    CHECK(st["post"][0]["mean"].get<double>() == Approx(3 + 14.5));
    // The same numbers as a whole-scene pass (what cd-infer computes).
    const ScenePair pair = open_pair(SceneSpec::parse(o.pre), SceneSpec::parse(o.post), "", PairOptions{});
    CHECK(pair_statistics(pair).to_json() == st);
}

TEST_CASE("tiles below the valid fraction are skipped, and the output is not overwritten", "[geo][tile]") {
    TempDir tmp;
    make_pair(tmp);
    TileOptions o;
    o.pre = tmp / "pre.tif";
    o.post = tmp / "post.tif";
    o.out = tmp / "tiles";
    o.tile_size = 16;
    o.min_valid = 0.8;  // the three left tiles have 0.75 valid
    auto summary = tile_scenes(o);
    CHECK(summary["tiles"] == 4);
    CHECK(summary["skipped"] == 2);
    auto t = cdk::read_csv(tmp / "tiles/tiles.csv");
    CHECK(t.rows[0][6].empty());  // no label: no CAR
    CHECK(t.rows[0][10].empty());
    CHECK_THROWS_WITH(tile_scenes(o), Catch::Contains("exists") && Catch::Contains("--overwrite"));
    o.write.overwrite = true;
    o.min_valid = 0;
    CHECK(tile_scenes(o)["tiles"] == 6);
}

TEST_CASE("a failing scene in a pairs file leaves nothing behind", "[geo][tile]") {
    TempDir tmp;
    make_pair(tmp);
    std::ofstream(tmp / "pairs.csv") << "scene,pre,post,label\nok,pre.tif,post.tif,label.tif\nbad,pre.tif,missing.tif,\n";
    TileOptions o;
    o.pairs = tmp / "pairs.csv";
    o.out = tmp / "tiles";
    o.tile_size = 16;
    CHECK_THROWS_WITH(tile_scenes(o), Catch::Contains("'bad'") && Catch::Contains("missing.tif"));
    CHECK(cdk::test::list_dir(tmp.path()) ==
          std::vector<std::string>{"label.tif", "pairs.csv", "post.tif", "pre.tif"});
}

TEST_CASE("tile options are validated", "[geo][tile]") {
    TileOptions o;
    o.out = "x";
    CHECK_THROWS_WITH(validate(o), Catch::Contains("exactly one input"));
    o.pre = "a";
    CHECK_THROWS_WITH(validate(o), Catch::Contains("--pre and --post"));
    o.post = "b";
    o.overlap = 300;
    CHECK_THROWS_WITH(validate(o), Catch::Contains("overlap"));
    o.overlap = 0;
    o.write.format = "PNG";  // tiles are named .tif
    CHECK_THROWS_WITH(validate(o), Catch::Contains("--of PNG does not go with a .tif name"));
    o.write.format = "JPEG";
    CHECK_THROWS_WITH(validate(o), Catch::Contains("does not go with a .tif name"));
}

TEST_CASE("one or several tile-writing threads give the same manifest and statistics", "[geo][tile]") {
    TempDir tmp;
    RasterSpec s;
    s.width = 100;
    s.height = 90;
    s.bands = 2;
    s.type = GDT_UInt16;
    make_raster(tmp / "pre.tif", s, [](int b, int x, int y) { return (x * 7 + y * 13 + b) % 1000; });
    make_raster(tmp / "post.tif", s, [](int b, int x, int y) { return (x * 5 + y * 11 + b) % 1000; });
    s.bands = 1;
    s.type = GDT_Byte;
    make_raster(tmp / "label.tif", s, [](int, int x, int y) { return (x + y) % 9 == 0; });
    std::string manifests[2], datasets[2];
    for (int t : {1, 3}) {
        TileOptions o;
        o.pre = tmp / "pre.tif";
        o.post = tmp / "post.tif";
        o.label = tmp / "label.tif";
        o.out = tmp / ("tiles" + std::to_string(t));
        o.tile_size = 24;
        o.overlap = 4;
        o.threads = t;
        tile_scenes(o);
        std::ifstream m(o.out + "/tiles.csv"), d(o.out + "/dataset.json");
        std::stringstream ms, ds;
        ms << m.rdbuf();
        auto j = nlohmann::json::parse(d);
        manifests[t == 1 ? 0 : 1] = ms.str();
        datasets[t == 1 ? 0 : 1] = j["statistics"].dump();
    }
    CHECK(manifests[0] == manifests[1]);
    CHECK(datasets[0] == datasets[1]);
    CHECK(std::count(manifests[0].begin(), manifests[0].end(), '\n') == 1 + 5 * 5);
}
