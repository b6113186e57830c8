// The trainer drives any objective: a method that learns from image-level labels alone,
// and one that trains a second network jointly and keeps it in the checkpoint.
#include <catch2/catch.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>

#include "cdk/core/error.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/pipeline/train.hpp"
#include "pipeline_fixtures.hpp"

using namespace cdk::pipeline;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

// The fixture's manifest with the label rasters dropped and an image-level `changed`
// column instead (1 where the tile's CAR is above 0).
std::string image_level_manifest(const std::string& tiles_csv, const std::string& out) {
    const cdk::CsvTable t = cdk::read_csv(tiles_csv);
    const int label = t.column("label"), car = t.column("car");
    std::ofstream f(out);
    std::vector<std::string> header = t.header;
    header.push_back("changed");
    f << cdk::csv_line(header) << "\n";
    for (auto row : t.rows) {
        const std::string changed = std::stod(row[size_t(car)]) > 0 ? "1" : "0";
        row[size_t(label)].clear();
        row[size_t(car)].clear();
        row.push_back(changed);
        f << cdk::csv_line(row) << "\n";
    }
    return out;
}

// A weakly supervised toy method: BCE of the mean change logit against the image-level label.
// What the objective saw (kept by the test: the trainer owns and ends the objective).
struct Seen {
    std::vector<int> changed;
    std::vector<bool> labelled;
};

class ImageLevelObjective : public cdk::nn::Objective {
public:
    ImageLevelObjective(cdk::nn::ChangeModel m, Seen& seen) : model_(std::move(m)), seen_(seen) {}
    std::string name() const override { return "image-level"; }
    cdk::nn::ChangeModelImpl& model() override { return *model_; }
    bool needs_pixel_labels() const override { return false; }
    cdk::nn::Loss loss(const cdk::nn::Batch& b, const cdk::nn::StepContext& step) override {
        seen_.changed.insert(seen_.changed.end(), b.changed.begin(), b.changed.end());
        seen_.labelled.insert(seen_.labelled.end(), b.pixel_labelled.begin(), b.pixel_labelled.end());
        const auto out = cdk::nn::forward_for_loss(*model_, b, step);
        const auto logit = (out.logits.select(1, 1) - out.logits.select(1, 0)).mean({1, 2});
        std::vector<float> y;
        for (int c : b.changed) y.push_back(float(c));
        const auto bce = torch::binary_cross_entropy_with_logits(logit, torch::tensor(y));
        return {bce, {{"bce", bce}}};
    }
    nlohmann::json describe() const override { return {{"method", "image-level"}}; }

private:
    cdk::nn::ChangeModel model_;
    Seen& seen_;
};

// A jointly trained pair: the saved model and a second network of its own, both updated by
// one optimiser, the second kept in the checkpoint.
class JointObjective : public cdk::nn::SupervisedObjective {
public:
    JointObjective(cdk::nn::ChangeModel m, cdk::nn::ChangeModel partner)
        : SupervisedObjective(std::move(m), {}), partner_(std::move(partner)) {}
    std::string name() const override { return "joint"; }
    std::vector<torch::Tensor> parameters() override {
        auto p = model_->parameters();
        for (const auto& q : partner_->parameters()) p.push_back(q);
        return p;
    }
    void train() override {
        model_->train();
        partner_->train();
    }
    cdk::nn::Loss loss(const cdk::nn::Batch& b, const cdk::nn::StepContext& step) override {
        const auto a = forward_for_loss(*model_, b, step);
        const auto p = forward_for_loss(*partner_, b, step);
        const auto task = task_loss(a, b);
        const auto agree = (torch::softmax(a.logits, 1) - torch::softmax(p.logits, 1)).pow(2).mean();
        const auto partner_task = cdk::nn::segmentation_loss(p.logits, b.label, {});
        return {task + agree + partner_task, {{"task", task}, {"agree", agree}, {"partner", partner_task}}};
    }
    void save_state(torch::serialize::OutputArchive& archive) override {
        torch::serialize::OutputArchive a;
        partner_->save(a);
        archive.write("partner", a);
    }
    void load_state(torch::serialize::InputArchive& archive, const std::string& path) override {
        torch::serialize::InputArchive a;
        if (!archive.try_read("partner", a)) throw cdk::ModelError("checkpoint " + path + " has no partner");
        partner_->load(a);
    }
    cdk::nn::ChangeModel partner_;
};

// The partner network, made without touching the generator the trainer seeded.
cdk::nn::ChangeModel make_partner() {
    auto gen = at::detail::getDefaultCPUGenerator();
    torch::Tensor state;
    {
        std::lock_guard<std::mutex> lock(gen.mutex());
        state = gen.get_state();
    }
    torch::manual_seed(99);
    cdk::nn::ModelOptions mo;
    mo.arch = "fc-siam-diff";
    mo.width = 4;
    mo.in_bands = 3;
    auto p = cdk::nn::create_model(mo);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
    return p;
}

