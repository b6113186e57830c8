// Real data: the OSCD training cities (13 Sentinel-2 bands at 10/20/60 m, four cities whose
// date-2 grid differs) and the LEVIR-CD samples as a folder dataset. Skipped with a
// message when ../shared/data is absent.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cdk/core/csv.hpp"
#include "cdk/geo/tile.hpp"
#include "support/support.hpp"

using namespace cdk::geo;

TEST_CASE("OSCD training cities tile with 13 bands, on the label's grid, with the label's CAR", "[geo][real][oscd]") {
    auto root = cdk::test::shared_data("oscd/train.txt");
    if (!root) {
        WARN("skipped: ../shared/data/oscd is absent");
        return;
    }
    const std::string oscd = std::string(CDK_SHARED_DATA) + "/oscd";
    cdk::test::TempDir tmp;
    std::vector<std::string> cities;
    {
        std::ifstream f(*root);
        std::string line;
        while (std::getline(f, line)) {
            std::stringstream ss(line);
            std::string c;
            while (std::getline(ss, c, ',')) {
                c.erase(std::remove_if(c.begin(), c.end(), ::isspace), c.end());
                if (!c.empty()) cities.push_back(c);
            }
        }
    }
    REQUIRE(cities.size() == 14);
    {
        std::ofstream p(tmp / "pairs.csv");
        p << "scene,pre,post,label\n";
        for (const auto& c : cities)
            p << c << "," << oscd << "/" << c << "/imgs_1," << oscd << "/" << c << "/imgs_2," << oscd << "/" << c
              << "/cm.tif\n";
    }
    TileOptions o;
    o.pairs = tmp / "pairs.csv";
    o.band_pattern = "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B10,B11,B12";
    o.out = tmp / "tiles";
    o.tile_size = 128;
    o.min_valid = 0.5;
    auto summary = tile_scenes(o);
    INFO(summary.dump());
    REQUIRE(summary["scenes"] == 14);
    std::ifstream jf(tmp / "tiles/dataset.json");
    auto ds = nlohmann::json::parse(jf);
    CHECK(ds["bands"] == 13);
    CHECK(ds["data_type"] == "UInt16");
    int aligned = 0;
    for (const auto& s : ds["scenes"]) aligned += s["aligned"].get<bool>();
    CHECK(aligned >= 2);  // abudhabi, hongkong, saclay_e, saclay_w: those in the training split
    auto t = cdk::read_csv(tmp / "tiles/tiles.csv");
    REQUIRE(t.rows.size() == summary["tiles"].get<size_t>());
    REQUIRE(t.rows.size() > 50);
    size_t checked = 0;
    for (const auto& r : t.rows) {
        const std::string city = r[1];
        const int x = std::stoi(r[2]), y = std::stoi(r[3]), w = std::stoi(r[4]), h = std::stoi(r[5]);
        auto cm = open_raster(oscd + "/" + city + "/cm.tif");
        const Grid cg = grid_of(*cm);
        // Georeferenced on the label's grid.
        for (int k : {8, 9}) {
            auto tile = open_raster(tmp / "tiles" + "/" + r[k]);
            const Grid tg = grid_of(*tile);
            REQUIRE(tg.same_as(cg.sub({x, y, w, h})));
            REQUIRE(tile->GetRasterCount() == 13);
        }
        // CAR equals the label's over the valid pixels.
        auto lab = cdk::test::read_band(tmp / "tiles" + "/" + r[10]);
        std::vector<double> ref(static_cast<size_t>(w) * h);
        REQUIRE(cm->GetRasterBand(1)->RasterIO(GF_Read, x, y, w, h, ref.data(), w, h, GDT_Float64, 0, 0) == CE_None);
        long long valid = 0, changed = 0, mismatched = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            if (lab[i] == 255) continue;
            ++valid;
            mismatched += lab[i] != (ref[i] != 0 ? 1 : 0);
            changed += ref[i] != 0;
        }
        REQUIRE(mismatched == 0);
        REQUIRE(valid >= 0.5 * w * h);
        REQUIRE(std::stod(r[6]) == Approx(double(changed) / valid).margin(1e-12));
        ++checked;
    }
    CHECK(checked == t.rows.size());
}

TEST_CASE("LEVIR-CD samples ingest as a folder dataset", "[geo][real][levir]") {
    auto levir = cdk::test::shared_data("levir-samples/A");
    if (!levir) {
        WARN("skipped: ../shared/data/levir-samples is absent");
        return;
    }
    cdk::test::TempDir tmp;
    TileOptions o;
    o.folder = std::string(CDK_SHARED_DATA) + "/levir-samples";
    o.out = tmp / "tiles";
    o.tile_size = 256;
    auto summary = tile_scenes(o);
    CHECK(summary["scenes"] == 11);
    CHECK(summary["tiles"] == 11);
    auto t = cdk::read_csv(tmp / "tiles/tiles.csv");
    int zero = 0;
    for (const auto& r : t.rows) {
        const double car = std::stod(r[6]);
        CHECK(car >= 0);
        CHECK(car <= 1);
        zero += car == 0;
    }
    CHECK(zero >= 1);  // one sample has an all-zero label
    std::ifstream jf(tmp / "tiles/dataset.json");
    auto ds = nlohmann::json::parse(jf);
    CHECK(ds["bands"] == 3);
    CHECK(ds["data_type"] == "Byte");
    CHECK(ds["crs"].is_null());
}
