// The method-neutral pieces of lib/nn: batches, the typed bundle header, grouped runs,
// training objectives and window predictors.
#include <catch2/catch.hpp>

#include "cdk/core/error.hpp"
#include "cdk/nn/batch.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/objective.hpp"
#include "cdk/nn/predictor.hpp"

using namespace cdk::nn;

namespace {

Batch random_batch(int64_t n, int64_t size = 16) {
    Batch b;
    b.pre = torch::randn({n, 3, size, size});
    b.post = torch::randn({n, 3, size, size});
    b.label = torch::randint(0, 2, {n, size, size}, torch::kInt64);
    for (int64_t i = 0; i < n; ++i) {
        b.car.push_back(0.1 * double(i));
        b.ids.push_back("t" + std::to_string(i));
        b.changed.push_back(int(i % 2));
        b.pixel_labelled.push_back(true);
    }
    return b;
}

ChangeModel tiny_model(uint64_t seed) {
    torch::manual_seed(seed);
    ModelOptions mo;
    mo.arch = "fc-siam-diff";
    mo.width = 4;
    auto m = create_model(mo);
    m->eval();
    return m;
}

// A predictor that returns a constant probability (and counts its calls).
class ConstPredictor : public WindowPredictor {
public:
    explicit ConstPredictor(float value) : value_(value) {}
    torch::Tensor predict(const torch::Tensor& pre, const torch::Tensor&, const torch::Tensor&) override {
        ++calls;
        return torch::full({pre.size(0), pre.size(2), pre.size(3)}, value_);
    }
    bool local() const override { return true; }
    int calls = 0;

private:
    float value_;
};

// A predictor whose probability is the first band of date 2 (to see flips undone).
class BandPredictor : public WindowPredictor {
public:
    torch::Tensor predict(const torch::Tensor&, const torch::Tensor& post, const torch::Tensor&) override {
        return post.select(1, 0).contiguous();
    }
    bool local() const override { return true; }
};

}  // namespace

TEST_CASE("a batch moves to a device with every tensor and every list", "[nn][objective]") {
    const Batch b = random_batch(3);
    const Batch moved = b.to(torch::kCPU, true);
    CHECK(moved.pre.is_contiguous(torch::MemoryFormat::ChannelsLast));
    CHECK(moved.post.is_contiguous(torch::MemoryFormat::ChannelsLast));
    CHECK(moved.pre.equal(b.pre));
    CHECK(moved.label.equal(b.label));
    CHECK(moved.car == b.car);
    CHECK(moved.ids == b.ids);
    CHECK(moved.changed == b.changed);
    CHECK(moved.pixel_labelled == b.pixel_labelled);
    CHECK(moved.size() == 3);
    // An image-level-only batch has no pixel labels to move.
    Batch weak = b;
    weak.label = torch::Tensor();
    CHECK_FALSE(weak.to(torch::kCPU).label.defined());
}

