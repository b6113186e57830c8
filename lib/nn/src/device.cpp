#include "cdk/nn/device.hpp"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <regex>
#include <thread>

#include "cdk/core/error.hpp"

namespace cdk::nn {

torch::Device parse_device(const std::string& text) {
    if (text == "auto")
        return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    if (text == "cpu") return torch::Device(torch::kCPU);
    static const std::regex cuda_re("cuda(:([0-9]+))?");
    std::smatch m;
    if (!std::regex_match(text, m, cuda_re))
        throw ConfigError("device " + quote(text) + " is not one of auto, cpu, cuda, cuda:N");
    const int index = m[2].matched ? std::stoi(m[2].str()) : 0;
    if (!torch::cuda::is_available())
        throw ConfigError("device " + quote(text) + " asked for, but this LibTorch has no usable CUDA");
    if (index >= static_cast<int>(torch::cuda::device_count()))
        throw ConfigError("device " + quote(text) + " does not exist (" +
                          std::to_string(torch::cuda::device_count()) + " GPUs)");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

int set_threads(int threads) {
    // LibTorch's own default counts physical cores through cpuinfo, which on some virtual
    // machines reports one where the system has two (here: 1 thread, 1.7x slower).
    const int all = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    at::set_num_threads(threads > 0 ? threads : all);
    return at::get_num_threads();
}

void validate_memory_format(const std::string& name) {
    if (name != "auto" && name != "channels-last" && name != "contiguous")
        throw ConfigError("unknown memory format " + quote(name) + " (known: auto, channels-last, contiguous)");
}

bool use_channels_last(const std::string& memory_format, const torch::Device& device, int width) {
    validate_memory_format(memory_format);
    constexpr int kChannelsLastMinWidth = 16;
    return device.is_cpu() &&
           (memory_format == "channels-last" || (memory_format == "auto" && width >= kChannelsLastMinWidth));
}

std::string torch_build_info() {
    std::string s = "LibTorch " + std::to_string(TORCH_VERSION_MAJOR) + "." +
                    std::to_string(TORCH_VERSION_MINOR) + "." + std::to_string(TORCH_VERSION_PATCH);
    s += torch::cuda::is_available() ? ", CUDA with " + std::to_string(torch::cuda::device_count()) + " GPU(s)"
                                     : ", CPU only";
    s += ", " + std::to_string(at::get_num_threads()) + " threads";
    return s;
}

bool cpu_bf16_supported() {
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

bool cpu_bf16_native() {
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
    return false;
#endif
}

void check_amp(const torch::Device& device, const std::string& what, const RunContext& ctx) {
    if (!device.is_cpu()) return;
    if (!cpu_bf16_supported())
        throw ConfigError("mixed precision (" + what +
                          ") on the CPU needs AVX-512 for bfloat16, which this CPU lacks; run without it");
    if (!cpu_bf16_native())
        ctx.warn("this CPU has AVX-512 but no bfloat16 instructions (AVX512_BF16, AMX): " + what +
                 " runs emulated and may be slower than float32");
}

AutocastGuard::AutocastGuard(bool enabled, const torch::Device& device)
    : enabled_(enabled), cpu_(device.is_cpu()) {
    if (!enabled_) return;
    if (cpu_) {
        previous_ = at::autocast::is_cpu_enabled();
        previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
        at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
        at::autocast::set_cpu_enabled(true);
    } else {
        previous_ = at::autocast::is_enabled();
        previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
        at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
        at::autocast::set_enabled(true);
    }
    at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
    if (!enabled_) return;
    // The cast weights are cached for the outermost autocast region only.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    if (cpu_) {
        at::autocast::set_cpu_enabled(previous_);
        at::autocast::set_autocast_cpu_dtype(previous_dtype_);
    } else {
        at::autocast::set_enabled(previous_);
        at::autocast::set_autocast_gpu_dtype(previous_dtype_);
    }
}

}  // namespace cdk::nn
