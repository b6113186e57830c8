#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "cdk/core/error.hpp"
#include "cdk/geo/metrics.hpp"
#include "cdk/geo/partition.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/pipeline/infer.hpp"
#include "cdk/pipeline/train.hpp"
#include "pipeline_fixtures.hpp"

using namespace cdk::pipeline;
using cdk::test::read_band;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A small fc-siam-diff trained on the fixture until it separates the changed squares.
std::string trained_model(const TempDir& tmp) {
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0);
    TrainOptions o;
    o.train = train;
    o.out = tmp / "m.cdm";
    o.model.arch = "fc-siam-diff";
    o.model.width = 8;
    o.epochs = 20;
    o.batch_size = 4;
    o.lr = 5e-3;
    o.schedule = "poly";
    o.loss.class_weights = {1, 3};
    o.device = "cpu";
    o.threads = 1;
    o.workers = 1;
    o.seed = 3;
    train_model(o);
    return o.out;
}

InferOptions infer_options(const std::string& model, const std::string& scene, const std::string& out) {
    InferOptions o;
    o.model = model;
    o.pre = scene + "/pre.tif";
    o.post = scene + "/post.tif";
    o.out = out;
    o.tile_size = 32;
    o.overlap = 8;
    o.device = "cpu";
    o.threads = 1;
    return o;
}

double f1_of(const std::string& pred, const std::string& ref) {
    cdk::geo::EvalOptions e;
    e.pred = pred;
    e.ref = ref;
    return cdk::geo::evaluate(e)["pooled"]["change"]["f1"].get<double>();
}

}  // namespace

TEST_CASE("a trained bundle maps the changes of an unseen scene on date 1's grid", "[pipeline][infer]") {
    TempDir tmp;
    const auto model = trained_model(tmp);
    // An unseen scene (other change positions), 96x64, date 2 without data in its top-left
    // 8x8 corner: 4 x 3 windows of 32 with overlap 8.
    cdk::test::make_fixture_tiles(tmp, "test", 96, 64, 3, 1, true);
    const std::string scene = tmp / "test_scene";
    auto o = infer_options(model, scene, tmp / "change.tif");
    o.prob = tmp / "prob.tif";
    const auto s = infer_scene(o);
    INFO(s.dump());
    CHECK(s["windows"] == 12);
    CHECK(s["windows_skipped"] == 0);
    CHECK(s["valid_pixels"] == 96 * 64 - 64);

    // Same grid as date 1, colour table, nodata, QGIS style beside it.
    auto out = cdk::geo::open_raster(tmp / "change.tif");
    auto pre = cdk::geo::open_raster(scene + "/pre.tif");
    CHECK(cdk::geo::grid_of(*out).same_as(cdk::geo::grid_of(*pre)));
    CHECK(out->GetRasterBand(1)->GetRasterDataType() == GDT_Byte);
    CHECK(out->GetRasterBand(1)->GetColorTable() != nullptr);
    int has = 0;
    CHECK(out->GetRasterBand(1)->GetNoDataValue(&has) == 255);
    CHECK(has);
    CHECK(fs::exists(tmp / "change.qml"));

    const auto mask = read_band(tmp / "change.tif");
    const auto prob = read_band(tmp / "prob.tif");
    long long ones = 0;
    for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 96; ++x) {
            const size_t i = size_t(y) * 96 + size_t(x);
            if (x < 8 && y < 8) {  // nodata in date 2 is nodata in the outputs, never change
                CHECK(mask[i] == 255);
                CHECK(prob[i] == -1);
                continue;
            }
            REQUIRE(prob[i] >= 0);
            REQUIRE(prob[i] <= 1);
            CHECK(mask[i] == (prob[i] >= 0.5 ? 1 : 0));
            ones += mask[i] == 1;
        }
    CHECK(s["changed_pixels"] == ones);
    CHECK(s["car"].get<double>() == Approx(double(ones) / double(96 * 64 - 64)));
    CHECK(s["changed_area_m2"].get<double>() > 0);

    const double f1 = f1_of(tmp / "change.tif", scene + "/label.tif");
    CHECK(f1 > 0.8);

    // Another window layout and flip TTA map nearly the same changes (no seams).
    auto big = infer_options(model, scene, tmp / "big.tif");
    big.tile_size = 64;
    big.overlap = 16;
    big.tta = true;
    infer_scene(big);
    const auto other = read_band(tmp / "big.tif");
    size_t same = 0;
    for (size_t i = 0; i < mask.size(); ++i) same += mask[i] == other[i];
    CHECK(double(same) / double(mask.size()) > 0.95);
    CHECK(f1_of(tmp / "big.tif", scene + "/label.tif") > 0.8);
}

