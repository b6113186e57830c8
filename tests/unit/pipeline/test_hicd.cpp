// Training on degraded pairs (--degrade) and HiCD distillation through the shared trainer.
#include <catch2/catch.hpp>

#include <filesystem>

#include "cdk/core/error.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/pipeline/distill.hpp"
#include "cdk/pipeline/train.hpp"
#include "pipeline_fixtures.hpp"

using namespace cdk::pipeline;
using cdk::test::TempDir;
namespace fs = std::filesystem;

TEST_CASE("the loader degrades one date, keeps the clean pair when asked, and augments all alike",
          "[pipeline][dataset][hicd]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "train", 64, 32, 3, 0, true);
    TileDataset plain(tiles, cdk::nn::Normalization::standardised(3, "none"));
    TileDataset deg(tiles, cdk::nn::Normalization::standardised(3, "none"));
    deg.set_degradation({"blur=1.5,noise=8", "2", true});
    AugmentOptions aug;
    aug.crop = 24;
    for (size_t i = 0; i < plain.size(); ++i) {
        std::mt19937_64 r1(40 + i), r2(40 + i), r3(40 + i);
        const Sample a = plain.get(i, aug, r1), b = deg.get(i, aug, r2);
        // The same crop, flips, rotation and swap: the clean copies are the plain sample.
        REQUIRE(b.pre_clean.defined());
        CHECK(b.pre_clean.equal(a.pre));
        CHECK(b.post_clean.equal(a.post));
        CHECK(b.label.equal(a.label));
        // Date 2 was degraded before any swap: exactly one of the two dates differs.
        const bool pre_same = b.pre.equal(a.pre), post_same = b.post.equal(a.post);
        CHECK(pre_same != post_same);
        // The generator after the sample is where it would be without degradation.
        CHECK(r1() == r2());
        // Same tile, same generator: the same degradation (validation sees fixed ones).
        CHECK(deg.get(i, aug, r3).post.equal(b.post));
        CHECK_FALSE(plain.get(i, std::nullopt, r1).pre_clean.defined());
    }
    CHECK_THROWS_WITH(deg.set_degradation({"blur=x", "2", false}), Catch::Contains("blur=x"));
    CHECK_THROWS_WITH(deg.set_degradation({"res=2", "3", false}), Catch::Contains("'3'"));
}

TEST_CASE("HiCD with every term at 0 trains exactly like training on degraded pairs", "[pipeline][distill][hicd]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0);
    const auto val = cdk::test::make_fixture_tiles(tmp, "val", 128, 32, 3, 1);
    auto t = cdk::test::tiny_train_options(train, val, tmp / "teacher.cdm");
    train_model(t);

    // The baseline: cd-train-teacher --degrade from the teacher's weights.
    auto base = cdk::test::tiny_train_options(train, val, tmp / "direct.cdm");
    base.init = tmp / "teacher.cdm";
    base.degrade = "res=2,noise=5";
    base.seed = 9;
    const auto sb = train_model(base);
    const auto hb = cdk::nn::read_bundle_header(tmp / "direct.cdm");
    CHECK(hb["training"]["degrade"]["spec"] == "res=2,noise=5");
    CHECK(hb["training"]["degrade"]["date"] == "2");

    DistillOptions d;
    d.method = "hicd";
    d.train = base;
    d.train.out = tmp / "hicd0.cdm";
    d.hicd.teacher = tmp / "teacher.cdm";
    d.hicd.self_weight = d.hicd.cross_weight = d.hicd.global_weight = 0;
    const auto s0 = distill_model(d);
    CHECK(cdk::test::same_weights(tmp / "direct.cdm", tmp / "hicd0.cdm"));
    CHECK(s0["metrics"]["change"]["f1"] == sb["metrics"]["change"]["f1"]);

    // With its terms on, the student differs, logs every term, records its teacher, and the
    // teacher's file is untouched.
    const auto teacher_before = cdk::test::run_shell("md5sum < '" + tmp / "teacher.cdm" + "'").out;
    d.train.out = tmp / "hicd.cdm";
    d.hicd.self_weight = d.hicd.cross_weight = d.hicd.global_weight = 1;
    const auto s1 = distill_model(d);
    CHECK_FALSE(cdk::test::same_weights(tmp / "direct.cdm", tmp / "hicd.cdm"));
    CHECK(s1["distillation"]["method"] == "hicd");
    const auto h = cdk::nn::read_bundle_header(tmp / "hicd.cdm");
    CHECK(h["distillation"]["teacher"] == tmp / "teacher.cdm");
    CHECK(h["distillation"]["degrade"] == "res=2,noise=5");
    CHECK(h["training"]["degrade"]["spec"] == "res=2,noise=5");
    CHECK(cdk::test::run_shell("md5sum < '" + tmp / "teacher.cdm" + "'").out == teacher_before);

    // Without a start the student is the teacher's architecture, trained from scratch.
    d.train.init.clear();
    d.train.model.arch.clear();
    d.train.out = tmp / "fresh.cdm";
    d.train.epochs = 1;
    CHECK(distill_model(d)["arch"] == "fc-siam-diff");

    // HiCD needs a degradation and a teacher.
    auto bad = d;
    bad.train.degrade.clear();
    CHECK_THROWS_WITH(validate(bad), Catch::Contains("--degrade"));
    bad = d;
    bad.hicd.teacher.clear();
    CHECK_THROWS_WITH(validate(bad), Catch::Contains("--teacher"));
    bad = d;
    bad.method = "kd-msi";  // learns from image-level labels of clean pairs
    CHECK_THROWS_WITH(validate(bad), Catch::Contains("--degrade goes with --method hicd"));
}
