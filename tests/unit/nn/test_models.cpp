#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cdk/core/error.hpp"
#include "cdk/nn/models.hpp"
#include "layers.hpp"

using cdk::nn::ModelOptions;

namespace {

ModelOptions opts(const std::string& arch, int bands, int width) {
    ModelOptions o;
    o.arch = arch;
    o.in_bands = bands;
    o.width = width;
    return o;
}

// The smallest width each family is tested at (shape tests, not accuracy).
int small_width(const std::string& arch) { return arch.rfind("fc-", 0) == 0 ? 4 : 8; }

}  // namespace

TEST_CASE("the registry lists the models, sorted, and rejects unknown names", "[nn][models]") {
    const auto names = cdk::nn::model_names();
    for (const char* n : {"fc-ef", "fc-siam-conc", "fc-siam-diff", "resnet-fpn", "bit"})
        CHECK(std::find(names.begin(), names.end(), n) != names.end());
    CHECK(std::is_sorted(names.begin(), names.end()));
    CHECK_THROWS_AS(cdk::nn::create_model(opts("unet-9000", 3, 16)), cdk::ConfigError);
    CHECK_THROWS_WITH(cdk::nn::create_model(opts("unet-9000", 3, 16)),
                      Catch::Contains("'unet-9000'") && Catch::Contains("fc-siam-diff"));
    CHECK_THROWS_AS(cdk::nn::create_model(opts("fc-ef", 0, 16)), cdk::ConfigError);
    CHECK_THROWS_AS(cdk::nn::create_model(opts("fc-ef", 3, 0)), cdk::ConfigError);
}

TEST_CASE("every model gives [N,2,H,W] logits and features for odd sizes and band counts",
          "[nn][models]") {
    torch::manual_seed(1);
    for (const auto& arch : cdk::nn::model_names()) {
        for (int bands : {3, 13}) {
            INFO(arch << " with " << bands << " bands");
            auto model = cdk::nn::create_model(opts(arch, bands, small_width(arch)));
            model->eval();
            torch::NoGradGuard no_grad;
            const auto pre = torch::randn({2, bands, 37, 45});
            const auto post = torch::randn({2, bands, 37, 45});
            const auto out = model->forward(pre, post);
            CHECK(out.logits.sizes() == torch::IntArrayRef({2, 2, 37, 45}));
            CHECK(torch::isfinite(out.logits).all().item<bool>());
            REQUIRE(!out.features_fused.empty());
            for (const auto& f : out.features_fused) {
                CHECK(f.dim() == 4);
                CHECK(f.size(0) == 2);
            }
            if (arch == "fc-ef") {
                CHECK(out.features_pre.empty());
                CHECK(out.features_post.empty());
            } else {
                CHECK(out.features_pre.size() == out.features_post.size());
                CHECK(!out.features_pre.empty());
                for (size_t i = 0; i < out.features_pre.size(); ++i)
                    CHECK(out.features_pre[i].sizes() == out.features_post[i].sizes());
            }
            CHECK(model->options().arch == arch);
        }
    }
}

TEST_CASE("local models leave logits far from an input change as they were, and BIT does not",
          "[nn][models]") {
    torch::manual_seed(2);
    for (const auto& arch : cdk::nn::model_names()) {
        INFO(arch);
        auto model = cdk::nn::create_model(opts(arch, 3, small_width(arch)));
        model->eval();
        torch::NoGradGuard no_grad;
        const auto pre = torch::randn({1, 3, 16, 640});
        const auto post = torch::randn({1, 3, 16, 640});
        auto changed = post.clone();
        changed.narrow(3, 0, 16).add_(3.0);  // the first 16 columns
        const auto far = [&](const torch::Tensor& p) { return model->forward(pre, p).logits.narrow(3, 480, 160); };
        const double moved = (far(post) - far(changed)).abs().max().item<double>();
        INFO("largest change of a logit 464+ pixels away: " << moved);
        CHECK((moved == 0) == model->local());
    }
}

TEST_CASE("FC models have about 1.35 M parameters at the published width", "[nn][models]") {
    for (const char* arch : {"fc-ef", "fc-siam-diff"}) {
        auto model = cdk::nn::create_model(opts(arch, 3, 16));
        const auto n = cdk::nn::parameter_count(*model);
        INFO(arch << ": " << n << " parameters");
        CHECK(n > 1.35e6 * 0.9);
        CHECK(n < 1.35e6 * 1.1);
    }
    // Siam-conc has wider decoder inputs (concatenated skips) hence more parameters.
    auto conc = cdk::nn::create_model(opts("fc-siam-conc", 3, 16));
    auto diff = cdk::nn::create_model(opts("fc-siam-diff", 3, 16));
    CHECK(cdk::nn::parameter_count(*conc) > cdk::nn::parameter_count(*diff));
}

