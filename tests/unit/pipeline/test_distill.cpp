#include <catch2/catch.hpp>

#include <filesystem>

#include "cdk/core/error.hpp"
#include "cdk/geo/partition.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/distill.hpp"
#include "cdk/pipeline/distill.hpp"
#include "pipeline_fixtures.hpp"

using namespace cdk::pipeline;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A bundle of an untrained width-4 fc-siam-diff, as if trained on a partition with `thresholds`.
std::string make_teacher(const TempDir& tmp, const std::string& name, uint64_t seed,
                         const std::vector<double>& thresholds) {
    torch::manual_seed(seed);
    cdk::nn::ModelOptions mo;
    mo.arch = "fc-siam-diff";
    mo.width = 4;
    auto m = cdk::nn::create_model(mo);
    m->eval();
    const nlohmann::json header = {
        {"normalization", {{"mean", {0, 0, 0}}, {"std", {1, 1, 1}}}},
        {"training", {{"train", {{"partition", {{"name", name}, {"thresholds", thresholds}}}}}}}};
    const std::string path = tmp / (name + ".cdm");
    cdk::nn::save_bundle(path, *m, header);
    return path;
}

Batch batch_with_cars(const std::vector<double>& cars) {
    Batch b;
    const auto n = int64_t(cars.size());
    b.pre = torch::randn({n, 3, 16, 16});
    b.post = torch::randn({n, 3, 16, 16});
    b.label = torch::randint(0, 2, {n, 16, 16}, torch::kInt64);
    b.car = cars;
    for (int64_t i = 0; i < n; ++i) b.ids.push_back(std::to_string(i));
    return b;
}

TrainOptions tiny(const std::string& train, const std::string& out) {
    auto o = cdk::test::tiny_train_options(train, "", out);
    o.seed = 5;
    return o;
}

}  // namespace

TEST_CASE("MTKD routes every sample to the teacher of its CAR range", "[pipeline][distill]") {
    TempDir tmp;
    const std::vector<double> th{0.05, 0.2};
    const auto small = make_teacher(tmp, "small", 1, th), medium = make_teacher(tmp, "medium", 2, th),
               large = make_teacher(tmp, "large", 3, th);
    // Given in any order: put in CAR order by their partition names; thresholds from the bundles.
    MtkdTerm term(load_teachers({"large=" + large, "small=" + small, "medium=" + medium}, {}, torch::kCPU), {});
    CHECK(term.teachers().names == std::vector<std::string>{"small", "medium", "large"});
    CHECK(term.teachers().thresholds == th);
    // 0 is also what an all-nodata crop gets; exactly at a threshold stays below it.
    const auto b = batch_with_cars({0.0, 0.05, 0.0500001, 0.2, 0.2000001, 1.0});
    CHECK(term.route(b) == std::vector<int>{0, 0, 1, 1, 2, 2});

    // Each sample's teacher logits are its own teacher's.
    const auto logits = term.teacher_logits(b);
    for (int64_t i = 0; i < 6; ++i) {
        const auto& t = term.teachers().bundles[size_t(term.route(b)[size_t(i)])];
        torch::NoGradGuard no_grad;
        const auto own = t.model->forward(b.pre.narrow(0, i, 1), b.post.narrow(0, i, 1)).logits;
        CHECK(torch::allclose(logits.narrow(0, i, 1), own, 1e-5, 1e-6));
    }
    CHECK(term.routed() == std::vector<long long>{2, 2, 2});
    CHECK_FALSE(logits.requires_grad());

    // Thresholds given explicitly win; a wrong count or a malformed teacher is refused.
    CHECK(load_teachers({"small=" + small, "large=" + large}, {0.1}, torch::kCPU).thresholds ==
          std::vector<double>{0.1});
    CHECK_THROWS_WITH(load_teachers({"small=" + small, "large=" + large}, {}, torch::kCPU),
                      Catch::Contains("thresholds"));
    CHECK_THROWS_WITH(load_teachers({"small", "large=" + large}, {0.1}, torch::kCPU), Catch::Contains("NAME=BUNDLE"));
}

TEST_CASE("the KD term is really optimised: the student's logits move to the teacher's", "[pipeline][distill]") {
    torch::manual_seed(7);
    cdk::nn::ModelOptions mo;
    mo.arch = "fc-siam-diff";
    mo.width = 4;
    auto student = cdk::nn::create_model(mo);
    torch::manual_seed(8);
    auto teacher = cdk::nn::create_model(mo);
    teacher->eval();
    const auto b = batch_with_cars({0.1, 0.1, 0.1, 0.1});
    torch::Tensor target_logits;
    {
        torch::NoGradGuard no_grad;
        target_logits = teacher->forward(b.pre, b.post).logits * 3.0;
    }
    for (const cdk::nn::KdOptions kd : {cdk::nn::KdOptions{1.0, 1.0, 0.0}, cdk::nn::KdOptions{0.0, 2.0, 1.0}}) {
        torch::manual_seed(7);
        student = cdk::nn::create_model(mo);
        student->train();
        torch::optim::Adam opt(student->parameters(), torch::optim::AdamOptions(1e-2));
        double first = 0, last = 0;
        for (int step = 0; step < 40; ++step) {
            const auto loss = cdk::nn::kd_loss(student->forward(b.pre, b.post).logits, target_logits, b.label, kd);
            if (step == 0) first = loss.item<double>();
            last = loss.item<double>();
            opt.zero_grad();
            loss.backward();
            opt.step();
        }
        INFO("kd weight " << kd.weight << ", KL weight " << kd.kl_weight << ": " << first << " -> " << last);
        CHECK(first > 0);
        CHECK(last < 0.3 * first);
    }
    // Ignored pixels do not count; identical logits cost nothing.
    auto label = b.label.clone().fill_(255);
    CHECK(cdk::nn::kd_loss(target_logits + 1, target_logits, label, {}).item<double>() == 0);
    CHECK(cdk::nn::kd_loss(target_logits, target_logits, b.label, {1, 2, 1}).item<double>() == Approx(0).margin(1e-6));
    // The documented defaults (docs/cd-distill.md; λ = 0.1 from the OSCD benchmark).
    CHECK(cdk::nn::KdOptions{}.weight == 0.1);
    CHECK(cdk::nn::KdOptions{}.kl_weight == 0.0);
}

