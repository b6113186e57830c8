#include <catch2/catch.hpp>

#include "cdk/core/error.hpp"
#include "cdk/core/metrics.hpp"
#include "cdk/nn/losses.hpp"
#include "cdk/nn/models.hpp"

namespace F = torch::nn::functional;

namespace {

// Random targets: 0/1 with about 20 % ignored (255) pixels.
torch::Tensor random_target(int64_t n, int64_t h, int64_t w) {
    auto t = torch::randint(0, 2, {n, h, w}, torch::kLong);
    return torch::where(torch::rand({n, h, w}) < 0.2, torch::full_like(t, 255), t);
}

double value(const torch::Tensor& t) { return t.item<double>(); }

}  // namespace

TEST_CASE("cross-entropy equals torch's with ignore_index and class weights", "[nn][losses]") {
    torch::manual_seed(3);
    const auto logits = torch::randn({2, 2, 9, 7});
    const auto target = random_target(2, 9, 7);
    const auto ref = F::cross_entropy(logits, target, F::CrossEntropyFuncOptions().ignore_index(255));
    CHECK(value(cdk::nn::cross_entropy_loss(logits, target)) == Approx(value(ref)).epsilon(1e-5));
    const auto w = torch::tensor({0.3, 2.5}, torch::kFloat);
    const auto ref_w =
        F::cross_entropy(logits, target, F::CrossEntropyFuncOptions().ignore_index(255).weight(w));
    CHECK(value(cdk::nn::cross_entropy_loss(logits, target, {0.3, 2.5})) == Approx(value(ref_w)).epsilon(1e-5));
    CHECK_THROWS_AS(cdk::nn::cross_entropy_loss(logits, target, {1.0}), cdk::ConfigError);
    CHECK_THROWS_AS(cdk::nn::cross_entropy_loss(logits, target.slice(1, 0, 4)), cdk::ConfigError);
}

TEST_CASE("losses ignore 255 pixels: changing logits there changes nothing", "[nn][losses]") {
    torch::manual_seed(4);
    const auto logits = torch::randn({2, 2, 8, 8});
    const auto target = random_target(2, 8, 8);
    const auto ignored = (target == 255).unsqueeze(1).expand_as(logits);
    const auto other = torch::where(ignored, torch::randn_like(logits) * 50, logits);
    REQUIRE(!torch::equal(other, logits));
    cdk::nn::LossOptions o;
    o.ce_weight = 1;
    o.dice_weight = 1;
    o.class_weights = {1, 4};
    CHECK(value(cdk::nn::cross_entropy_loss(logits, target)) == value(cdk::nn::cross_entropy_loss(other, target)));
    CHECK(value(cdk::nn::dice_loss(logits, target)) == value(cdk::nn::dice_loss(other, target)));
    CHECK(value(cdk::nn::segmentation_loss(logits, target, o)) ==
          value(cdk::nn::segmentation_loss(other, target, o)));
    // ... whereas changing a valid pixel does change it.
    auto moved = logits.clone();
    const auto valid_at = (target != 255).nonzero()[0];
    moved.index_put_({valid_at[0], 1, valid_at[1], valid_at[2]}, 30.0);
    CHECK(value(cdk::nn::cross_entropy_loss(moved, target)) != value(cdk::nn::cross_entropy_loss(logits, target)));
    // all ignored: 0, not NaN
    const auto none = torch::full({2, 8, 8}, 255, torch::kLong);
    CHECK(value(cdk::nn::cross_entropy_loss(logits, none)) == 0.0);
}

TEST_CASE("class weights shift the cross-entropy towards the weighted class", "[nn][losses]") {
    // Two pixels: a no-change pixel predicted well, a change pixel predicted badly.
    auto logits = torch::zeros({1, 2, 1, 2});
    logits.index_put_({0, 0, 0, 0}, 3.0);   // pixel 0: confident no change (right)
    logits.index_put_({0, 0, 0, 1}, 3.0);   // pixel 1: confident no change (wrong)
    const auto target = torch::tensor({0, 1}, torch::kLong).view({1, 1, 2});
    const double plain = value(cdk::nn::cross_entropy_loss(logits, target));
    const double change_heavy = value(cdk::nn::cross_entropy_loss(logits, target, {1, 9}));
    const double only_no_change = value(cdk::nn::cross_entropy_loss(logits, target, {1, 0}));
    CHECK(change_heavy > plain);
    CHECK(only_no_change < plain);
    CHECK(only_no_change == Approx(std::log(1 + std::exp(-3.0))).epsilon(1e-5));
}

TEST_CASE("Dice: ~0 for a perfect prediction, ~1 for a wholly wrong one", "[nn][losses]") {
    const auto target = torch::tensor({0, 1, 1, 0, 255, 1}, torch::kLong).view({1, 2, 3});
    const auto change = (target == 1).to(torch::kFloat);
    auto perfect = torch::stack({(1 - change) * 20 - 10, change * 20 - 10}, 1);  // [1,2,2,3]
    CHECK(value(cdk::nn::dice_loss(perfect, target)) == Approx(0.0).margin(1e-3));
    auto wrong = -perfect;
    CHECK(value(cdk::nn::dice_loss(wrong, target)) > 0.7);  // 1 - 1/(3+1) with smoothing 1
    cdk::nn::LossOptions o;
    o.ce_weight = 0.5;
    o.dice_weight = 2;
    CHECK(value(cdk::nn::segmentation_loss(wrong, target, o)) ==
          Approx(0.5 * value(cdk::nn::cross_entropy_loss(wrong, target)) +
                 2 * value(cdk::nn::dice_loss(wrong, target))));
    o.ce_weight = 0;
    o.dice_weight = 0;
    CHECK_THROWS_AS(cdk::nn::segmentation_loss(wrong, target, o), cdk::ConfigError);
}

