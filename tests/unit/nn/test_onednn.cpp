#include <catch2/catch.hpp>

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cdk/nn/device.hpp"
#include "cdk/nn/models.hpp"
#include "layers.hpp"
#include "onednn.hpp"

using cdk::nn::detail::OneDnnConv;

namespace {

namespace F = torch::nn::functional;

torch::Tensor nhwc(const torch::Tensor& x) { return x.contiguous(torch::MemoryFormat::ChannelsLast); }

// LibTorch's convolution with the same (possibly asymmetric) padding, + optional ReLU.
torch::Tensor reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, int64_t stride,
                        std::array<int64_t, 4> pad, bool relu) {
    auto y = torch::conv2d(F::pad(x, F::PadFuncOptions({pad[1], pad[3], pad[0], pad[2]})), w, b, stride);
    return relu ? torch::relu(y) : y;
}

// Restores the process-wide switch when a test ends, whatever it set.
struct EnabledGuard {
    bool previous = cdk::nn::detail::set_onednn_enabled(true);
    ~EnabledGuard() { cdk::nn::detail::set_onednn_enabled(previous); }
};

// Whether this build calls oneDNN; warns when not (the test then has nothing to compare).
bool have_onednn() {
    if (cdk::nn::detail::onednn_enabled()) return true;
    WARN("built without oneDNN (libdnnl-dev): nothing to compare");
    return false;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("oneDNN convolutions compute LibTorch's convolution, bias and ReLU", "[nn][onednn]") {
    EnabledGuard on;
    if (!have_onednn()) return;
    torch::manual_seed(11);
    torch::NoGradGuard no_grad;
    struct Case {
        int64_t in, out, kernel, stride;
        std::array<int64_t, 4> pad;
        bool bias, relu;
    };
    for (const Case& c : {Case{5, 7, 3, 1, {1, 1, 1, 1}, true, true}, Case{6, 16, 3, 2, {1, 1, 1, 1}, true, false},
                          Case{16, 3, 1, 1, {0, 0, 0, 0}, false, true}, Case{4, 12, 2, 1, {0, 0, 1, 1}, true, false},
                          Case{64, 80, 3, 1, {1, 1, 1, 1}, true, true}}) {  // 64+ channels: Winograd
        INFO("in " << c.in << " out " << c.out << " kernel " << c.kernel << " stride " << c.stride);
        const auto w = torch::randn({c.out, c.in, c.kernel, c.kernel});
        const auto b = c.bias ? torch::randn({c.out}) : torch::Tensor();
        const OneDnnConv conv(w, b, c.stride, c.pad, c.relu);
        for (int64_t n : {1, 3}) {  // a new batch size is a new primitive
            const auto x = torch::randn({n, c.in, 13, 10});
            const auto y = conv.forward(nhwc(x));
            REQUIRE(y.defined());
            const auto ref = reference(x, w, b, c.stride, c.pad, c.relu);
            REQUIRE(y.sizes() == ref.sizes());
            CHECK(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
            CHECK(y.scalar_type() == torch::kFloat);
            CHECK(max_diff(y, ref) < 1e-5 * std::max(1.0, ref.abs().max().item<double>()));
            if (c.relu) CHECK(y.min().item<double>() >= 0.0);
        }
    }
}

TEST_CASE("oneDNN max pooling computes LibTorch's 2x2 max pooling", "[nn][onednn]") {
    EnabledGuard on;
    torch::manual_seed(16);
    const auto x = torch::randn({2, 5, 13, 10});
    {
        torch::NoGradGuard no_grad;
        CHECK_FALSE(cdk::nn::detail::onednn_max_pool2(x).defined());  // contiguous NCHW
        if (!have_onednn()) return;
        for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
            const auto xin = nhwc(x).to(dtype);
            const auto y = cdk::nn::detail::onednn_max_pool2(xin);
            if (!y.defined()) {
                WARN("oneDNN has no pooling for this type on this CPU");
                continue;
            }
            const auto ref = torch::max_pool2d(xin, 2, 2);  // odd sizes: the last row is dropped
            REQUIRE(y.sizes() == ref.sizes());
            CHECK(y.scalar_type() == dtype);
            CHECK(max_diff(y, ref) == 0.0);
        }
    }
    CHECK_FALSE(cdk::nn::detail::onednn_max_pool2(nhwc(x)).defined());  // autograd recording
}

TEST_CASE("oneDNN convolutions leave what they do not take to LibTorch", "[nn][onednn]") {
    EnabledGuard on;
    torch::manual_seed(12);
    const OneDnnConv conv(torch::randn({8, 5, 3, 3}), torch::randn({8}), 1, {1, 1, 1, 1}, true);
    const auto x = torch::randn({2, 5, 9, 7});
    {
        torch::NoGradGuard no_grad;
        CHECK_FALSE(conv.forward(x).defined());                                  // contiguous NCHW
        CHECK_FALSE(conv.forward(nhwc(torch::randn({2, 4, 9, 7}))).defined());    // wrong channels
        CHECK_FALSE(conv.forward(nhwc(x).to(torch::kDouble)).defined());          // float64
        CHECK_FALSE(conv.forward(nhwc(x).to(torch::kBFloat16)).defined());        // bfloat16 without autocast
        cdk::nn::detail::set_onednn_enabled(false);
        CHECK_FALSE(conv.forward(nhwc(x)).defined());                             // switched off
        cdk::nn::detail::set_onednn_enabled(true);
        CHECK(conv.forward(nhwc(x)).defined() == cdk::nn::detail::onednn_enabled());
    }
    CHECK_FALSE(conv.forward(nhwc(x)).defined());  // an autograd graph is being recorded
    CHECK_FALSE(OneDnnConv(torch::randn({8, 5, 3, 3}).to(torch::kDouble), {}, 1, {1, 1, 1, 1}, false));
}

TEST_CASE("oneDNN convolutions follow CPU bfloat16 autocast", "[nn][onednn]") {
    EnabledGuard on;
    if (!have_onednn()) return;
    torch::manual_seed(13);
    torch::NoGradGuard no_grad;
    const auto w = torch::randn({16, 8, 3, 3}) * 0.2, b = torch::randn({16});
    const OneDnnConv conv(w, b, 1, {1, 1, 1, 1}, true);
    const auto x = torch::randn({2, 8, 16, 12});
    const auto ref = reference(x, w, b, 1, {1, 1, 1, 1}, true);
    cdk::nn::AutocastGuard amp(true, torch::kCPU);
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {  // a float input is cast, as autocast does
        const auto y = conv.forward(nhwc(x).to(dtype));
        if (!y.defined()) {
            WARN("oneDNN has no bfloat16 convolution on this CPU: LibTorch runs it");
            return;
        }
        CHECK(y.scalar_type() == torch::kBFloat16);
        CHECK(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
        CHECK(max_diff(y, ref) < 0.03 * ref.abs().max().item<double>());
    }
}

TEST_CASE("models in their inference form give the same logits with and without oneDNN", "[nn][onednn]") {
    EnabledGuard on;
    if (!have_onednn()) return;
    torch::manual_seed(14);
    for (const char* arch : {"fc-ef", "fc-siam-diff", "resnet-fpn", "bit"}) {
        INFO(arch);
        cdk::nn::ModelOptions o;
        o.arch = arch;
        o.in_bands = 3;
        o.width = 16;
        auto model = cdk::nn::create_model(o);
        cdk::nn::to_channels_last(*model);
        cdk::nn::prepare_for_inference(*model);
        torch::NoGradGuard no_grad;
        const auto pre = nhwc(torch::randn({2, 3, 40, 36})), post = nhwc(torch::randn({2, 3, 40, 36}));
        const auto fast = model->forward(pre, post).logits.clone();
        cdk::nn::detail::set_onednn_enabled(false);
        const auto plain = model->forward(pre, post).logits.clone();
        cdk::nn::detail::set_onednn_enabled(true);
        REQUIRE(fast.sizes() == plain.sizes());
        const double scale = std::max(1.0, plain.abs().max().item<double>());
        CHECK(max_diff(fast, plain) <= 1e-4 * scale);
    }
}

TEST_CASE("the sub-pixel upsampling through oneDNN equals pixel shuffle and concatenation", "[nn][onednn]") {
    EnabledGuard on;
    if (!have_onednn()) return;
    torch::manual_seed(15);
    torch::NoGradGuard no_grad;
    auto up = torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(6, 5, 3).stride(2).padding(1).output_padding(1));
    const auto x = nhwc(torch::randn({2, 6, 7, 9}));
    const auto skip = nhwc(torch::randn({2, 3, 14, 18}));
    const auto kb = cdk::nn::detail::subpixel_from_transposed(up->weight, up->bias);
    const auto fast = cdk::nn::detail::subpixel_onednn(kb);
    const auto ref = up->forward(x);
    const auto alone = cdk::nn::detail::subpixel_up(x, kb.first, kb.second, &fast);
    REQUIRE(alone.sizes() == ref.sizes());
    CHECK(max_diff(alone, ref) < 1e-5);
    const auto joined = cdk::nn::detail::subpixel_up(x, kb.first, kb.second, &fast, skip);
    const auto joined_ref = torch::cat({ref, skip}, 1);
    REQUIRE(joined.sizes() == joined_ref.sizes());
    CHECK(joined.is_contiguous(torch::MemoryFormat::ChannelsLast));
    CHECK(max_diff(joined, joined_ref) < 1e-5);
    // without oneDNN the same call takes LibTorch's convolution, pixel shuffle and cat
    cdk::nn::detail::set_onednn_enabled(false);
    CHECK(max_diff(cdk::nn::detail::subpixel_up(x, kb.first, kb.second, &fast, skip), joined_ref) < 1e-5);
}

// Hidden (run by benchmarks/bench_infer.sh): the throughput of oneDNN's direct 3x3
// convolutions as cd-infer calls them (channels-last, weights prepacked), the shapes of the
// Python measurement in that script, one JSON line on stdout. Threads: CDK_THREADS (2).
TEST_CASE("oneDNN convolution throughput for benchmarks/bench_infer.sh", "[.][conv-throughput]") {
    EnabledGuard on;
    const char* env = std::getenv("CDK_THREADS");
    torch::set_num_threads(env ? std::atoi(env) : 2);
    torch::NoGradGuard no_grad;
    nlohmann::json result = nlohmann::json::object();
    for (bool bf16 : {false, true}) {
        double best = 0.0;
        nlohmann::json rows = nlohmann::json::array();
        for (const auto& s : std::vector<std::array<int64_t, 3>>{{16, 16, 256}, {32, 32, 128}, {64, 64, 64},
                                                                 {128, 128, 32}, {256, 256, 16}}) {
            const OneDnnConv conv(torch::randn({s[1], s[0], 3, 3}), {}, 1, {1, 1, 1, 1}, false);
            const auto x = nhwc(torch::randn({4, s[0], s[2], s[2]}));
            cdk::nn::AutocastGuard amp(bf16, torch::kCPU);
            const auto xin = bf16 ? x.to(torch::kBFloat16) : x;
            if (!conv.forward(xin).defined()) continue;  // no oneDNN, or no bfloat16 on this CPU
            int n = 0;
            const auto t0 = std::chrono::steady_clock::now();
            double seconds = 0.0;
            while (seconds < 1.0) {
                conv.forward(xin);
                ++n;
                seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            }
            const double g = 2.0 * 4 * s[1] * s[2] * s[2] * s[0] * 9 * n / seconds / 1e9;
            rows.push_back({{"cin", s[0]}, {"cout", s[1]}, {"hw", s[2]}, {"gflops", g}});
            best = std::max(best, g);
        }
        result[bf16 ? "bf16_best_gflops" : "best_gflops"] = best;
        result[bf16 ? "bf16_convs" : "convs"] = rows;
    }
    std::cout << result.dump() << "\n";
    CHECK(true);
}

TEST_CASE("the concatenation workspace is reused only when nobody holds it", "[nn][onednn]") {
    c10::InferenceMode inference;  // views keep no reference to their base here, only to its storage
    const auto y = nhwc(torch::randn({1, 8, 3, 4})), skip = nhwc(torch::randn({1, 5, 6, 8}));
    torch::Tensor workspace;
    auto first = cdk::nn::detail::shuffle_concat(y, skip, &workspace);
    REQUIRE(workspace.defined());
    const auto kept = first.narrow(1, 0, 2).clone();
    const auto view = first.narrow(1, 0, 2);  // a view outlives `first`
    first = torch::Tensor();
    auto second = cdk::nn::detail::shuffle_concat(y * 2, skip, &workspace);
    CHECK(second.data_ptr() != view.data_ptr());  // not written over the view
    CHECK(max_diff(view, kept) == 0.0);
    const void* reused = second.data_ptr();
    second = torch::Tensor();
    const auto third = cdk::nn::detail::shuffle_concat(y, skip, &workspace);
    CHECK(third.data_ptr() == reused);  // nobody held the second: its buffer served again
    CHECK(max_diff(third.narrow(1, 2, 5), skip) == 0.0);
}

TEST_CASE("training Winograd convolutions give LibTorch's values and gradients", "[nn][onednn]") {
    EnabledGuard on;
    if (!have_onednn()) return;
    torch::manual_seed(5);
    struct Case {
        int64_t in, out, h, w;
        bool weight_channels_last;
    };
    for (const Case k : {Case{64, 64, 12, 10, true}, Case{96, 64, 9, 16, false}, Case{64, 128, 7, 7, true},
                         Case{32, 48, 10, 10, false}}) {
        INFO("in " << k.in << ", out " << k.out << ", " << k.h << "x" << k.w);
        const auto x0 = nhwc(torch::randn({2, k.in, k.h, k.w}));
        auto w0 = torch::randn({k.out, k.in, 3, 3}) / 24;
        if (k.weight_channels_last) w0 = nhwc(w0);
        const auto probe = torch::randn({2, k.out, k.h, k.w});
        auto x = x0.clone(torch::MemoryFormat::ChannelsLast).requires_grad_(true);
        auto w = w0.clone(w0.suggest_memory_format()).requires_grad_(true);
        const auto y = cdk::nn::detail::onednn_train_conv3x3(x, w);
        if (!y.defined()) {
            WARN("no Winograd kernel on this CPU (it needs AVX-512): nothing to compare");
            return;
        }
        REQUIRE(y.grad_fn());
        CHECK(y.grad_fn()->name().find("WinogradConv") != std::string::npos);
        CHECK(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
        (y * probe).sum().backward();
        auto xr = x0.clone(torch::MemoryFormat::ChannelsLast).requires_grad_(true);
        auto wr = w0.clone(w0.suggest_memory_format()).requires_grad_(true);
        const auto yr = torch::conv2d(xr, wr, {}, 1, 1);
        (yr * probe).sum().backward();
        // Winograd's rounding: relative to each tensor's largest magnitude
        CHECK(max_diff(y, yr) < 1e-4 * yr.abs().max().item<double>());
        CHECK(max_diff(x.grad(), xr.grad()) < 1e-4 * xr.grad().abs().max().item<double>());
        CHECK(max_diff(w.grad(), wr.grad()) < 1e-4 * wr.grad().abs().max().item<double>());
        CHECK(w.grad().sizes() == w.sizes());
    }
    // not taken: fewer channels than the floor, no autograd graph, switched off
    const auto small = nhwc(torch::randn({1, 16, 8, 8})).requires_grad_(true);
    CHECK_FALSE(cdk::nn::detail::onednn_train_conv3x3(small, torch::randn({32, 16, 3, 3})).defined());
    const auto big = nhwc(torch::randn({1, 64, 8, 8}));
    {
        torch::NoGradGuard no_grad;
        CHECK_FALSE(cdk::nn::detail::onednn_train_conv3x3(big, torch::randn({64, 64, 3, 3})).defined());
    }
    cdk::nn::detail::set_onednn_enabled(false);
    CHECK_FALSE(cdk::nn::detail::onednn_train_conv3x3(big, torch::randn({64, 64, 3, 3})).defined());
}