TEST_CASE("wider models of a family have more parameters and FLOPs", "[nn][models]") {
    for (const char* arch : {"resnet-fpn", "bit"}) {
        INFO(arch);
        auto small = cdk::nn::create_model(opts(arch, 3, 8));
        auto big = cdk::nn::create_model(opts(arch, 3, 32));
        CHECK(cdk::nn::parameter_count(*big) > 4 * cdk::nn::parameter_count(*small));
        CHECK(cdk::nn::estimate_flops(opts(arch, 3, 32), 64, 64) >
              4 * cdk::nn::estimate_flops(opts(arch, 3, 8), 64, 64));
    }
}

TEST_CASE("estimate_flops counts convolutions analytically", "[nn][models]") {
    const auto f64 = cdk::nn::estimate_flops(opts("fc-siam-diff", 3, 16), 64, 64);
    const auto f128 = cdk::nn::estimate_flops(opts("fc-siam-diff", 3, 16), 128, 128);
    CHECK(f64 > 0);
    CHECK(f128 == 4 * f64);  // all-convolutional: FLOPs scale with the pixel count
    // First conv of FC-EF alone: 64*64 outputs x 16 channels x (6 x 3 x 3) MACs x 2.
    CHECK(cdk::nn::estimate_flops(opts("fc-ef", 3, 16), 64, 64) > int64_t(2) * 64 * 64 * 16 * 54);
}

TEST_CASE("the same seed gives the same initial weights", "[nn][models]") {
    auto weights = [](uint64_t seed) {
        torch::manual_seed(seed);
        auto m = cdk::nn::create_model(opts("fc-siam-diff", 3, 4));
        std::vector<torch::Tensor> ps;
        for (const auto& p : m->parameters()) ps.push_back(p.detach().clone());
        return ps;
    };
    const auto a = weights(42), b = weights(42), c = weights(43);
    REQUIRE(a.size() == b.size());
    bool all_same = true, any_diff = false;
    for (size_t i = 0; i < a.size(); ++i) {
        all_same = all_same && torch::equal(a[i], b[i]);
        any_diff = any_diff || !torch::equal(a[i], c[i]);
    }
    CHECK(all_same);
    CHECK(any_diff);
}

TEST_CASE("model options round-trip through JSON and reject bad JSON", "[nn][models]") {
    auto o = opts("bit", 13, 24);
    o.extra = {{"tokens", 4}, {"layers", 1}};
    const auto back = cdk::nn::model_options_from_json(cdk::nn::to_json(o));
    CHECK(back.arch == "bit");
    CHECK(back.in_bands == 13);
    CHECK(back.width == 24);
    CHECK(back.extra == o.extra);
    CHECK_THROWS_AS(cdk::nn::model_options_from_json({{"arch", "fc-ef"}}), cdk::ModelError);
    CHECK_THROWS_WITH(cdk::nn::model_options_from_json({{"arch", "fc-ef"}, {"in_bands", "3"}, {"width", 16}}),
                      Catch::Contains("in_bands"));
    CHECK_THROWS_AS(cdk::nn::model_options_from_json(nlohmann::json::array()), cdk::ModelError);
}

TEST_CASE("a model rejects inputs with the wrong band count or shape", "[nn][models]") {
    auto model = cdk::nn::create_model(opts("fc-siam-diff", 4, 4));
    torch::NoGradGuard no_grad;
    CHECK_THROWS_AS(model->forward(torch::zeros({1, 3, 16, 16}), torch::zeros({1, 3, 16, 16})),
                    cdk::ModelError);
    CHECK_THROWS_WITH(model->forward(torch::zeros({1, 3, 16, 16}), torch::zeros({1, 3, 16, 16})),
                      Catch::Contains("expects 4 bands"));
    CHECK_THROWS_AS(model->forward(torch::zeros({1, 4, 16, 16}), torch::zeros({1, 4, 16, 17})),
                    cdk::ModelError);
}