TEST_CASE("the bundle header is parsed and checked in one place", "[nn][bundle]") {
    const nlohmann::json j = {
        {"format", "cdkit-model/1"},
        {"model", {{"arch", "fc-ef"}, {"in_bands", 4}, {"width", 8}, {"extra", nlohmann::json::object()}}},
        {"bands", {"B1", "B2", "B3", "B4"}},
        {"data_type", "UInt16"},
        {"nodata", 0},
        {"normalization", {{"mean", {1, 2, 3, 4}}, {"std", {1, 1, 1, 1}}, {"scene", "image"}}},
        {"tile_size", 96},
        {"overlap", 32},
        {"training", {{"complete", false}, {"train", {{"partition", {{"thresholds", {0.05, 0.2}}}}}}}},
        {"metrics", {{"best_threshold", {{"threshold", 0.35}}}}},
        {"distillation", {{"method", "mtkd"}}},
        {"future_key", {{"kept", true}}},
    };
    const BundleHeader h = BundleHeader::parse(j, "m.cdm");
    CHECK(h.model.arch == "fc-ef");
    CHECK(h.band_count() == 4);
    CHECK(h.data_type == "UInt16");
    CHECK(h.nodata == 0.0);
    REQUIRE(h.normalization);
    CHECK(h.normalization->mean == std::vector<float>{1, 2, 3, 4});
    CHECK(h.scene_norm() == "image");
    CHECK(h.tile_size == 96);
    CHECK(h.overlap == 32);
    CHECK(h.best_threshold() == Approx(0.35));
    CHECK(h.partition_thresholds() == std::vector<double>{0.05, 0.2});
    CHECK_FALSE(h.training_complete());
    // Written back: the same entries, unknown ones kept.
    nlohmann::json back = h.to_json();
    back["format"] = "cdkit-model/1";
    CHECK(back == j);

    // A header without records: defaults, and nothing invented.
    const BundleHeader bare = BundleHeader::parse({{"model", {{"arch", "fc-ef"}, {"in_bands", 3}, {"width", 8}}}}, "b.cdm");
    CHECK(bare.band_count() == 3);
    CHECK(bare.scene_norm() == "none");
    CHECK_FALSE(bare.best_threshold());
    CHECK(bare.partition_thresholds().empty());
    CHECK(bare.training_complete());

    // Ill-typed entries are refused, naming the file and the entry.
    auto bad = [&](const char* key, const nlohmann::json& value) {
        nlohmann::json k = j;
        k[key] = value;
        return k;
    };
    CHECK_THROWS_WITH(BundleHeader::parse(bad("tile_size", "256"), "m.cdm"),
                      Catch::Contains("'m.cdm'") && Catch::Contains("'tile_size'"));
    CHECK_THROWS_WITH(BundleHeader::parse(bad("bands", 3), "m.cdm"), Catch::Contains("'bands'"));
    CHECK_THROWS_WITH(BundleHeader::parse(bad("normalization", {{"mean", {1}}}), "m.cdm"),
                      Catch::Contains("'normalization'"));
    CHECK_THROWS_WITH(BundleHeader::parse(bad("metrics", 0.5), "m.cdm"), Catch::Contains("'metrics'"));
    nlohmann::json no_model = j;
    no_model.erase("model");
    CHECK_THROWS_AS(BundleHeader::parse(no_model, "m.cdm"), cdk::ModelError);
}

TEST_CASE("grouped runs put every sample's result back in its place", "[nn][objective]") {
    const auto x = torch::arange(6, torch::kFloat32).view({6, 1});
    torch::Tensor out;
    const std::vector<int> group{2, 0, 2, 1, 0, 2};
    const auto counts = run_grouped(group, 4, torch::kCPU,
                                    [&](size_t g, const torch::Tensor& index) {
                                        return x.index_select(0, index) * 10 + double(g);
                                    },
                                    out);
    CHECK(counts == std::vector<int64_t>{2, 1, 3, 0});
    REQUIRE(out.sizes() == x.sizes());
    for (int64_t i = 0; i < 6; ++i) CHECK(out[i][0].item<float>() == float(i * 10 + group[size_t(i)]));
}