TEST_CASE("without a window size a local model gets the windows that compute the fewest pixels",
          "[pipeline][infer][plan]") {
    TempDir tmp;
    const auto model = trained_model(tmp);  // fc-siam-diff on tiles of 32
    cdk::test::make_fixture_tiles(tmp, "wide", 600, 200, 3, 1);
    const std::string scene = tmp / "wide_scene";
    auto o = infer_options(model, scene, tmp / "auto.tif");
    o.tile_size = 0;
    o.overlap = -1;
    const auto s = infer_scene(o);
    INFO(s.dump());
    // Edges from 32 to 512: 320 covers 600 x 200 in 2 windows, 1.07x the scene's pixels
    // (512: 1.7x; the bundle's 32: 1.7x, in 200 windows).
    CHECK(s["window"] == 320);
    CHECK(s["window_automatic"] == true);
    CHECK(s["overlap"] == 8);  // a quarter of the bundle's tile size, whatever the window
    CHECK(s["windows"] == 2);
    CHECK(s["batch"] == 4);

    // The bundle's own windows map the same changes (apart from window borders).
    auto small = o;
    small.tile_size = 32;
    small.out = tmp / "small.tif";
    const auto s32 = infer_scene(small);
    CHECK(s32["window"] == 32);
    CHECK(s32["window_automatic"] == false);
    CHECK(s32["overlap"] == 8);
    CHECK(s32["windows"] == 200);
    const auto a = read_band(o.out), b = read_band(small.out);
    size_t same = 0;
    for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
    CHECK(double(same) / double(a.size()) > 0.95);
    CHECK(f1_of(o.out, scene + "/label.tif") > 0.8);

    // A --ram too small for 320-px windows: the best edge that fits.
    auto capped = o;
    capped.out = tmp / "capped.tif";
    capped.ram_mb = 3;
    const auto sc = infer_scene(capped);
    INFO(sc.dump());
    CHECK(sc["window"] == 64);
    CHECK(sc["window_automatic"] == true);

    // BIT's tokens pool the whole window: it keeps the bundle's tile size.
    auto bit = cdk::test::tiny_train_options(cdk::test::make_fixture_tiles(tmp, "bit_train", 64, 64), "", tmp / "bit.cdm");
    bit.model.arch = "bit";
    bit.model.width = 8;
    bit.epochs = 1;
    train_model(bit);
    auto ob = o;
    ob.model = bit.out;
    ob.out = tmp / "bit.tif";
    const auto sb = infer_scene(ob);
    CHECK(sb["window"] == 32);
    CHECK(sb["window_automatic"] == false);
    CHECK(sb["batch"] == 4);
}