TEST_CASE("bad family options are rejected", "[nn][models]") {
    auto o = opts("bit", 3, 8);
    o.extra = {{"tokens", "many"}};
    CHECK_THROWS_WITH(cdk::nn::create_model(o), Catch::Contains("'tokens'"));
    auto r = opts("resnet-fpn", 3, 8);
    r.extra = {{"fusion", "product"}};
    CHECK_THROWS_AS(cdk::nn::create_model(r), cdk::ConfigError);
    auto typo = opts("bit", 3, 8);
    typo.extra = {{"token", 4}};
    CHECK_THROWS_WITH(cdk::nn::create_model(typo), Catch::Contains("'token'") && Catch::Contains("tokens"));
    auto fc = opts("fc-ef", 3, 8);
    fc.extra = {{"depth", 5}};
    CHECK_THROWS_WITH(cdk::nn::create_model(fc), Catch::Contains("'depth'"));
    auto heads = opts("bit", 3, 8);
    heads.extra = {{"heads", 3}};
    CHECK_THROWS_WITH(cdk::nn::create_model(heads), Catch::Contains("multiple of 3 heads"));
    // Family options change the model.
    auto deep = opts("resnet-fpn", 3, 8);
    deep.extra = {{"blocks", 3}, {"fusion", "concat"}};
    CHECK(cdk::nn::parameter_count(*cdk::nn::create_model(deep)) >
          cdk::nn::parameter_count(*cdk::nn::create_model(opts("resnet-fpn", 3, 8))));
}

TEST_CASE("shared_dropout makes the Siamese FC encoders drop the same channels on both dates", "[nn][models]") {
    // Identical dates in training mode: with independent Dropout2d masks (as published)
    // |f1 - f2| is non-zero wherever one date's mask dropped a channel and the other's did
    // not; with shared masks it is exactly zero. Both layouts: channels-last takes the fused
    // batch norm + ReLU + dropout path.
    for (const auto layout : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
        for (const bool shared : {false, true}) {
            torch::manual_seed(3);
            auto o = opts("fc-siam-diff", 3, 16);
            if (shared) o.extra = {{"shared_dropout", true}};
            auto m = cdk::nn::create_model(o);
            m->train();
            const auto x = torch::randn({2, 3, 32, 32}).contiguous(layout);
            const auto out = m->forward(x, x.clone());
            double diff = 0;
            for (const auto& f : out.features_fused) diff += f.abs().sum().item<double>();
            INFO("shared " << shared << ", channels-last " << (layout == torch::MemoryFormat::ChannelsLast));
            if (shared)
                CHECK(diff == 0.0);
            else
                CHECK(diff > 0.0);
        }
    }
    auto conc = opts("fc-siam-conc", 3, 4);
    conc.extra = {{"shared_dropout", true}};
    CHECK_NOTHROW(cdk::nn::create_model(conc));
    auto ef = opts("fc-ef", 3, 4);  // one encoder: nothing to share
    ef.extra = {{"shared_dropout", true}};
    CHECK_THROWS_WITH(cdk::nn::create_model(ef), Catch::Contains("'shared_dropout'"));
    auto bad = opts("fc-siam-diff", 3, 4);
    bad.extra = {{"shared_dropout", "yes"}};
    CHECK_THROWS_WITH(cdk::nn::create_model(bad), Catch::Contains("true or false"));
}

TEST_CASE("the FC models' dropout option sets the Dropout2d probability of every conv block", "[nn][models]") {
    // Training mode, the same input twice: with dropout the two passes draw different masks
    // and differ; with dropout 0 they are identical. Both layouts (channels-last takes the
    // fused batch norm + ReLU + dropout path).
    for (const auto layout : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
        for (const std::string arch : {"fc-ef", "fc-siam-diff"}) {
            for (const double p : {0.0, 0.2, 0.5}) {
                torch::manual_seed(5);
                auto o = opts(arch, 3, 8);
                if (p != 0.2) o.extra = {{"dropout", p}};  // 0.2: the default
                auto m = cdk::nn::create_model(o);
                m->train();
                const auto x = torch::randn({2, 3, 32, 32}).contiguous(layout);
                const auto y = torch::randn({2, 3, 32, 32}).contiguous(layout);
                const auto a = m->forward(x, y).logits;
                const auto b = m->forward(x, y).logits;
                INFO(arch << ", dropout " << p << ", channels-last " << (layout == torch::MemoryFormat::ChannelsLast));
                if (p == 0.0)
                    CHECK(torch::equal(a, b));
                else
                    CHECK_FALSE(torch::allclose(a, b));
            }
        }
    }
    // The options travel: the probability is visible on the layers.
    auto o = opts("fc-ef", 3, 4);
    o.extra = {{"dropout", 0.35}};
    auto m = cdk::nn::create_model(o);
    int dropouts = 0;
    for (const auto& mod : m->modules(false))
        if (auto d = std::dynamic_pointer_cast<torch::nn::Dropout2dImpl>(mod)) {
            CHECK(d->options.p() == Approx(0.35));
            ++dropouts;
        }
    CHECK(dropouts == 19);  // 10 encoder + 9 decoder blocks
    for (const auto& bad : {nlohmann::json(-0.1), nlohmann::json(1.0), nlohmann::json("0.1")}) {
        auto b = opts("fc-siam-conc", 3, 4);
        b.extra = {{"dropout", bad}};
        CHECK_THROWS_WITH(cdk::nn::create_model(b), Catch::Contains("'dropout'") && Catch::Contains("[0, 1)"));
    }
}

