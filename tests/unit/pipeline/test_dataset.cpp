#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include <cmath>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/pipeline/tile_dataset.hpp"
#include "pipeline_fixtures.hpp"

using namespace cdk::pipeline;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

TileDataset open_dataset(const std::string& manifest) {
    return TileDataset(manifest, Normalization::from_dataset_json(find_dataset_json(manifest)));
}

// Label implied by the inputs: the fixture's change adds 100 to every band.
torch::Tensor implied_label(const Sample& s) {
    return (s.post - s.pre).abs().sum(0).gt(1e-3).to(torch::kInt64);
}

bool same(const torch::Tensor& a, const torch::Tensor& b) {
    return a.sizes() == b.sizes() && a.equal(b);
}

}  // namespace

TEST_CASE("normalisation comes from dataset.json", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles");
    const auto ds_json = find_dataset_json(manifest);
    const auto norm = Normalization::from_dataset_json(ds_json);
    REQUIRE(norm.mean.size() == 3);
    for (int b = 0; b < 3; ++b) {
        CHECK(norm.mean[b] == Approx(ds_json["statistics"]["all"][b]["mean"].get<double>()));
        CHECK(norm.std[b] == Approx(ds_json["statistics"]["all"][b]["std"].get<double>()));
    }
    // The JSON form round-trips; a zero std is floored.
    auto j = norm.to_json();
    CHECK(Normalization::from_json(j).mean == norm.mean);
    j["std"][0] = 0.0;
    CHECK(Normalization::from_json(j).std[0] > 0);
    CHECK_THROWS_AS(Normalization::from_dataset_json({{"bands", 3}}), cdk::ConfigError);

    // Tile values are (raw - mean) / std.
    TileDataset data(manifest, norm);
    const auto table = cdk::read_csv(manifest);
    const int xc = table.column("x"), yc = table.column("y");
    std::mt19937_64 rng(0);
    const Sample s = data.get(1, std::nullopt, rng);
    const int x0 = std::stoi(table.rows[1][xc]), y0 = std::stoi(table.rows[1][yc]);
    REQUIRE(s.pre.sizes() == torch::IntArrayRef({3, 32, 32}));
    for (int b = 0; b < 3; ++b)
        for (int y : {0, 7, 31})
            for (int x : {0, 13, 31}) {
                const double raw = cdk::test::fixture_pre(b + 1, x0 + x, y0 + y);  // 1-based bands
                CHECK(s.pre[b][y][x].item<float>() == Approx((raw - norm.mean[b]) / norm.std[b]).margin(1e-4));
            }
    CHECK(s.id == table.rows[1][table.column("id")]);
}

namespace {
// A 64x32 UInt16 scene pair, date 1 = a * v1 + b1 and date 2 = a * v2 + b2 in every band
// (v1, v2: the fixture's dates, band k offset by 7k), cut into 32x32 tiles in DIR/<name>.
std::string make_scaled_tiles(const TempDir& tmp, const std::string& name, double a, double b1, double b2) {
    const std::string scene = tmp / (name + "_scene");
    fs::create_directories(scene);
    cdk::test::RasterSpec spec;
    spec.width = 64;
    spec.height = 32;
    spec.bands = 3;
    spec.type = GDT_UInt16;
    cdk::test::make_raster(scene + "/pre.tif", spec,
                           [&](int b, int x, int y) { return a * (cdk::test::fixture_pre(b, x, y) + 7 * b) + b1; });
    cdk::test::make_raster(scene + "/post.tif", spec, [&](int b, int x, int y) {
        return a * (cdk::test::fixture_pre(b, x, y) + (cdk::test::fixture_changed(x, y) ? 100 : 0) + 7 * b) + b2;
    });
    cdk::geo::TileOptions t;
    t.pre = scene + "/pre.tif";
    t.post = scene + "/post.tif";
    t.scene_name = name;
    t.out = tmp / name;
    t.tile_size = 32;
    cdk::geo::tile_scenes(t);
    return tmp / (name + "/tiles.csv");
}
}  // namespace