TEST_CASE("with lambda 0 distillation trains exactly like cd-train-teacher, and teachers stay frozen",
          "[pipeline][distill]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "tiles", 128, 32);
    cdk::geo::PartitionOptions p;
    p.manifest = tiles;
    p.out = tmp / "parts";
    p.quantiles = 2;
    p.thresholds.clear();
    p.val_fraction = 0;
    cdk::geo::partition_tiles(p);
    auto origin = tiny(tmp / "parts/origin.csv", tmp / "origin.cdm");
    origin.epochs = 1;
    train_model(origin);
    auto teach = [&](const std::string& name, uint64_t seed) {
        auto t = tiny(tmp / ("parts/" + name + ".csv"), tmp / (name + ".cdm"));
        t.epochs = 1;
        t.seed = seed;
        train_model(t);
        return tmp / (name + ".cdm");
    };
    const auto small = teach("small", 11), large = teach("large", 12);
    const auto small_bytes = cdk::test::run_shell("md5sum < '" + small + "'").out;

    // Same start, same options: the KD path with lambda 0 must not change a single weight.
    auto plain = tiny(tmp / "parts/origin.csv", tmp / "plain.cdm");
    plain.init = tmp / "origin.cdm";
    train_model(plain);
    DistillOptions d;
    d.train = tiny(tmp / "parts/origin.csv", tmp / "student0.cdm");
    d.train.init = tmp / "origin.cdm";
    d.mtkd.teachers = {"small=" + small, "large=" + large};
    d.mtkd.kd = {0.0, 1.0, 0.0};
    const auto s0 = distill_model(d);
    CHECK(cdk::test::same_weights(tmp / "plain.cdm", tmp / "student0.cdm"));
    CHECK(s0["distillation"]["samples_routed"]["small"].get<long long>() +
              s0["distillation"]["samples_routed"]["large"].get<long long>() ==
          2 * 4);  // every sample of both epochs

    // With lambda > 0 the student differs, records its teachers, and the teachers are untouched.
    d.train.out = tmp / "student.cdm";
    d.mtkd.kd = {1.0, 1.0, 0.0};
    distill_model(d);
    CHECK_FALSE(cdk::test::same_weights(tmp / "plain.cdm", tmp / "student.cdm"));
    const auto h = cdk::nn::read_bundle_header(tmp / "student.cdm");
    CHECK(h["distillation"]["method"] == "mtkd");
    CHECK(h["distillation"]["teachers"].size() == 2);
    CHECK(h["distillation"]["teachers"][0]["name"] == "small");
    CHECK(h["distillation"]["thresholds"].size() == 1);
    CHECK(h["distillation"]["kd_weight"] == 1.0);
    CHECK(h["training"]["init"] == tmp / "origin.cdm");
    CHECK(cdk::test::run_shell("md5sum < '" + small + "'").out == small_bytes);

    // In memory: teachers used during the student's training steps keep weights and
    // batch-norm statistics.
    MtkdTerm term(load_teachers({"small=" + small, "large=" + large}, {}, torch::kCPU), {});
    const auto fresh = cdk::nn::load_bundle(small);
    auto student = cdk::nn::load_bundle(tmp / "origin.cdm").model;
    student->train();
    torch::optim::SGD opt(student->parameters(), torch::optim::SGDOptions(0.1));
    for (int i = 0; i < 3; ++i) {
        const auto b = batch_with_cars({0.0, 0.9, 0.0, 0.9});
        const auto loss = term(b, student->forward(b.pre, b.post));
        opt.zero_grad();
        loss.backward();
        opt.step();
    }
    CHECK(cdk::test::same_weights(*term.teachers().bundles[0].model, *fresh.model));
    for (const auto& b : term.teachers().bundles)
        for (const auto& p : b.model->parameters()) CHECK_FALSE(p.grad().defined());

    auto bad = d;
    bad.method = "kd-msi";  // its own model: a pair of CAM classifiers (test_kdmsi.cpp)
    CHECK_THROWS_WITH(validate(bad), Catch::Contains("kd-msi-cam"));
    bad.method = "kd-mis";
    CHECK_THROWS_WITH(validate(bad), Catch::Contains("known: mtkd, hicd, kd-msi"));
    bad = d;
    bad.mtkd.teachers = {"small=" + small};
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    // The student sees its inputs as the teachers do: another per-scene standardisation is
    // refused before any training, naming the teachers' mode.
    bad = d;
    bad.train.out = tmp / "student_band.cdm";
    bad.train.scene_norm = "band";
    CHECK_THROWS_WITH(distill_model(bad), Catch::Contains("--scene-norm none"));
    CHECK_FALSE(fs::exists(tmp / "student_band.cdm"));
}
