#pragma once

#include <torch/torch.h>

#include <string>

namespace cdk::nn {

/// Parse "auto", "cpu", "cuda" or "cuda:N". "auto" picks CUDA when LibTorch has it and a
/// GPU is present. Throws ConfigError for other text, or for CUDA when it is unavailable.
torch::Device parse_device(const std::string& text);

/// One line describing the LibTorch build: version, CUDA availability, threads.
std::string torch_build_info();

}  // namespace cdk::nn
