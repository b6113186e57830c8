#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "cdk/core/error.hpp"
#include "cdk/geo/partition.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"
#include "cdk/pipeline/train.hpp"
#include "pipeline_fixtures.hpp"

using namespace cdk::pipeline;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> read_log(const std::string& path) {
    std::ifstream in(path);
    std::vector<nlohmann::json> lines;
    std::string line;
    while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
    return lines;
}

// 20 epochs of a width-8 fc-siam-diff on fixture tiles whose change is trivially learnable
// (TMP/train, TMP/val; the bundle goes to TMP/m.cdm).
TrainOptions learnable_options(const TempDir& tmp) {
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0);
    const auto val = cdk::test::make_fixture_tiles(tmp, "val", 128, 32, 3, 1);
    auto o = cdk::test::tiny_train_options(train, val, tmp / "m.cdm");
    o.epochs = 20;
    o.lr = 5e-3;
    o.schedule = "poly";
    o.model.width = 8;
    o.loss.class_weights = {1, 3};
    return o;
}

// The run of learnable_options(tmp) learned: its loss halved over the epochs and the change
// F1 is high. Returns the per-epoch log.
std::vector<nlohmann::json> check_learned(const TempDir& tmp, const TrainOptions& o, const nlohmann::json& summary) {
    const auto log = read_log(tmp / "m.cdm.log.jsonl");
    REQUIRE(log.size() == size_t(o.epochs));
    const double first = log.front()["train_loss"], last = log.back()["train_loss"];
    INFO("loss " << first << " -> " << last << ", summary " << summary.dump());
    CHECK(last < 0.5 * first);
    const double f1 = summary["metrics"]["change"]["f1"];
    CHECK(f1 > 0.85);  // chance (all change) is about 0.18
    return log;
}

}  // namespace

TEST_CASE("a tiny model learns a trivially learnable change", "[pipeline][train]") {
    TempDir tmp;
    const auto o = learnable_options(tmp);
    const auto summary = train_model(o);
    CHECK(summary["complete"] == true);
    const auto log = check_learned(tmp, o, summary);
    CHECK_FALSE(fs::exists(tmp / "m.cdm.ckpt"));  // removed after a completed run
    for (const auto& l : log) {
        CHECK(l.contains("samples_per_s"));
        CHECK(l["val"]["change"].contains("f1"));
        CHECK(l["seconds"].get<double>() > 0);
    }

    // The bundle describes itself.
    const auto h = cdk::nn::read_bundle_header(tmp / "m.cdm");
    CHECK(h["bands"].size() == 3);
    CHECK(h["data_type"] == "Byte");
    CHECK(h["tile_size"] == 32);
    CHECK(h["normalization"]["mean"].size() == 3);
    CHECK(h["training"]["train"]["tiles"] == 8);
    CHECK(h["training"]["val"]["tiles"] == 4);
    CHECK(h["training"]["complete"] == true);
    CHECK(h["training"]["epochs_completed"] == 20);
    CHECK(h["metrics"]["change"]["f1"].get<double>() == Approx(summary["metrics"]["change"]["f1"].get<double>()));
    CHECK(h["metrics"]["epoch"] == summary["best_epoch"]);
}

TEST_CASE("mixed precision on the CPU learns the same trivially learnable change", "[pipeline][train]") {
    if (!cdk::nn::cpu_bf16_supported()) {
        WARN("skipped: this CPU has no AVX-512, so LibTorch has no bfloat16 path for --amp");
        return;
    }
    TempDir tmp;
    auto o = learnable_options(tmp);
    o.amp = true;
    const auto summary = train_model(o);
    check_learned(tmp, o, summary);
    CHECK(cdk::nn::read_bundle_header(tmp / "m.cdm")["training"]["amp"] == true);
    // The weights stay float32: the bundle loads and runs like any other.
    const auto b = cdk::nn::load_bundle(tmp / "m.cdm", torch::kCPU);
    for (const auto& p : b.model->parameters()) CHECK(p.scalar_type() == torch::kFloat32);
}

TEST_CASE("the same seed gives the same weights whatever the worker count", "[pipeline][train]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 32);
    auto o = cdk::test::tiny_train_options(train, "", tmp / "w1.cdm");
    o.augment.crop = 24;
    o.workers = 1;
    train_model(o);
    o.out = tmp / "w2.cdm";
    o.workers = 2;
    train_model(o);
    CHECK(cdk::test::same_weights(tmp / "w1.cdm", tmp / "w2.cdm"));
    o.out = tmp / "s4.cdm";
    o.seed = 4;
    train_model(o);
    CHECK_FALSE(cdk::test::same_weights(tmp / "w1.cdm", tmp / "s4.cdm"));
}

