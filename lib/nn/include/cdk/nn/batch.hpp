#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace cdk::nn {

/// A batch of training samples stacked along dimension 0. Pixel labels use 0 = no change,
/// 1 = change, 255 = ignored; a tile without a label raster is all 255 and says only what
/// its image-level label says.
struct Batch {
    torch::Tensor pre;               ///< [N, C, H, W] float, normalised
    torch::Tensor post;              ///< [N, C, H, W] float, normalised
    torch::Tensor label;             ///< [N, H, W] int64 pixel labels (all 255 where a tile has none)
    torch::Tensor valid;             ///< [N, H, W] bool, both dates hold data (false in padding)
    std::vector<double> car;         ///< per sample: CAR of the (augmented) pixel label, 0 without one
    std::vector<std::string> ids;    ///< per sample: tile id
    std::vector<int> changed;        ///< per sample: image-level label, 1 changed, 0 not, -1 unknown
    std::vector<bool> pixel_labelled;  ///< per sample: whether the tile has a pixel label
    torch::Tensor pre_clean;         ///< with a degraded date: date 1 before degradation (else undefined)
    torch::Tensor post_clean;        ///< with a degraded date: date 2 before degradation (else undefined)

    /// Number of samples.
    int64_t size() const { return int64_t(ids.size()); }
    /// This batch with every tensor on `device`, the inputs channels-last when asked (the
    /// per-sample lists are copied as they are). Every tensor field is moved here and only
    /// here, so that a new field cannot be left behind.
    Batch to(const torch::Device& device, bool channels_last = false) const;
};

}  // namespace cdk::nn
