#include "layers.hpp"

#include <algorithm>

#include "cdk/core/error.hpp"

namespace cdk::nn::detail {

namespace F = torch::nn::functional;

int64_t*& mac_counter() {
    thread_local int64_t* counter = nullptr;
    return counter;
}

void add_macs(int64_t macs) {
    if (int64_t* c = mac_counter()) *c += macs;
}

MacCounterGuard::MacCounterGuard(int64_t& target) : previous_(mac_counter()) {
    target = 0;
    mac_counter() = &target;
}

MacCounterGuard::~MacCounterGuard() { mac_counter() = previous_; }

torch::Tensor conv(torch::nn::Conv2d& c, const torch::Tensor& x) {
    auto y = c->forward(x);
    // weight [out, in/groups, kh, kw]: each output element costs in/groups x kh x kw MACs
    if (mac_counter()) add_macs(y.numel() * c->weight[0].numel());
    return y;
}

torch::Tensor conv_t(torch::nn::ConvTranspose2d& c, const torch::Tensor& x) {
    auto y = c->forward(x);
    // weight [in, out/groups, kh, kw]: every input element feeds out/groups x kh x kw outputs
    if (mac_counter()) add_macs(x.numel() * c->weight[0].numel());
    return y;
}

torch::Tensor linear(torch::nn::Linear& l, const torch::Tensor& x) {
    auto y = l->forward(x);
    if (mac_counter()) add_macs(y.numel() * l->options.in_features());
    return y;
}

torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b) {
    auto y = torch::matmul(a, b);
    if (mac_counter()) add_macs(y.numel() * a.size(-1));
    return y;
}

ConvBnReluImpl::ConvBnReluImpl(const ConvBnReluOptions& o) : o_(o) {
    conv_ = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in, o.out, o.kernel)
                                                          .stride(o.stride)
                                                          .padding(o.kernel / 2)
                                                          .bias(false)));
    bn_ = register_module("bn", torch::nn::BatchNorm2d(o.out));
    drop_ = register_module("drop", torch::nn::Dropout2d(torch::nn::Dropout2dOptions(o.dropout)));
}

torch::Tensor ConvBnReluImpl::forward(const torch::Tensor& x) {
    auto y = bn_->forward(conv(conv_, x));
    if (o_.relu) y = torch::relu(y);
    if (o_.dropout > 0) y = drop_->forward(y);
    return y;
}

torch::Tensor pad_to_multiple(const torch::Tensor& x, int64_t m) {
    const int64_t ph = ceil_div(x.size(2), m) * m - x.size(2);
    const int64_t pw = ceil_div(x.size(3), m) * m - x.size(3);
    if (ph == 0 && pw == 0) return x;
    return F::pad(x, F::PadFuncOptions({0, pw, 0, ph}).mode(torch::kReplicate));
}

torch::Tensor crop(const torch::Tensor& x, int64_t h, int64_t w) {
    if (x.size(2) == h && x.size(3) == w) return x;
    return x.narrow(2, 0, h).narrow(3, 0, w);
}

torch::Tensor crop_feature(const torch::Tensor& x, int64_t h, int64_t w, int64_t stride) {
    return crop(x, ceil_div(h, stride), ceil_div(w, stride));
}

void check_pair(const torch::Tensor& pre, const torch::Tensor& post, int bands,
                const std::string& arch) {
    if (pre.dim() != 4 || post.dim() != 4)
        throw ModelError("model " + quote(arch) + " takes [N, bands, H, W] inputs, got " +
                         std::to_string(pre.dim()) + "-D and " + std::to_string(post.dim()) + "-D tensors");
    if (pre.sizes() != post.sizes())
        throw ModelError("model " + quote(arch) + " got dates of different shapes");
    if (pre.size(1) != bands)
        throw ModelError("model " + quote(arch) + " expects " + std::to_string(bands) +
                         " bands per date, got " + std::to_string(pre.size(1)));
}

int extra_int(const ModelOptions& o, const std::string& key, int fallback, int min_value) {
    if (!o.extra.is_object() || !o.extra.contains(key)) return fallback;
    const auto& v = o.extra.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < min_value)
        throw ConfigError("model option " + quote(key) + " of " + quote(o.arch) +
                          " must be an integer >= " + std::to_string(min_value) + ", got " + v.dump());
    return v.get<int>();
}

std::string extra_string(const ModelOptions& o, const std::string& key, const std::string& fallback) {
    if (!o.extra.is_object() || !o.extra.contains(key)) return fallback;
    const auto& v = o.extra.at(key);
    if (!v.is_string())
        throw ConfigError("model option " + quote(key) + " of " + quote(o.arch) + " must be a string, got " +
                          v.dump());
    return v.get<std::string>();
}

void check_extra_keys(const ModelOptions& o, const std::vector<std::string>& known) {
    if (!o.extra.is_object()) return;
    for (const auto& item : o.extra.items()) {
        if (std::find(known.begin(), known.end(), item.key()) != known.end()) continue;
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        throw ConfigError("model " + quote(o.arch) + " has no option " + quote(item.key()) +
                          (list.empty() ? std::string(" (it takes none)") : " (it takes " + list + ")"));
    }
}

}  // namespace cdk::nn::detail