TEST_CASE("the same seed gives the same weights through the CPU's fused and Winograd paths", "[pipeline][train]") {
    // Width 16 trains channels-last: batch norm, ReLU and dropout run fused, and the layers
    // of 32+ channels as Winograd convolutions where the CPU has them (AVX-512). Two
    // threads, so that the parallel reductions would show any dependence on scheduling.
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 32);
    auto o = cdk::test::tiny_train_options(train, "", tmp / "a.cdm");
    o.model.width = 16;
    o.threads = 2;
    train_model(o);
    o.out = tmp / "b.cdm";
    train_model(o);
    CHECK(cdk::test::same_weights(tmp / "a.cdm", tmp / "b.cdm"));
}

TEST_CASE("a stopped run resumes to the same weights as an uninterrupted one", "[pipeline][train]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 32);  // 4 tiles
    const auto val = cdk::test::make_fixture_tiles(tmp, "val", 64, 32, 3, 1);
    auto o = cdk::test::tiny_train_options(train, val, tmp / "full.cdm");
    o.epochs = 3;
    o.batch_size = 2;  // 2 steps per epoch
    o.schedule = "cosine";
    o.warmup_steps = 1;
    train_model(o);

    o.out = tmp / "part.cdm";
    o.max_steps = 2;  // stops after epoch 1
    const auto stopped = train_model(o);
    CHECK(stopped["complete"] == false);
    CHECK(stopped["epochs_completed"] == 1);
    CHECK(fs::exists(tmp / "part.cdm.ckpt"));
    CHECK(fs::exists(tmp / "part.cdm"));
    CHECK(read_log(tmp / "part.cdm.log.jsonl").size() == 1);
    CHECK(cdk::nn::read_bundle_header(tmp / "part.cdm")["training"]["complete"] == false);

    // Without --resume the interrupted run is not silently replaced.
    o.max_steps = 0;
    CHECK_THROWS_AS(train_model(o), cdk::ConfigError);

    o.resume = true;
    const auto resumed = train_model(o);
    CHECK(resumed["complete"] == true);
    CHECK(resumed["resumed_after_epochs"] == nlohmann::json{1});
    CHECK_FALSE(fs::exists(tmp / "part.cdm.ckpt"));
    const auto log = read_log(tmp / "part.cdm.log.jsonl");
    REQUIRE(log.size() == 3);
    CHECK(log[2]["epoch"] == 3);
    const auto h = cdk::nn::read_bundle_header(tmp / "part.cdm");
    CHECK(h["training"]["complete"] == true);
    CHECK(h["training"]["epochs_completed"] == 3);
    CHECK(h["training"]["resumed_after_epochs"] == nlohmann::json{1});
    CHECK(h["metrics"] == cdk::nn::read_bundle_header(tmp / "full.cdm")["metrics"]);
    CHECK(cdk::test::same_weights(tmp / "full.cdm", tmp / "part.cdm"));

    // Resuming a finished run does nothing.
    const auto again = train_model(o);
    CHECK(again["skipped"] == true);
}

TEST_CASE("the exp schedule decays the rate by 0.95 an epoch, and adam puts weight decay in the gradient",
          "[pipeline][train]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 32);  // 4 tiles
    auto o = cdk::test::tiny_train_options(train, "", tmp / "exp.cdm");
    o.epochs = 3;
    o.batch_size = 2;  // 2 steps per epoch
    o.optimizer = "adam";
    o.schedule = "exp";
    o.weight_decay = 0.5;
    train_model(o);
    const auto log = read_log(tmp / "exp.cdm.log.jsonl");
    REQUIRE(log.size() == 3);
    for (size_t e = 0; e < log.size(); ++e)
        CHECK(log[e]["lr"].get<double>() == Approx(o.lr * std::pow(0.95, double(e))));
    CHECK(cdk::nn::read_bundle_header(tmp / "exp.cdm")["training"]["optimizer"] == "adam");

    // Coupled (Adam) and decoupled (AdamW) weight decay are different optimisers.
    o.out = tmp / "adamw.cdm";
    o.optimizer = "adamw";
    train_model(o);
    CHECK_FALSE(cdk::test::same_weights(tmp / "exp.cdm", tmp / "adamw.cdm"));

    o.schedule = "step";
    CHECK_THROWS_WITH(train_model(o), Catch::Contains("unknown schedule 'step'") && Catch::Contains("exp"));
}