// Prints the table of docs/models.md (run: cdk_nn_tests "[model-table]").
TEST_CASE("model table for docs/models.md", "[.][model-table]") {
    struct Row {
        std::string arch;
        int width;
    };
    const std::vector<Row> rows = {{"fc-ef", 16},      {"fc-ef", 32},      {"fc-siam-conc", 16},
                                   {"fc-siam-conc", 32}, {"fc-siam-diff", 16}, {"fc-siam-diff", 32},
                                   {"resnet-fpn", 16}, {"resnet-fpn", 8},  {"resnet-fpn", 32},
                                   {"bit", 16},        {"bit", 8},         {"bit", 32}};
    std::cout << "| model | width | parameters (3 bands) | parameters (13 bands) | GFLOPs per 256x256 pair (3 bands) |\n";
    std::cout << "|---|---:|---:|---:|---:|\n";
    for (const auto& r : rows) {
        auto m3 = cdk::nn::create_model(opts(r.arch, 3, r.width));
        auto m13 = cdk::nn::create_model(opts(r.arch, 13, r.width));
        const double g = double(cdk::nn::estimate_flops(opts(r.arch, 3, r.width), 256, 256)) / 1e9;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.2f", g);
        std::cout << "| `" << r.arch << "` | " << r.width << " | " << cdk::nn::parameter_count(*m3) << " | "
                  << cdk::nn::parameter_count(*m13) << " | " << buf << " |\n";
    }
    CHECK(true);
}

TEST_CASE("the inference form (folded batch norm, sub-pixel upsampling) computes the same logits",
          "[nn][models][fold]") {
    torch::manual_seed(3);
    for (const auto& arch : cdk::nn::model_names()) {
        for (bool nhwc : {false, true}) {
            INFO(arch << (nhwc ? ", channels-last" : ", contiguous"));
            auto model = cdk::nn::create_model(opts(arch, 4, small_width(arch)));
            {
                // Batch norms with statistics and affines far from the identity, so that a
                // wrong fold shows; transposed-convolution biases likewise.
                torch::NoGradGuard no_grad;
                for (const auto& item : model->named_buffers()) {
                    if (item.key().find("running_mean") != std::string::npos) item.value().uniform_(-1, 1);
                    if (item.key().find("running_var") != std::string::npos) item.value().uniform_(0.3, 3);
                }
                for (auto& p : model->parameters())
                    if (p.dim() == 1) p.uniform_(-0.5, 1.5);
            }
            if (nhwc) cdk::nn::to_channels_last(*model);
            model->eval();
            torch::NoGradGuard no_grad;
            auto pre = torch::randn({2, 4, 37, 45}), post = torch::randn({2, 4, 37, 45});
            if (nhwc) {
                pre = pre.contiguous(torch::MemoryFormat::ChannelsLast);
                post = post.contiguous(torch::MemoryFormat::ChannelsLast);
            }
            const auto plain = model->forward(pre, post).logits.clone();
            cdk::nn::prepare_for_inference(*model);
            const auto folded = model->forward(pre, post).logits;
            REQUIRE(folded.sizes() == plain.sizes());
            const double scale = plain.abs().max().item<double>();
            CHECK(scale > 1e-3);
            CHECK((folded - plain).abs().max().item<double>() <= 1e-4 * std::max(1.0, scale));
            // Training drops the inference form: weights and statistics changed in train mode
            // are what evaluation then computes, not a stale fold (checked against a fresh one).
            model->train();
            for (auto& p : model->parameters()) p.add_(0.05 * torch::randn_like(p));
            for (const auto& item : model->named_buffers())
                if (item.key().find("running_mean") != std::string::npos) item.value().add_(0.3);
            model->eval();
            const auto after = model->forward(pre, post).logits.clone();
            CHECK((after - plain).abs().max().item<double>() > 1e-3);
            cdk::nn::prepare_for_inference(*model);
            const auto refolded = model->forward(pre, post).logits;
            const double scale2 = std::max(1.0, after.abs().max().item<double>());
            CHECK((refolded - after).abs().max().item<double>() <= 1e-4 * scale2);
        }
    }
}

