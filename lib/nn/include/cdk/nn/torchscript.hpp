#pragma once

#include <torch/torch.h>

#include <string>

#include "cdk/nn/models.hpp"

namespace cdk::nn {

/// Whether `path` is a TorchScript archive (torch.jit.save writes a zip) rather than a
/// cdkit bundle. Throws IoError when the file cannot be read.
bool is_torchscript(const std::string& path);

/// Load a TorchScript module saved from Python whose `forward(pre, post)` returns change
/// logits [N, 2, H, W] for [N, in_bands, H, W] inputs, as a ChangeModel (arch
/// "torchscript", no intermediate features) on `device`, in evaluation mode. Throws
/// ModelError naming the file when it cannot be loaded or has no such forward.
ChangeModel load_torchscript(const std::string& path, int in_bands, const torch::Device& device);

}  // namespace cdk::nn
