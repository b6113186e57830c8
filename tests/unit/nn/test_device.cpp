#include <catch2/catch.hpp>

#include "cdk/core/error.hpp"
#include "cdk/nn/device.hpp"

#include <algorithm>
#include <thread>

TEST_CASE("parse_device accepts cpu and auto, rejects nonsense", "[nn]") {
    CHECK(cdk::nn::parse_device("cpu").is_cpu());
    auto d = cdk::nn::parse_device("auto");
    CHECK((d.is_cpu() || d.is_cuda()));
    CHECK_THROWS_AS(cdk::nn::parse_device("gpu0"), cdk::ConfigError);
    CHECK_THROWS_WITH(cdk::nn::parse_device("tpu"), Catch::Contains("'tpu'"));
    if (!torch::cuda::is_available())
        CHECK_THROWS_WITH(cdk::nn::parse_device("cuda:0"), Catch::Contains("no usable CUDA"));
}

TEST_CASE("LibTorch runs a convolution on the chosen device", "[nn]") {
    torch::manual_seed(0);
    auto dev = cdk::nn::parse_device("auto");
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 2, 3).padding(1));
    conv->to(dev);
    auto y = conv->forward(torch::ones({1, 3, 8, 8}, dev));
    CHECK(y.sizes() == torch::IntArrayRef({1, 2, 8, 8}));
    CHECK(cdk::nn::torch_build_info().find("LibTorch") == 0);
}

TEST_CASE("threads 0 means every core the system reports, not LibTorch's physical-core guess", "[nn][device]") {
    const int all = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    CHECK(cdk::nn::set_threads(0) == all);
    CHECK(cdk::nn::set_threads(1) == 1);
    CHECK(cdk::nn::set_threads(0) == all);
}

TEST_CASE("memory format: auto is channels-last on CPU from width 16, and names are checked", "[nn][device]") {
    const torch::Device cpu(torch::kCPU);
    CHECK(cdk::nn::use_channels_last("auto", cpu, 16));
    CHECK_FALSE(cdk::nn::use_channels_last("auto", cpu, 8));
    CHECK(cdk::nn::use_channels_last("channels-last", cpu, 4));
    CHECK_FALSE(cdk::nn::use_channels_last("contiguous", cpu, 32));
    CHECK_THROWS_WITH(cdk::nn::use_channels_last("nhwc", cpu, 16), Catch::Contains("unknown memory format 'nhwc'"));
}