TEST_CASE("objectives name their loss terms and what they save", "[nn][objective]") {
    const Batch b = random_batch(4);
    LossOptions lo;
    lo.class_weights = {1, 3};
    SupervisedObjective sup(tiny_model(1), lo);  // evaluation mode: no dropout, so the loss can be recomputed
    const Loss l = sup.loss(b, {});
    REQUIRE(l.terms.size() == 1);
    CHECK(l.terms[0].first == "task");
    CHECK(l.total.item<double>() == Approx(segmentation_loss(sup.model().forward(b.pre, b.post).logits, b.label, lo)
                                               .item<double>())
                                        .epsilon(1e-5));
    CHECK(sup.describe().is_null());
    CHECK(sup.needs_pixel_labels());
    CHECK(sup.parameters().size() == sup.model().parameters().size());

    // The extra hook is a named term of its own.
    SupervisedObjective with_extra(tiny_model(1), lo, [](const Batch&, const ChangeOutput& out) {
        return out.logits.mean() * 0.0 + 2.0;
    });
    const Loss le = with_extra.loss(b, {});
    REQUIRE(le.terms.size() == 2);
    CHECK(le.terms[1].first == "extra");
    CHECK(le.total.item<double>() == Approx(le.terms[0].second.item<double>() + 2.0));

    // MTKD: task + kd, both named; the record is the header's, the summary adds routing.
    TeacherSet ts;
    ts.names = {"small", "large"};
    ts.paths = {"s.cdm", "l.cdm"};
    ts.thresholds = {0.15};
    for (uint64_t seed : {2, 3}) {
        Bundle t;
        t.model = tiny_model(seed);
        for (auto& p : t.model->parameters()) p.set_requires_grad(false);
        ts.bundles.push_back(t);
    }
    KdOptions kd;
    kd.weight = 1.0;
    MtkdObjective mtkd(tiny_model(1), lo, MtkdTerm(ts, kd), {{"method", "mtkd"}});
    mtkd.train();
    const Loss lm = mtkd.loss(b, {});
    REQUIRE(lm.terms.size() == 2);
    CHECK(lm.terms[0].first == "task");
    CHECK(lm.terms[1].first == "kd");
    CHECK(lm.terms[1].second.item<double>() > 0);
    CHECK(lm.total.item<double>() == Approx(lm.terms[0].second.item<double>() + lm.terms[1].second.item<double>()));
    CHECK(mtkd.describe() == nlohmann::json{{"method", "mtkd"}});
    // CARs 0, 0.1, 0.2, 0.3 against threshold 0.15: two samples each.
    CHECK(mtkd.summary()["samples_routed"] == nlohmann::json{{"small", 2}, {"large", 2}});
    lm.total.backward();
    for (const auto& t : mtkd.term().teachers().bundles)
        for (const auto& p : t.model->parameters()) CHECK_FALSE(p.grad().defined());
}

TEST_CASE("window predictors: one model, flip TTA, Origin-Partition", "[nn][predictor]") {
    const Batch b = random_batch(3);
    const auto valid = torch::ones({3, 16, 16}, torch::kBool);
    auto model = tiny_model(4);
    ModelPredictor one(model, torch::kCPU, false);
    const auto p = one.predict(b.pre, b.post, valid);
    CHECK(p.sizes() == torch::IntArrayRef({3, 16, 16}));
    CHECK(p.is_contiguous());
    CHECK(p.min().item<float>() >= 0);
    CHECK(p.max().item<float>() <= 1);
    {
        torch::NoGradGuard ng;
        CHECK(torch::allclose(p, torch::softmax(model->forward(b.pre, b.post).logits, 1).select(1, 1)));
    }
    CHECK(one.local() == model->local());
    CHECK(one.memory_factor() == 1.0);

    // Flips are undone: a predictor that returns its input's band 0 is unchanged by TTA.
    FlipTtaPredictor tta(std::make_unique<BandPredictor>());
    CHECK(torch::allclose(tta.predict(b.pre, b.post, valid), b.post.select(1, 0), 1e-6, 1e-6));

    // Origin-Partition: the origin's CAR picks the teacher, window by window.
    TeacherSet ts;
    ts.names = {"small", "large"};
    ts.thresholds = {0.5};
    auto origin_p = torch::zeros({3, 16, 16});
    origin_p[1].fill_(0.9);  // window 1: every pixel changed (CAR 1) -> large
    class Fixed : public WindowPredictor {
    public:
        explicit Fixed(torch::Tensor p) : p_(std::move(p)) {}
        torch::Tensor predict(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) override { return p_.clone(); }
        bool local() const override { return true; }

    private:
        torch::Tensor p_;
    };
    std::vector<std::unique_ptr<WindowPredictor>> teachers;
    teachers.push_back(std::make_unique<ConstPredictor>(0.25f));
    teachers.push_back(std::make_unique<ConstPredictor>(0.75f));
    OriginPartitionPredictor op(std::make_unique<Fixed>(origin_p), std::move(teachers), ts, 0.5);
    CHECK_FALSE(op.local());
    op.begin_scene();
    const auto q = op.predict(b.pre, b.post, valid);
    CHECK(q[0].eq(0.25f).all().item<bool>());
    CHECK(q[1].eq(0.75f).all().item<bool>());
    CHECK(q[2].eq(0.25f).all().item<bool>());
    CHECK(op.summary()["windows"] == nlohmann::json{{"small", 2}, {"large", 1}});
    op.begin_scene();
    CHECK(op.summary()["windows"] == nlohmann::json{{"small", 0}, {"large", 0}});
}