TEST_CASE("a bundle trained with per-scene standardisation maps each scene by its own statistics",
          "[pipeline][infer][scene-norm]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0);
    auto t = cdk::test::tiny_train_options(tiles, "", tmp / "m.cdm");
    t.epochs = 3;
    t.scene_norm = "image";
    train_model(t);
    const auto header = cdk::nn::read_bundle_header(t.out);
    CHECK(header["normalization"]["scene"] == "image");
    CHECK(header["normalization"]["mean"][0] == 0.0);

    // The unseen scene, and the same with date 1 brighter by 30 and date 2 darker by 15:
    // the same map.
    cdk::test::make_fixture_tiles(tmp, "test", 96, 64, 3, 1);
    const std::string scene = tmp / "test_scene", shifted = tmp / "shifted";
    fs::create_directories(shifted);
    cdk::test::RasterSpec spec;
    spec.width = 96;
    spec.height = 64;
    spec.bands = 3;
    cdk::test::make_raster(shifted + "/pre.tif", spec,
                           [](int b, int x, int y) { return cdk::test::fixture_pre(b, x, y) + 30; });
    cdk::test::make_raster(shifted + "/post.tif", spec, [](int b, int x, int y) {
        return cdk::test::fixture_pre(b, x, y) + (cdk::test::fixture_changed(x, y, 1) ? 100 : 0) - 15;
    });
    auto o = infer_options(t.out, scene, tmp / "a.tif");
    o.prob = tmp / "a_prob.tif";
    const auto sa = infer_scene(o);
    o = infer_options(t.out, shifted, tmp / "b.tif");
    o.prob = tmp / "b_prob.tif";
    const auto sb = infer_scene(o);
    INFO(sa.dump());
    REQUIRE(sa["scene_normalization"]["mode"] == "image");
    CHECK(sb["scene_normalization"]["pre"]["mean"][0].get<double>() ==
          Approx(sa["scene_normalization"]["pre"]["mean"][0].get<double>() + 30));
    CHECK(sb["scene_normalization"]["post"]["mean"][2].get<double>() ==
          Approx(sa["scene_normalization"]["post"]["mean"][2].get<double>() - 15));
    const auto pa = read_band(tmp / "a_prob.tif"), pb = read_band(tmp / "b_prob.tif");
    double worst = 0;
    for (size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, std::abs(pa[i] - pb[i]));
    CHECK(worst < 1e-4);
    // Without standardisation (a bundle of the tile set's statistics) the shifted scene gives
    // other probabilities: the test above could fail.
    auto t2 = t;
    t2.out = tmp / "plain.cdm";
    t2.scene_norm = "none";
    train_model(t2);
    CHECK(cdk::nn::read_bundle_header(t2.out)["normalization"].contains("scene") == false);
    o = infer_options(t2.out, scene, tmp / "c.tif");
    o.prob = tmp / "c_prob.tif";
    CHECK(infer_scene(o)["scene_normalization"].is_null());
    o = infer_options(t2.out, shifted, tmp / "d.tif");
    o.prob = tmp / "d_prob.tif";
    infer_scene(o);
    const auto pc = read_band(tmp / "c_prob.tif"), pd = read_band(tmp / "d_prob.tif");
    worst = 0;
    for (size_t i = 0; i < pc.size(); ++i) worst = std::max(worst, std::abs(pc[i] - pd[i]));
    CHECK(worst > 1e-3);

    // --scene-norm is for TorchScript models; a bundle carries its own.
    o.scene_norm = "band";
    CHECK_THROWS_AS(infer_scene(o), cdk::ConfigError);
}

TEST_CASE("inference refuses a scene that does not fit the bundle, and leaves nothing", "[pipeline][infer]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "train", 64, 32, 3, 0);
    auto t = cdk::test::tiny_train_options(tiles, "", tmp / "m.cdm");
    t.epochs = 1;
    train_model(t);
    cdk::test::make_fixture_tiles(tmp, "four", 64, 32, 4, 0);

    auto o = infer_options(t.out, tmp / "four_scene", tmp / "c.tif");
    try {
        infer_scene(o);
        FAIL("no error");
    } catch (const cdk::ModelError& e) {
        const std::string msg = e.what();
        INFO(msg);
        CHECK(msg.find("m.cdm") != std::string::npos);
        CHECK(msg.find("four_scene/pre.tif") != std::string::npos);
        CHECK(msg.find("3 Byte bands") != std::string::npos);
        CHECK(msg.find("4 Byte bands") != std::string::npos);
    }
    for (const auto& name : cdk::test::list_dir(tmp.path())) CHECK(name.find("c.tif") == std::string::npos);

    // An existing output is refused without overwrite and kept as it was.
    o = infer_options(t.out, tmp / "train_scene", tmp / "c.tif");
    infer_scene(o);
    const auto before = fs::last_write_time(tmp / "c.tif");
    CHECK_THROWS_AS(infer_scene(o), cdk::ConfigError);
    CHECK(fs::last_write_time(tmp / "c.tif") == before);
    o.write.overwrite = true;
    CHECK_NOTHROW(infer_scene(o));

    // A scene without data anywhere: an empty result (all nodata), a warning, no window run.
    cdk::test::RasterSpec empty;
    empty.width = 48;
    empty.height = 40;
    empty.bands = 3;
    empty.nodata = 0;
    cdk::test::make_raster(tmp / "empty_pre.tif", empty, [](int, int, int) { return 0; });
    cdk::test::make_raster(tmp / "empty_post.tif", empty, [](int, int, int) { return 0; });
    auto e = infer_options(t.out, tmp / "x", tmp / "empty.tif");
    e.pre = tmp / "empty_pre.tif";
    e.post = tmp / "empty_post.tif";
    std::vector<std::string> warnings;
    const auto es = infer_scene(e, cdk::RunContext(
                                       [&](cdk::LogLevel l, const std::string& m) {
                                           if (l == cdk::LogLevel::Warning) warnings.push_back(m);
                                       },
                                       {}));
    CHECK(es["windows"] == 0);
    CHECK(es["valid_pixels"] == 0);
    CHECK(warnings.size() == 1);
    for (double v : read_band(tmp / "empty.tif")) REQUIRE(v == 255);

    // Bad options.
    auto bad = o;
    bad.threshold = 1.0;
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.overlap = 32;
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.prob = bad.out;
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.model = tmp / "missing.cdm";
    CHECK_THROWS_AS(infer_scene(bad), cdk::IoError);
}