TEST_CASE("training records the CAR partition of a cd-partition manifest", "[pipeline][train]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "tiles", 128, 64);
    cdk::geo::PartitionOptions p;
    p.manifest = tiles;
    p.out = tmp / "parts";
    p.val_fraction = 0.25;
    cdk::geo::partition_tiles(p);
    auto o = cdk::test::tiny_train_options(tmp / "parts/small.csv", tmp / "parts/val.csv", tmp / "small.cdm");
    o.epochs = 1;
    train_model(o);
    const auto h = cdk::nn::read_bundle_header(tmp / "small.cdm");
    const auto& part = h["training"]["train"]["partition"];
    CHECK(part["name"] == "small");
    CHECK(part["thresholds"] == nlohmann::json{0.05, 0.2});
    CHECK(h["training"]["val"]["partition"]["name"] == "val");
}

TEST_CASE("an extra loss term is added at every step", "[pipeline][train]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 64, 32);
    auto o = cdk::test::tiny_train_options(train, "", tmp / "x.cdm");
    o.epochs = 1;
    int calls = 0;
    std::vector<double> cars;
    train_model(o, {}, [&](const Batch& b, const cdk::nn::ChangeOutput& out) {
        ++calls;
        cars.insert(cars.end(), b.car.begin(), b.car.end());
        CHECK(out.logits.size(0) == b.pre.size(0));
        return out.logits.mean() * 0.0;
    });
    CHECK(calls == 1);
    CHECK(cars.size() == 2);
}

TEST_CASE("training refuses bad options and mismatched inputs", "[pipeline][train]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 64, 32, 3);
    const auto four = cdk::test::make_fixture_tiles(tmp, "four", 64, 32, 4);
    auto o = cdk::test::tiny_train_options(train, "", tmp / "m.cdm");
    o.epochs = 1;

    auto bad = o;
    bad.optimizer = "lamb";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.loss.class_weights = {1, 2, 3};
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.schedule = "step";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);

    bad = o;
    bad.memory_format = "nhwc";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    // Mixed precision on a CPU without AVX-512 is refused before anything is written.
    if (!cdk::nn::cpu_bf16_supported()) {
        bad = o;
        bad.amp = true;
        CHECK_THROWS_WITH(train_model(bad), Catch::Contains("--amp") && Catch::Contains("AVX-512"));
        CHECK_FALSE(fs::exists(o.out));
    }

    train_model(o);
    CHECK_THROWS_AS(train_model(o), cdk::ConfigError);  // exists, no overwrite
    o.overwrite = true;
    CHECK_NOTHROW(train_model(o));

    // --init with another band count names both sides.
    auto init = cdk::test::tiny_train_options(four, "", tmp / "four.cdm");
    init.init = tmp / "m.cdm";
    try {
        train_model(init);
        FAIL("no error");
    } catch (const cdk::ModelError& e) {
        const std::string msg = e.what();
        CHECK(msg.find("m.cdm") != std::string::npos);
        CHECK(msg.find("four/tiles.csv") != std::string::npos);
        CHECK(msg.find('3') != std::string::npos);
        CHECK(msg.find('4') != std::string::npos);
    }
    CHECK_FALSE(fs::exists(tmp / "four.cdm"));
    // --init with the same bands starts from those weights.
    auto same = cdk::test::tiny_train_options(train, "", tmp / "again.cdm");
    same.init = tmp / "m.cdm";
    same.epochs = 1;
    CHECK(train_model(same)["complete"] == true);
    CHECK(cdk::nn::read_bundle_header(tmp / "again.cdm")["training"]["init"] == tmp / "m.cdm");
}

TEST_CASE("an interrupted run keeps its last checkpoint and reports each epoch", "[pipeline][train]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 32);  // 4 tiles
    auto o = cdk::test::tiny_train_options(train, "", tmp / "i.cdm");
    o.epochs = 4;
    o.batch_size = 2;  // 2 steps per epoch
    std::vector<std::string> lines;
    double last_done = 0;
    // The user interrupts in epoch 2 (the program's progress callback returns false on Ctrl-C).
    cdk::RunContext stop_in_epoch_2(
        [&](cdk::LogLevel, const std::string& m) { lines.push_back(m); },
        [&](double done, const std::string&) {
            last_done = done;
            return done < 0.3;
        });
    CHECK_THROWS_AS(train_model(o, stop_in_epoch_2), cdk::Cancelled);
    CHECK(last_done == Approx(3.0 / 8));
    CHECK(fs::exists(tmp / "i.cdm.ckpt"));
    CHECK(std::count_if(lines.begin(), lines.end(),
                        [](const std::string& l) { return l.rfind("epoch 1/4: loss ", 0) == 0; }) == 1);
    const auto log = read_log(tmp / "i.cdm.log.jsonl");
    REQUIRE(log.size() == 1);
    CHECK(log[0]["lr"] == Approx(o.lr));  // constant schedule
    CHECK(log[0]["val"].is_null());

    o.resume = true;
    lines.clear();
    const auto done = train_model(o, cdk::RunContext([&](cdk::LogLevel, const std::string& m) { lines.push_back(m); }, {}));
    CHECK(done["complete"] == true);
    CHECK(done["resumed_after_epochs"] == nlohmann::json{1});
    CHECK(read_log(tmp / "i.cdm.log.jsonl").size() == 4);
    CHECK(std::count_if(lines.begin(), lines.end(),
                        [](const std::string& l) { return l.rfind("epoch ", 0) == 0; }) == 3);
    CHECK_FALSE(fs::exists(tmp / "i.cdm.ckpt"));
}