TEST_CASE("confusion_from_logits gives cd-eval's counts on the same masks", "[nn][losses]") {
    torch::manual_seed(8);
    const auto logits = torch::randn({3, 2, 11, 13});
    const auto target = random_target(3, 11, 13);
    const auto c = cdk::nn::confusion_from_logits(logits, target);
    // The masks cd-eval would read: argmax prediction, the target with 255 as nodata.
    const auto pred = logits.argmax(1).to(torch::kUInt8).contiguous();
    const auto ref = target.to(torch::kUInt8).contiguous();
    const auto e = cdk::confusion_from_masks(pred.data_ptr<uint8_t>(), ref.data_ptr<uint8_t>(), size_t(pred.numel()));
    CHECK(c == e);
    CHECK(c.excluded == (target == 255).sum().item<int64_t>());
    CHECK(c.valid() + c.excluded == pred.numel());
    // Hand-computed counts as a second check.
    const auto valid = target != 255;
    const auto p1 = pred.to(torch::kLong) == 1, t1 = target == 1;
    CHECK(c.tp == (p1 & t1 & valid).sum().item<int64_t>());
    CHECK(c.fp == (p1 & ~t1 & valid).sum().item<int64_t>());
    CHECK(c.fn == (~p1 & t1 & valid).sum().item<int64_t>());
    const auto m = cdk::compute_metrics(c);
    CHECK(m.change.f1 >= 0);
    CHECK(m.change.f1 <= 1);
}

TEST_CASE("a tiny model learns a trivially learnable change in under 100 steps", "[nn][losses][learning]") {
    torch::manual_seed(0);
    // Synthetic pairs: noise; the post date gets a bright square at a random place = change.
    auto make_batch = [](int64_t n) {
        const int64_t s = 24;
        auto pre = torch::randn({n, 3, s, s}) * 0.3;
        auto post = pre + torch::randn({n, 3, s, s}) * 0.1;
        auto target = torch::zeros({n, s, s}, torch::kLong);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t y = torch::randint(0, s - 8, {1}).item<int64_t>();
            const int64_t x = torch::randint(0, s - 8, {1}).item<int64_t>();
            post.index({i, torch::indexing::Slice(), torch::indexing::Slice(y, y + 8),
                        torch::indexing::Slice(x, x + 8)}) += 1.5;
            target.index({i, torch::indexing::Slice(y, y + 8), torch::indexing::Slice(x, x + 8)}).fill_(1);
        }
        target.index({0, 0}).fill_(255);  // a nodata row, ignored throughout
        return std::make_tuple(pre, post, target);
    };
    cdk::nn::ModelOptions o;
    o.arch = "fc-siam-diff";
    o.in_bands = 3;
    o.width = 8;
    auto model = cdk::nn::create_model(o);
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-2));
    cdk::nn::LossOptions lo;
    lo.dice_weight = 1.0;
    const auto [pre, post, target] = make_batch(8);
    model->train();
    double first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
        opt.zero_grad();
        const auto loss = cdk::nn::segmentation_loss(model->forward(pre, post).logits, target, lo);
        loss.backward();
        opt.step();
        if (step == 0) first = loss.item<double>();
        last = loss.item<double>();
    }
    INFO("loss " << first << " -> " << last);
    CHECK(last < 0.5 * first);
    // Held-out pairs, eval mode.
    const auto [vpre, vpost, vtarget] = make_batch(4);
    model->eval();
    torch::NoGradGuard no_grad;
    const auto c = cdk::nn::confusion_from_logits(model->forward(vpre, vpost).logits, vtarget);
    const auto m = cdk::compute_metrics(c);
    INFO("held-out F1 " << m.change.f1);
    CHECK(m.change.f1 > 0.9);
}

TEST_CASE("confusion at thresholds counts 'probability >= t' over valid pixels", "[nn][losses][threshold]") {
    torch::manual_seed(6);
    const auto logits = torch::randn({2, 2, 11, 13}) * 3;
    const auto target = random_target(2, 11, 13);
    const std::vector<double> grid = {0.1, 0.3, 0.5, 0.7, 0.9};
    const auto at = cdk::nn::confusion_at_thresholds(logits, target, grid);
    REQUIRE(at.size() == grid.size());
    // Reference: threshold the probability into a mask and count with cd-eval's code.
    const auto p = torch::softmax(logits, 1).select(1, 1);
    const auto ref = torch::where(target == 255, torch::full_like(target, 255), target).to(torch::kUInt8).contiguous();
    for (size_t i = 0; i < grid.size(); ++i) {
        INFO("threshold " << grid[i]);
        const auto pred = p.ge(grid[i]).to(torch::kUInt8).contiguous();
        const auto want = cdk::confusion_from_masks(pred.data_ptr<uint8_t>(), ref.data_ptr<uint8_t>(), size_t(pred.numel()));
        CHECK(at[i] == want);
        CHECK(at[i].excluded == (target == 255).sum().item<int64_t>());
    }
    // At 0.5 it is argmax's confusion (no exact ties in random logits).
    CHECK(at[2] == cdk::nn::confusion_from_logits(logits, target));
    // Raising the threshold never adds predicted change.
    for (size_t i = 1; i < at.size(); ++i) CHECK(at[i].tp + at[i].fp <= at[i - 1].tp + at[i - 1].fp);
    CHECK_THROWS(cdk::nn::confusion_at_thresholds(logits, target, {0.7, 0.3}));
}