TEST_CASE("per-scene standardisation: each date by its own statistics, so brightness and contrast drop out",
          "[pipeline][dataset][scene-norm]") {
    // image mode pools the bands: mean of the means, variance within plus between bands.
    Normalization id = Normalization::standardised(2, "image");
    const Normalization d = id.for_date({{10, 20}, {1, 1}});
    CHECK(d.scene == "none");
    CHECK(d.mean == std::vector<float>{15, 15});
    CHECK(d.std[0] == Approx(std::sqrt(26.0)));
    const Normalization band = Normalization::standardised(2, "band").for_date({{10, 20}, {2, 4}});
    CHECK(band.mean == std::vector<float>{10, 20});
    CHECK(band.std == std::vector<float>{2, 4});
    // A normalisation after the standardisation is folded in: ((v - m) / s - mean) / std.
    Normalization after = Normalization::standardised(1, "band");
    after.mean = {0.5f};
    after.std = {2.f};
    const Normalization f = after.for_date({{10}, {4}});
    CHECK(((18 - f.mean[0]) / f.std[0]) == Approx(((18.0 - 10) / 4 - 0.5) / 2));
    CHECK(Normalization::from_json(id.to_json()).scene == "image");
    CHECK(Normalization::from_json(Normalization::standardised(1, "none").to_json()).scene == "none");
    CHECK_THROWS_AS(Normalization::standardised(1, "tile"), cdk::ConfigError);

    // The same scene, brighter and with more contrast in each date (UInt16): "image" and
    // "band" give the same samples; the tile set's own statistics do not.
    TempDir tmp;
    const auto plain = make_scaled_tiles(tmp, "plain", 1, 0, 0);
    const auto bright = make_scaled_tiles(tmp, "bright", 3, 200, 90);
    std::mt19937_64 rng(0);
    for (const char* mode : {"image", "band"}) {
        INFO(mode);
        TileDataset a(plain, Normalization::standardised(3, mode)), b(bright, Normalization::standardised(3, mode));
        REQUIRE(a.size() == 2);
        for (size_t i = 0; i < a.size(); ++i) {
            const Sample sa = a.get(i, std::nullopt, rng), sb = b.get(i, std::nullopt, rng);
            CHECK(torch::allclose(sa.pre, sb.pre, 1e-4, 1e-4));
            CHECK(torch::allclose(sa.post, sb.post, 1e-4, 1e-4));
            CHECK(sa.pre.abs().max().item<float>() < 10);
        }
    }
    TileDataset a(plain, Normalization::from_dataset_json(find_dataset_json(plain)));
    TileDataset b(bright, Normalization::from_dataset_json(find_dataset_json(bright)));
    CHECK_FALSE(torch::allclose(a.get(0, std::nullopt, rng).pre - a.get(0, std::nullopt, rng).post,
                                b.get(0, std::nullopt, rng).pre - b.get(0, std::nullopt, rng).post, 1e-3, 1e-3));

    // A tile set without per-scene statistics (made before cd-tile recorded them) is refused
    // by name; its own statistics still serve.
    auto j = find_dataset_json(plain);
    j["scenes"][0].erase("statistics");
    std::ofstream(tmp / "plain/dataset.json") << j.dump();
    try {
        TileDataset old(plain, Normalization::standardised(3, "image"));
        FAIL("no error");
    } catch (const cdk::ConfigError& e) {
        CHECK(std::string(e.what()).find("plain") != std::string::npos);
        CHECK(std::string(e.what()).find("cd-tile again") != std::string::npos);
    }
    CHECK_NOTHROW(TileDataset(plain, Normalization::from_dataset_json(j)));
}

