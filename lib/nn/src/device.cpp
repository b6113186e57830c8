#include "cdk/nn/device.hpp"

#include <regex>

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

std::string torch_build_info() {
    std::string s = "LibTorch " + std::to_string(TORCH_VERSION_MAJOR) + "." +
                    std::to_string(TORCH_VERSION_MINOR) + "." + std::to_string(TORCH_VERSION_PATCH);
    s += torch::cuda::is_available() ? ", CUDA with " + std::to_string(torch::cuda::device_count()) + " GPU(s)"
                                     : ", CPU only";
    s += ", " + std::to_string(at::get_num_threads()) + " threads";
    return s;
}

}  // namespace cdk::nn
