#pragma once

#include <torch/torch.h>

#include <string>

#include "cdk/core/context.hpp"

namespace cdk::nn {

/// Parse "auto", "cpu", "cuda" or "cuda:N". "auto" picks CUDA when LibTorch has it and a
/// GPU is present. Throws ConfigError for other text, or for CUDA when it is unavailable.
torch::Device parse_device(const std::string& text);

/// Set LibTorch's intra-op threads: `threads`, or when 0 every core the system reports.
/// (LibTorch's own default counts physical cores through cpuinfo and found 1 of the 2 here:
/// inference ran 1.7x slower, docs/benchmarks.md.) Returns the count in use.
int set_threads(int threads);

/// Check a memory format name: auto, channels-last or contiguous (ConfigError otherwise).
void validate_memory_format(const std::string& name);

/// Whether a model of `width` runs channels-last (NHWC) on `device` under `memory_format`.
/// "auto" is the rule measured on 2 cores with Debian's LibTorch (docs/benchmarks.md): on
/// CPU from width 16, where fc-siam-diff trains 15-20 % faster and infers ~15 % faster;
/// at width 4 it is a third slower.
bool use_channels_last(const std::string& memory_format, const torch::Device& device, int width);

/// One line describing the LibTorch build: version, CUDA availability, threads.
std::string torch_build_info();

/// Whether this CPU runs bfloat16 convolutions through oneDNN: LibTorch's bfloat16 CPU
/// path needs AVX-512 (BW, VL, DQ). Without AVX512_BF16 or AMX oneDNN emulates them.
bool cpu_bf16_supported();

/// Whether this CPU has bfloat16 instructions (AVX512_BF16 or AMX). Without them, on an
/// AVX-512 CPU, oneDNN emulates bfloat16 with float32 arithmetic.
bool cpu_bf16_native();

/// Refuse mixed precision (`what` names the option) on a device that cannot run it:
/// a CPU without AVX-512 (ConfigError naming the CPU's lack). CUDA is always accepted.
/// Warns through `ctx` when it is accepted but runs emulated (an AVX-512 CPU without
/// bfloat16 instructions).
void check_amp(const torch::Device& device, const std::string& what, const RunContext& ctx);

/// Mixed precision while it lives: operations on `device` (CPU or CUDA) autocast to
/// bfloat16 (which, unlike float16, needs no loss scaling): convolutions and matrix
/// products run in bfloat16, precision-sensitive operations in float32. Does nothing when
/// constructed with false.
class AutocastGuard {
public:
    /// Enable bfloat16 autocast for `device`'s type when `enabled`.
    AutocastGuard(bool enabled, const torch::Device& device);
    ~AutocastGuard();
    AutocastGuard(const AutocastGuard&) = delete;
    AutocastGuard& operator=(const AutocastGuard&) = delete;

private:
    bool enabled_;
    bool cpu_ = false;
    bool previous_ = false;
    at::ScalarType previous_dtype_ = at::kHalf;
};

}  // namespace cdk::nn