TEST_CASE("a weight average (ema) is validated and kept, and the training itself is unchanged",
          "[pipeline][train]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 32);  // 4 tiles
    const auto val = cdk::test::make_fixture_tiles(tmp, "val", 64, 32, 3, 1);

    // One step, no validation (the latest weights are kept): the average after one update
    // is 0.1 x the initial weights + 0.9 x the trained ones (the decay starts at 1/10).
    auto o = cdk::test::tiny_train_options(train, "", tmp / "plain1.cdm");
    o.epochs = 1;
    train_model(o);
    o.out = tmp / "ema1.cdm";
    o.ema = 0.5;
    const auto s1 = train_model(o);
    CHECK(s1["ema"] == 0.5);
    CHECK(cdk::nn::read_bundle_header(tmp / "ema1.cdm")["training"]["ema"] == 0.5);
    {
        torch::manual_seed(o.seed);
        auto mo = o.model;
        mo.in_bands = 3;
        auto init = cdk::nn::create_model(mo);
        auto trained = cdk::nn::load_bundle(tmp / "plain1.cdm").model;
        auto avg = cdk::nn::load_bundle(tmp / "ema1.cdm").model;
        auto p0 = init->named_parameters(), p1 = trained->named_parameters(), pa = avg->named_parameters();
        REQUIRE(pa.size() == p1.size());
        for (const auto& p : pa) {
            INFO(p.key());
            const auto want = 0.1 * p0[p.key()] + 0.9 * p1[p.key()];
            CHECK(torch::allclose(p.value(), want, 1e-5, 1e-6));
            CHECK_FALSE(p.value().equal(p1[p.key()]));
        }
        auto b0 = init->named_buffers(), b1 = trained->named_buffers();
        for (const auto& b : avg->named_buffers()) {
            INFO(b.key());
            if (b.value().is_floating_point())
                CHECK(torch::allclose(b.value(), 0.1 * b0[b.key()] + 0.9 * b1[b.key()], 1e-5, 1e-6));
            else
                CHECK(b.value().equal(b1[b.key()]));
        }
    }

    // With validation: the live weights follow the same path as without --ema (same
    // confusion every epoch), and the average is what is scored and kept.
    o = cdk::test::tiny_train_options(train, val, tmp / "plain.cdm");
    o.epochs = 3;
    o.batch_size = 2;  // 2 steps per epoch
    train_model(o);
    o.out = tmp / "full.cdm";
    o.ema = 0.6;
    train_model(o);
    const auto plain_log = read_log(tmp / "plain.cdm.log.jsonl"), ema_log = read_log(tmp / "full.cdm.log.jsonl");
    REQUIRE(ema_log.size() == 3);
    for (size_t e = 0; e < 3; ++e) {
        CHECK(ema_log[e]["val_live"]["confusion"] == plain_log[e]["val"]["confusion"]);
        CHECK(ema_log[e]["train_loss"] == plain_log[e]["train_loss"]);
        CHECK_FALSE(plain_log[e].contains("val_live"));
    }
    CHECK(ema_log[2]["val"]["loss"] != plain_log[2]["val"]["loss"]);
    CHECK_FALSE(cdk::test::same_weights(tmp / "plain.cdm", tmp / "full.cdm"));

    // Stopped and resumed, the average comes back from the checkpoint.
    o.out = tmp / "part.cdm";
    o.max_steps = 2;
    train_model(o);
    o.max_steps = 0;
    o.resume = true;
    auto other = o;
    other.ema = 0.9;
    CHECK_THROWS_WITH(train_model(other), Catch::Contains("part.cdm.ckpt") && Catch::Contains("--ema 0.6") &&
                                              Catch::Contains("--ema 0.9"));
    train_model(o);
    CHECK(cdk::test::same_weights(tmp / "full.cdm", tmp / "part.cdm"));
    CHECK(read_log(tmp / "part.cdm.log.jsonl").size() == 3);

    auto bad = o;
    bad.ema = 1;
    CHECK_THROWS_WITH(validate(bad), Catch::Contains("--ema"));
}