TEST_CASE("dataset.json is found beside the manifest or beside its tiles", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 64, 32);
    CHECK(find_dataset_json(manifest)["bands"] == 3);
    // A cd-partition-style manifest in another folder pointing at ../tiles/...
    fs::create_directories(tmp / "parts");
    const auto t = cdk::read_csv(manifest);
    std::ofstream out(tmp / "parts/origin.csv");
    out << cdk::csv_line(t.header) << "\n";
    for (auto row : t.rows) {
        for (const char* c : {"a", "b", "label"}) row[t.column(c)] = "../tiles/" + row[t.column(c)];
        out << cdk::csv_line(row) << "\n";
    }
    out.close();
    CHECK(find_dataset_json(tmp / "parts/origin.csv")["bands"] == 3);
    TileDataset parts = open_dataset(tmp / "parts/origin.csv");
    REQUIRE(parts.size() == t.rows.size());
    std::mt19937_64 rng(0);
    CHECK(parts.get(0, std::nullopt, rng).pre.size(0) == 3);

    // The tile manifest again, as NAME, with the first tile's CAR cell set to `cell`.
    auto with_first_car = [&](const std::string& name, const std::string& cell) {
        auto copy = t;
        copy.rows[0][copy.column("car")] = cell;
        const std::string path = tmp / ("tiles/" + name);
        std::ofstream f(path);
        f << cdk::csv_line(copy.header) << "\n";
        for (const auto& row : copy.rows) f << cdk::csv_line(row) << "\n";
        return path;
    };
    const std::string car0 = t.rows[0][t.column("car")];
    // A CAR with trailing junk is refused by name, as cd-partition refuses it.
    CHECK_THROWS_WITH(open_dataset(with_first_car("junk.csv", car0 + "x")), Catch::Contains("not a number"));
    // Spaces around it are read, as cd-partition reads them.
    CHECK(open_dataset(with_first_car("spaced.csv", " " + car0 + " ")).records()[0].car == Approx(std::stod(car0)));

    std::ofstream lonely(tmp / "lonely.csv");
    lonely << "id,a,b,label\nx,nowhere/A/x.tif,nowhere/B/x.tif,\n";
    lonely.close();
    try {
        find_dataset_json(tmp / "lonely.csv");
        FAIL("no error");
    } catch (const cdk::ConfigError& e) {
        CHECK(std::string(e.what()).find("lonely.csv") != std::string::npos);
    }
    // A manifest without rows (a validation set --val-blocks left empty) says so.
    std::ofstream empty(tmp / "empty.csv");
    empty << "id,a,b,label\n";
    empty.close();
    CHECK_THROWS_WITH(find_dataset_json(tmp / "empty.csv"), Catch::Contains("'" + (tmp / "empty.csv") + "' lists no tiles"));
}

TEST_CASE("labels are 0/1 with 255 for nodata, inputs 0 there", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 64, 32, 2, 0, true);
    TileDataset data = open_dataset(manifest);
    REQUIRE(data.bands() == 2);
    std::mt19937_64 rng(0);
    const auto& recs = data.records();
    size_t first = 0;  // the tile at 0,0 holds the nodata corner
    for (size_t i = 0; i < recs.size(); ++i)
        if (recs[i].id == "tiles_0_0") first = i;
    const Sample s = data.get(first, std::nullopt, rng);
    REQUIRE(s.label.scalar_type() == torch::kInt64);
    CHECK(s.label[0][0].item<int64_t>() == 255);
    CHECK(s.label[7][7].item<int64_t>() == 255);
    CHECK(s.post[0][3][3].item<float>() == 0.f);
    CHECK(s.label.slice(0, 8).slice(1, 8).le(1).all().item<bool>());
    const auto valid = s.label.ne(255);
    CHECK(same(implied_label(s).masked_select(valid), s.label.masked_select(valid)));
    // CAR over valid pixels only, as in the manifest.
    CHECK(s.car == Approx(recs[first].car).margin(1e-9));
}