TEST_CASE("many scenes: shards, resume, and a failing scene that does not stop the others", "[pipeline][infer]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "a", 64, 32, 3, 0);
    cdk::test::make_fixture_tiles(tmp, "b", 64, 32, 3, 1);
    cdk::test::make_fixture_tiles(tmp, "four", 64, 32, 4, 0);
    auto t = cdk::test::tiny_train_options(tiles, "", tmp / "m.cdm");
    t.epochs = 1;
    train_model(t);
    {
        std::ofstream f(tmp / "pairs.csv");
        f << "scene,pre,post\n"
          << "a,a_scene/pre.tif,a_scene/post.tif\n"
          << "b,b_scene/pre.tif,b_scene/post.tif\n";
    }
    InferOptions o;
    o.model = t.out;
    o.pairs = tmp / "pairs.csv";
    o.out = tmp / "maps";  // created
    o.with_prob = true;
    o.device = "cpu";
    o.tile_size = 32;

    o.shard = "1/2";  // the second scene only
    auto s = infer_scene(o);
    CHECK(s["shard"] == "1/2");
    REQUIRE(s["scenes"].size() == 1);
    CHECK(s["scenes"][0]["scene"] == "b");
    CHECK(fs::exists(tmp / "maps/b.tif"));
    CHECK(fs::exists(tmp / "maps/b_prob.tif"));
    CHECK_FALSE(fs::exists(tmp / "maps/a.tif"));

    // All shards at once now: b exists, so without --resume or --overwrite nothing starts.
    o.shard.clear();
    CHECK_THROWS_WITH(infer_scene(o), Catch::Contains("maps/b.tif") && Catch::Contains("--resume"));
    CHECK_FALSE(fs::exists(tmp / "maps/a.tif"));
    const auto b_time = fs::last_write_time(tmp / "maps/b.tif");
    o.resume = true;
    s = infer_scene(o);
    CHECK(s["done"] == 1);
    CHECK(s["skipped"] == 1);
    CHECK(fs::exists(tmp / "maps/a.tif"));
    CHECK(fs::last_write_time(tmp / "maps/b.tif") == b_time);

    // A scene that does not fit the bundle fails alone; the others are written.
    {
        std::ofstream f(tmp / "mixed.csv");
        f << "scene,pre,post\n"
          << "four,four_scene/pre.tif,four_scene/post.tif\n"
          << "a2,a_scene/pre.tif,a_scene/post.tif\n";
    }
    o.pairs = tmp / "mixed.csv";
    o.resume = false;
    CHECK_THROWS_WITH(infer_scene(o), Catch::Contains("1 of 2 scenes failed") && Catch::Contains("four"));
    CHECK(fs::exists(tmp / "maps/a2.tif"));
    CHECK_FALSE(fs::exists(tmp / "maps/four.tif"));

    // Option rules.
    auto bad = o;
    bad.pre = "x.tif";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.prob = tmp / "p.tif";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.shard = "2/2";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
}