TEST_CASE("a sub-pixel convolution reproduces a stride-2 transposed convolution", "[nn][models][fold]") {
    torch::manual_seed(4);
    auto up = torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(5, 7, 3).stride(2).padding(1).output_padding(1));
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, 5, 9, 6});
    const auto ref = up->forward(x);
    const auto [kernel, bias] = cdk::nn::detail::subpixel_from_transposed(up->weight, up->bias);
    const auto y = cdk::nn::detail::subpixel_up(x, kernel, bias);
    REQUIRE(y.sizes() == ref.sizes());
    CHECK((y - ref).abs().max().item<double>() < 1e-5);
}

TEST_CASE("the sub-pixel form passes the transposed convolution's gradients to its weights", "[nn][models]") {
    torch::manual_seed(5);
    auto up = torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(5, 7, 3).stride(2).padding(1).output_padding(1));
    const auto x = torch::randn({2, 5, 9, 6}, torch::requires_grad());
    const auto target = torch::randn({2, 7, 18, 12});
    auto grads = [&](bool subpixel) {
        up->zero_grad();
        if (x.grad().defined()) x.grad().zero_();
        torch::Tensor y;
        if (subpixel) {
            const auto [kernel, bias] = cdk::nn::detail::subpixel_from_transposed(up->weight, up->bias);
            y = cdk::nn::detail::subpixel_up(x, kernel, bias);
        } else {
            y = up->forward(x);
        }
        (y * target).sum().backward();
        return std::vector<torch::Tensor>{up->weight.grad().clone(), up->bias.grad().clone(), x.grad().clone()};
    };
    const auto ref = grads(false), got = grads(true);
    for (size_t i = 0; i < ref.size(); ++i) {
        INFO("gradient " << i << " (weight, bias, input)");
        REQUIRE(got[i].sizes() == ref[i].sizes());
        CHECK(ref[i].abs().max().item<double>() > 0.1);
        CHECK((got[i] - ref[i]).abs().max().item<double>() < 1e-4);
    }
}

TEST_CASE("FC models train the same contiguous (transposed convolutions) and channels-last (sub-pixel)",
          "[nn][models]") {
    for (const std::string arch : {"fc-ef", "fc-siam-diff"}) {
        INFO(arch);
        torch::manual_seed(6);
        auto a = cdk::nn::create_model(opts(arch, 3, 4));
        torch::manual_seed(6);
        auto b = cdk::nn::create_model(opts(arch, 3, 4));
        cdk::nn::to_channels_last(*b);
        a->eval();  // no dropout; gradients still flow (not folded)
        b->eval();
        const auto pre = torch::randn({2, 3, 32, 48}), post = torch::randn({2, 3, 32, 48});
        const auto target = torch::randn({2, 2, 32, 48});
        auto step = [&](cdk::nn::ChangeModel& m, bool nhwc) {
            const auto fmt = nhwc ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
            const auto logits = m->forward(pre.contiguous(fmt), post.contiguous(fmt)).logits;
            (logits * target).sum().backward();
            return logits.detach().contiguous();
        };
        const auto la = step(a, false), lb = step(b, true);
        CHECK((la - lb).abs().max().item<double>() < 1e-4 * std::max(1.0, la.abs().max().item<double>()));
        const auto pa = a->named_parameters(), pb = b->named_parameters();
        int ups = 0;
        for (const auto& item : pa) {
            if (item.key().find(".up") == std::string::npos) continue;  // the transposed convolutions
            ++ups;
            const auto ga = item.value().grad(), gb = pb[item.key()].grad();
            INFO(item.key());
            REQUIRE(gb.defined());
            CHECK((ga - gb).abs().max().item<double>() < 1e-3 * std::max(1.0, ga.abs().max().item<double>()));
        }
        CHECK(ups == 8);  // 4 weights + 4 biases
    }
}
