#pragma once

#include <torch/torch.h>

#include <string>

namespace cdk::nn {

/// Parse "auto", "cpu", "cuda" or "cuda:N". "auto" picks CUDA when LibTorch has it and a
/// GPU is present. Throws ConfigError for other text, or for CUDA when it is unavailable.
torch::Device parse_device(const std::string& text);

/// One line describing the LibTorch build: version, CUDA availability, threads.
std::string torch_build_info();

/// Mixed precision on CUDA while it lives: CUDA operations autocast to bfloat16 (which,
/// unlike float16, needs no loss scaling). Does nothing when constructed with false.
class AutocastGuard {
public:
    /// Enable bfloat16 autocast for CUDA when `enabled`.
    explicit AutocastGuard(bool enabled);
    ~AutocastGuard();
    AutocastGuard(const AutocastGuard&) = delete;
    AutocastGuard& operator=(const AutocastGuard&) = delete;

private:
    bool enabled_;
    bool previous_ = false;
    at::ScalarType previous_dtype_ = at::kHalf;
};

}  // namespace cdk::nn