TEST_CASE("Origin-Partition two-pass: the origin's predicted CAR picks the teacher", "[pipeline][infer][op]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "a", 128, 64, 3, 0);
    cdk::geo::PartitionOptions po;
    po.manifest = tiles;
    po.out = tmp / "parts";
    po.thresholds = {0.1};
    po.val_fraction = 0;
    cdk::geo::partition_tiles(po);
    auto train = [&](const std::string& manifest, const std::string& out, uint64_t seed) {
        auto t = cdk::test::tiny_train_options(manifest, "", out);
        t.epochs = 1;
        t.seed = seed;
        train_model(t);
    };
    train(tmp / "parts/origin.csv", tmp / "origin.cdm", 1);
    train(tmp / "parts/small.csv", tmp / "small.cdm", 2);
    train(tmp / "parts/large.csv", tmp / "large.cdm", 3);

    auto single = infer_options(tmp / "small.cdm", tmp / "a_scene", tmp / "small.tif");
    single.prob = tmp / "small_prob.tif";
    infer_scene(single);
    single.model = tmp / "large.cdm";
    single.out = tmp / "large.tif";
    single.prob = tmp / "large_prob.tif";
    infer_scene(single);

    InferOptions op = infer_options("", tmp / "a_scene", tmp / "op.tif");
    op.op_origin = tmp / "origin.cdm";
    op.op_teachers = {"large=" + (tmp / "large.cdm"), "small=" + (tmp / "small.cdm")};  // any order
    op.prob = tmp / "op_prob.tif";
    const auto s = infer_scene(op);
    INFO(s.dump());
    CHECK(s["op"]["thresholds"] == nlohmann::json{0.1});  // from the teachers' bundles
    const long long routed = s["op"]["windows"]["small"].get<long long>() + s["op"]["windows"]["large"].get<long long>();
    CHECK(routed == s["windows"].get<long long>());

    // Every CAR is <= 1: all windows go to "small", and the result is the small teacher's.
    op.op_thresholds = {1.0};
    op.out = tmp / "op_small.tif";
    op.prob = tmp / "op_small_prob.tif";
    CHECK(infer_scene(op)["op"]["windows"]["large"] == 0);
    CHECK(read_band(tmp / "op_small_prob.tif") == read_band(tmp / "small_prob.tif"));
    // No CAR is <= -1: all go to "large".
    op.op_thresholds = {-1.0};
    op.out = tmp / "op_large.tif";
    op.prob = tmp / "op_large_prob.tif";
    CHECK(infer_scene(op)["op"]["windows"]["small"] == 0);
    CHECK(read_band(tmp / "op_large_prob.tif") == read_band(tmp / "large_prob.tif"));
    CHECK(read_band(tmp / "op_large_prob.tif") != read_band(tmp / "small_prob.tif"));

    // Bad combinations.
    auto bad = op;
    bad.model = tmp / "small.cdm";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = op;
    bad.op_teachers = {"small=" + (tmp / "small.cdm")};
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = op;
    bad.op_thresholds = {0.1, 0.2};
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = op;
    bad.op_teachers = {"small", "large=" + (tmp / "large.cdm")};
    bad.out = tmp / "bad.tif";
    bad.prob.clear();
    CHECK_THROWS_WITH(infer_scene(bad), Catch::Contains("NAME=BUNDLE"));
}

TEST_CASE("a scene too wide for --ram is mapped in column strips, to the same mask and probability",
          "[pipeline][infer][strips]") {
    TempDir tmp;
    const auto model = trained_model(tmp);
    // 2048 x 64 with a nodata corner: 85 windows of 32 (overlap 8) per row, 3 rows.
    cdk::test::make_fixture_tiles(tmp, "wide", 2048, 64, 3, 1, true);
    const std::string scene = tmp / "wide_scene";
    auto one = infer_options(model, scene, tmp / "one.tif");
    one.prob = tmp / "one_prob.tif";
    one.batch_size = 1;  // the same windows in the same batches either way
    const auto s1 = infer_scene(one);
    INFO(s1.dump());
    CHECK(s1["strips"] == 1);
    CHECK(s1["changed_pixels"].get<long long>() > 0);

    auto strips = one;
    strips.out = tmp / "strips.tif";
    strips.prob = tmp / "strips_prob.tif";
    strips.ram_mb = 1;
    strips.write.creation_options = {"COMPRESS=DEFLATE", "TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16"};
    const auto s2 = infer_scene(strips);
    INFO(s2.dump());
    CHECK(s2["strips"].get<int>() >= 2);
    CHECK(s2["windows"] == s1["windows"]);
    CHECK(s2["changed_pixels"] == s1["changed_pixels"]);
    CHECK(read_band(strips.out) == read_band(one.out));
    CHECK(read_band(strips.prob) == read_band(one.prob));
    // Written in strips, staged, then copied compressed: the creation options hold.
    auto ds = cdk::geo::open_raster(strips.out);
    const char* compression = ds->GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE");
    REQUIRE(compression != nullptr);
    CHECK(std::string(compression) == "DEFLATE");
    int bx = 0, by = 0;
    ds->GetRasterBand(1)->GetBlockSize(&bx, &by);
    CHECK(bx == 16);
    ds.reset();

    // Windows that cannot fit the cap at all: one clear error, no output.
    auto tiny = one;
    tiny.out = tmp / "tiny.tif";
    tiny.prob.clear();
    tiny.ram_mb = 1;
    tiny.tile_size = 64;
    tiny.overlap = 16;
    tiny.batch_size = 16;
    CHECK_THROWS_WITH(infer_scene(tiny), Catch::Contains("--ram 1 MB is too small for windows of 64x64 with batch 16"));
    CHECK_FALSE(fs::exists(tmp / "tiny.tif"));
    // Nothing else left beside the outputs (temporary and staged files are gone).
    for (const auto& e : fs::directory_iterator(tmp.path()))
        CHECK(e.path().filename().string().find(".part-") == std::string::npos);
}