TEST_CASE("augmentation keeps dates and label aligned", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 64, 64);
    TileDataset data = open_dataset(manifest);
    AugmentOptions aug;
    aug.crop = 20;
    int flipped_or_rotated = 0;
    for (uint64_t seed = 0; seed < 24; ++seed) {
        std::mt19937_64 rng(seed);
        const size_t i = seed % data.size();
        const Sample s = data.get(i, aug, rng);
        REQUIRE(s.pre.sizes() == torch::IntArrayRef({3, 20, 20}));
        REQUIRE(s.label.sizes() == torch::IntArrayRef({20, 20}));
        // The label still equals the thresholded date difference, pixel for pixel.
        CHECK(same(implied_label(s), s.label));
        // CAR recomputed on the crop.
        CHECK(s.car == Approx(s.label.eq(1).sum().item<double>() / 400.0));
        std::mt19937_64 plain(0);
        const Sample whole = data.get(i, std::nullopt, plain);
        flipped_or_rotated += !whole.label.slice(0, 0, 20).slice(1, 0, 20).equal(s.label);
    }
    CHECK(flipped_or_rotated > 0);
}

TEST_CASE("a crop is a window of the tile and its CAR is the window's", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 64, 32);
    TileDataset data = open_dataset(manifest);
    AugmentOptions crop_only{false, false, false, 12};
    std::mt19937_64 plain(0);
    const Sample whole = data.get(0, std::nullopt, plain);
    std::set<std::pair<int, int>> offsets;
    for (uint64_t seed = 0; seed < 10; ++seed) {
        std::mt19937_64 rng(seed);
        const Sample s = data.get(0, crop_only, rng);
        bool found = false;
        for (int y = 0; y <= 20 && !found; ++y)
            for (int x = 0; x <= 20 && !found; ++x)
                if (whole.pre.slice(1, y, y + 12).slice(2, x, x + 12).equal(s.pre)) {
                    found = true;
                    offsets.insert({x, y});
                    const auto lab = whole.label.slice(0, y, y + 12).slice(1, x, x + 12);
                    CHECK(lab.equal(s.label));
                    CHECK(whole.post.slice(1, y, y + 12).slice(2, x, x + 12).equal(s.post));
                    CHECK(s.car == Approx(lab.eq(1).sum().item<double>() / 144.0));
                }
        CHECK(found);
    }
    CHECK(offsets.size() > 1);
}

TEST_CASE("swapping the dates keeps the label", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 64, 32);
    TileDataset data = open_dataset(manifest);
    AugmentOptions swap_only{false, false, true, 0};
    std::mt19937_64 plain(0);
    const Sample whole = data.get(0, std::nullopt, plain);
    REQUIRE(whole.label.eq(1).any().item<bool>());
    int swapped = 0, kept = 0;
    for (uint64_t seed = 0; seed < 16; ++seed) {
        std::mt19937_64 rng(seed);
        const Sample s = data.get(0, swap_only, rng);
        CHECK(s.label.equal(whole.label));
        CHECK(s.car == Approx(whole.car));
        if (s.pre.equal(whole.post) && s.post.equal(whole.pre)) ++swapped;
        else if (s.pre.equal(whole.pre) && s.post.equal(whole.post)) ++kept;
    }
    CHECK(swapped > 0);
    CHECK(kept > 0);
    CHECK(swapped + kept == 16);
}

