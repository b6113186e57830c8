#include <catch2/catch.hpp>

#include <string>

#include "cdk/nn/models.hpp"
#include "fused_bn.hpp"
#include "layers.hpp"

using cdk::nn::detail::ConvBnRelu;
using cdk::nn::detail::ConvBnReluOptions;

namespace {

// Restores the process-wide switch when a test ends, whatever it set.
struct FusedGuard {
    bool previous = cdk::nn::detail::set_fused_bn_enabled(true);
    ~FusedGuard() { cdk::nn::detail::set_fused_bn_enabled(previous); }
};

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

struct Step {
    torch::Tensor out, dx, dconv, dgamma, dbeta, running_mean, running_var;
    int64_t batches = 0;
    std::string node;  // the output's autograd node
};

// One forward and backward of `block` (training mode) on x, the random numbers seeded alike.
Step run(ConvBnRelu& block, const torch::Tensor& x0, const torch::Tensor& probe, bool fused) {
    cdk::nn::detail::set_fused_bn_enabled(fused);
    block->zero_grad();
    auto x = x0.detach().clone(x0.suggest_memory_format()).requires_grad_(true);
    torch::manual_seed(99);
    Step s;
    s.out = block->forward(x);
    (s.out * probe).sum().backward();
    s.dx = x.grad();
    s.dconv = block->conv_->weight.grad().clone();
    s.dgamma = block->bn_->weight.grad().clone();
    s.dbeta = block->bn_->bias.grad().clone();
    s.running_mean = block->bn_->running_mean.clone();
    s.running_var = block->bn_->running_var.clone();
    s.batches = block->bn_->num_batches_tracked.item<int64_t>();
    s.node = s.out.grad_fn() ? s.out.grad_fn()->name() : "";
    return s;
}

}  // namespace

TEST_CASE("fused batch norm, ReLU and dropout give LibTorch's values, gradients and running statistics",
          "[nn][fused]") {
    FusedGuard guard;
    const auto cl = torch::MemoryFormat::ChannelsLast;
    struct Case {
        bool relu;
        double dropout;
    };
    for (const Case k : {Case{true, 0.2}, Case{true, 0.0}, Case{false, 0.0}, Case{false, 0.5}}) {
        INFO("relu " << k.relu << ", dropout " << k.dropout);
        torch::manual_seed(3);
        ConvBnReluOptions o;
        o.in = 5;
        o.out = 24;
        o.relu = k.relu;
        o.dropout = k.dropout;
        ConvBnRelu fused(o), plain(o);
        {
            torch::NoGradGuard no_grad;
            // non-trivial affine and running statistics, identical in both blocks
            fused->bn_->weight.uniform_(0.5, 1.5);
            fused->bn_->bias.uniform_(-0.5, 0.5);
            fused->bn_->running_mean.uniform_(-1, 1);
            auto src = fused->named_parameters(), dst = plain->named_parameters();
            for (const auto& p : src) dst[p.key()].copy_(p.value());
            auto bsrc = fused->named_buffers(), bdst = plain->named_buffers();
            for (const auto& b : bsrc) bdst[b.key()].copy_(b.value());
        }
        cdk::nn::to_channels_last(*fused);
        cdk::nn::to_channels_last(*plain);
        fused->train();
        plain->train();
        const auto x = (torch::randn({3, 5, 11, 13}) * 2 + 3).contiguous(cl);
        const auto probe = torch::randn({3, 24, 11, 13});
        const Step a = run(fused, x, probe, true), b = run(plain, x, probe, false);
        CHECK(a.node.find("FusedBn") != std::string::npos);
        CHECK(b.node.find("FusedBn") == std::string::npos);
        CHECK(a.out.is_contiguous(cl));
        CHECK(max_diff(a.out, b.out) < 1e-5);
        CHECK(max_diff(a.dx, b.dx) < 1e-4 * b.dx.abs().max().item<double>());
        CHECK(max_diff(a.dconv, b.dconv) < 1e-4 * b.dconv.abs().max().item<double>());
        CHECK(max_diff(a.dgamma, b.dgamma) < 1e-4 * b.dgamma.abs().max().item<double>());
        CHECK(max_diff(a.dbeta, b.dbeta) < 1e-4 * b.dbeta.abs().max().item<double>());
        CHECK(max_diff(a.running_mean, b.running_mean) < 1e-5);
        CHECK(max_diff(a.running_var, b.running_var) < 1e-4);
        CHECK(a.batches == b.batches);
        if (k.dropout > 0) {  // the same channels were dropped
            CHECK(torch::equal(a.out.eq(0).all(3).all(2), b.out.eq(0).all(3).all(2)));
            CHECK(a.out.eq(0).all(3).all(2).any().item<bool>());
        }
    }
}

TEST_CASE("fused batch norm leaves inputs it does not handle to LibTorch", "[nn][fused]") {
    FusedGuard guard;
    ConvBnReluOptions o;
    o.in = 3;
    o.out = 8;
    ConvBnRelu block(o);
    block->train();
    torch::Tensor x = torch::randn({2, 3, 9, 9}, torch::requires_grad());  // contiguous, not channels-last
    auto y = block->forward(x);
    REQUIRE(y.grad_fn());
    CHECK(y.grad_fn()->name().find("FusedBn") == std::string::npos);
    // evaluation mode: the running statistics, untouched by the fused path
    cdk::nn::to_channels_last(*block);
    block->eval();
    torch::NoGradGuard no_grad;
    const auto before = block->bn_->running_mean.clone();
    block->forward(x.detach().contiguous(torch::MemoryFormat::ChannelsLast));
    CHECK(torch::equal(before, block->bn_->running_mean));
}