ObjectiveFactory joint_factory() {
    return [](cdk::nn::ChangeModel m) { return std::make_unique<JointObjective>(m, make_partner()); };
}

}  // namespace

TEST_CASE("a method that needs only image-level labels trains on a manifest without label rasters",
          "[pipeline][train][objective]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0);
    const auto weak = image_level_manifest(tiles, tmp / "train/weak.csv");

    // The dataset yields those tiles: all-ignored pixel labels, the image-level label kept.
    const TileDataset ds(weak, cdk::nn::Normalization::standardised(3, "none"));
    const TileDataset full(tiles, cdk::nn::Normalization::standardised(3, "none"));
    std::mt19937_64 rng(1);
    for (size_t i = 0; i < ds.size(); ++i) {
        const Sample s = ds.get(i, std::nullopt, rng);
        CHECK_FALSE(s.pixel_labelled);
        CHECK(s.label.eq(255).all().item<bool>());
        CHECK(s.changed == (full.records()[i].car > 0 ? 1 : 0));
        CHECK(full.get(i, std::nullopt, rng).changed == s.changed);  // from CAR when labelled
    }

    // Supervised training refuses it, naming the first tile without a label.
    auto o = cdk::test::tiny_train_options(weak, "", tmp / "sup.cdm");
    o.epochs = 1;
    CHECK_THROWS_WITH(train_model(o), Catch::Contains("has no label") && Catch::Contains("weak.csv"));
    CHECK_FALSE(fs::exists(tmp / "sup.cdm"));

    // The image-level method trains on it and sees every tile's label.
    o.out = tmp / "weak.cdm";
    Seen seen;
    const auto summary =
        train_objective(o, [&](cdk::nn::ChangeModel m) { return std::make_unique<ImageLevelObjective>(m, seen); });
    CHECK(summary["complete"] == true);
    CHECK(summary["distillation"]["method"] == "image-level");
    CHECK(seen.changed.size() == ds.size());
    for (bool l : seen.labelled) CHECK_FALSE(l);
    int changed = 0;
    for (int c : seen.changed) changed += c;
    CHECK(changed > 0);
    CHECK(changed < int(ds.size()));
    // Its term is logged by name; the bundle records the method.
    std::ifstream log(tmp / "weak.cdm.log.jsonl");
    std::string line;
    std::getline(log, line);
    CHECK(nlohmann::json::parse(line)["terms"].contains("bce"));
    CHECK(cdk::nn::read_bundle_header(tmp / "weak.cdm")["distillation"]["method"] == "image-level");
    // A `changed` value that is not 0 or 1 is refused, naming the tile.
    {
        std::ofstream bad(tmp / "train/bad.csv");
        bad << "id,a,b,changed\nx,A/" << fs::path(full.records()[0].a).filename().string() << ",B/"
            << fs::path(full.records()[0].b).filename().string() << ",yes\n";
    }
    CHECK_THROWS_WITH(TileDataset(tmp / "train/bad.csv", cdk::nn::Normalization::standardised(3, "none")),
                      Catch::Contains("'x'") && Catch::Contains("'yes'"));
}

TEST_CASE("an objective's own state goes into the checkpoint: a resumed joint training equals an uninterrupted one",
          "[pipeline][train][objective]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0);  // 8 tiles
    auto o = cdk::test::tiny_train_options(tiles, "", tmp / "whole.cdm");
    o.epochs = 3;
    const auto whole = train_objective(o, joint_factory());
    CHECK(whole["complete"] == true);
    std::ifstream log(tmp / "whole.cdm.log.jsonl");
    std::string line;
    std::getline(log, line);
    const auto terms = nlohmann::json::parse(line)["terms"];
    CHECK(terms.contains("task"));
    CHECK(terms.contains("agree"));
    CHECK(terms.contains("partner"));

    // Stopped after the first epoch, then resumed.
    o.out = tmp / "resumed.cdm";
    o.max_steps = 2;  // 8 tiles in batches of 4: one epoch
    CHECK(train_objective(o, joint_factory())["complete"] == false);
    REQUIRE(fs::exists(tmp / "resumed.cdm.ckpt"));
    // Another method cannot continue it.
    o.max_steps = 0;
    o.resume = true;
    CHECK_THROWS_WITH(train_model(o), Catch::Contains("'joint'") && Catch::Contains("'supervised'"));
    CHECK(train_objective(o, joint_factory())["complete"] == true);
    CHECK(cdk::test::same_weights(tmp / "whole.cdm", tmp / "resumed.cdm"));
}