TEST_CASE("the loader's batches do not depend on the number of workers", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 128, 64);
    TileDataset data = open_dataset(manifest);
    REQUIRE(data.size() == 8);
    AugmentOptions aug;
    aug.crop = 24;
    auto epoch = [&](int workers, uint64_t seed) {
        BatchLoader loader(data, 3, true, aug, seed, workers);
        CHECK(loader.batches() == 3);
        std::vector<Batch> out;
        while (auto b = loader.next()) out.push_back(std::move(*b));
        return out;
    };
    const auto ref = epoch(0, 7);
    REQUIRE(ref.size() == 3);
    CHECK(ref[0].pre.sizes() == torch::IntArrayRef({3, 3, 24, 24}));
    CHECK(ref[2].pre.size(0) == 2);  // the last batch keeps the remainder
    std::vector<std::string> ids;
    for (const auto& b : ref) ids.insert(ids.end(), b.ids.begin(), b.ids.end());
    CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 8);
    for (int workers : {1, 3}) {
        const auto other = epoch(workers, 7);
        REQUIRE(other.size() == ref.size());
        for (size_t k = 0; k < ref.size(); ++k) {
            CHECK(other[k].ids == ref[k].ids);
            CHECK(other[k].car == ref[k].car);
            CHECK(same(other[k].pre, ref[k].pre));
            CHECK(same(other[k].post, ref[k].post));
            CHECK(same(other[k].label, ref[k].label));
        }
    }
    // Another seed: another order.
    const auto other_seed = epoch(2, 8);
    std::vector<std::string> ids8;
    for (const auto& b : other_seed) ids8.insert(ids8.end(), b.ids.begin(), b.ids.end());
    CHECK(ids8 != ids);
    // No shuffle: manifest order; drop_last drops the short batch.
    BatchLoader ordered(data, 3, false, std::nullopt, 0, 2, true);
    CHECK(ordered.batches() == 2);
    auto b0 = ordered.next();
    REQUIRE(b0);
    CHECK(b0->ids[0] == data.records()[0].id);
    CHECK(ordered.next());
    CHECK_FALSE(ordered.next());
}

TEST_CASE("batches pad samples of different sizes with ignored pixels", "[pipeline][dataset]") {
    std::vector<Sample> samples(2);
    samples[0].pre = samples[0].post = torch::ones({2, 8, 8});
    samples[0].label = torch::ones({8, 8}, torch::kInt64);
    samples[0].id = "big";
    samples[1].pre = samples[1].post = torch::ones({2, 8, 5});
    samples[1].label = torch::zeros({8, 5}, torch::kInt64);
    samples[1].car = 0.25;
    samples[1].id = "small";
    const Batch b = collate(samples);
    CHECK(b.pre.sizes() == torch::IntArrayRef({2, 2, 8, 8}));
    CHECK(b.label[1].slice(1, 5).eq(255).all().item<bool>());
    CHECK(b.label[1].slice(1, 0, 5).eq(0).all().item<bool>());
    CHECK(b.pre[1].slice(2, 5).eq(0).all().item<bool>());
    CHECK(b.valid[1].slice(1, 5).logical_not().all().item<bool>());
    CHECK(b.valid[1].slice(1, 0, 5).all().item<bool>());
    CHECK(b.valid[0].all().item<bool>());
    CHECK(b.ids == std::vector<std::string>{"big", "small"});
    CHECK(b.car == std::vector<double>{0, 0.25});

    // A crop larger than the tile pads it the same way.
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 64, 32);
    TileDataset data = open_dataset(manifest);
    std::mt19937_64 rng(1);
    const Sample s = data.get(0, AugmentOptions{false, false, false, 40}, rng);
    CHECK(s.label.sizes() == torch::IntArrayRef({40, 40}));
    CHECK(s.label.eq(255).sum().item<int64_t>() == 40 * 40 - 32 * 32);
}

TEST_CASE("a missing tile file fails the batch with the file's name", "[pipeline][dataset]") {
    TempDir tmp;
    const auto manifest = cdk::test::make_fixture_tiles(tmp, "tiles", 64, 32);
    TileDataset data = open_dataset(manifest);
    fs::remove(data.records()[1].b);
    BatchLoader loader(data, 1, false, std::nullopt, 0, 2);
    CHECK(loader.next());
    try {
        loader.next();
        FAIL("no error");
    } catch (const cdk::IoError& e) {
        CHECK(std::string(e.what()).find(data.records()[1].b) != std::string::npos);
    }
}
