#include "cdk/nn/batch.hpp"

namespace cdk::nn {

Batch Batch::to(const torch::Device& device, bool channels_last) const {
    Batch b = *this;
    for (torch::Tensor* t : {&b.pre, &b.post, &b.label, &b.valid, &b.pre_clean, &b.post_clean})
        if (t->defined()) *t = t->to(device);
    if (channels_last)
        for (torch::Tensor* t : {&b.pre, &b.post, &b.pre_clean, &b.post_clean})
            if (t->defined()) *t = t->contiguous(torch::MemoryFormat::ChannelsLast);
    return b;
}

}  // namespace cdk::nn
