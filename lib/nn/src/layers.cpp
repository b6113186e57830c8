#include "layers.hpp"

#include <algorithm>
#include <sstream>

#include "cdk/core/error.hpp"
#include "fused_bn.hpp"

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

namespace {

// A 3x3 convolution with stride 1, padding 1 (zeros), no dilation, groups or bias: the
// shape onednn_train_conv3x3() runs.
bool plain_3x3(const torch::nn::detail::ConvNdOptions<2>& o) {
    const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
    const auto ones = [](const torch::ExpandingArray<2>& a) { return (*a)[0] == 1 && (*a)[1] == 1; };
    return (*o.kernel_size())[0] == 3 && (*o.kernel_size())[1] == 3 && ones(o.stride()) && pad && ones(*pad) &&
           ones(o.dilation()) && o.groups() == 1 && !o.bias() &&
           c10::get_if<torch::enumtype::kZeros>(&o.padding_mode()) != nullptr;
}

}  // namespace

torch::Tensor conv(torch::nn::Conv2d& c, const torch::Tensor& x, const OneDnnConv* fast) {
    auto y = fast ? fast->forward(x) : torch::Tensor();
    if (!y.defined() && plain_3x3(c->options)) y = onednn_train_conv3x3(x, c->weight);  // training, 32+ channels
    if (!y.defined()) y = c->forward(x);
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
    if (folded_weight_.defined() && !is_training()) {
        auto y = fast_.forward(x);  // ReLU fused
        if (!y.defined()) {
            y = torch::conv2d(x, folded_weight_, folded_bias_, o_.stride, o_.kernel / 2);
            if (o_.relu) y = inference_only() ? y.relu_() : torch::relu(y);
        }
        add_macs(y.numel() * folded_weight_[0].numel());
        return y;
    }
    auto y = conv(conv_, x);
    if (auto z = fused_bn_relu_dropout(y, *bn_, o_.relu, o_.dropout); z.defined()) return z;
    y = bn_->forward(y);
    if (o_.relu) y = torch::relu(y);
    if (o_.dropout > 0) y = drop_->forward(y);
    return y;
}

void ConvBnReluImpl::fold() {
    torch::NoGradGuard no_grad;
    const auto scale = bn_->weight / torch::sqrt(bn_->running_var + bn_->options.eps());
    const auto& w = conv_->weight;
    folded_weight_ = (w * scale.view({-1, 1, 1, 1})).contiguous(w.suggest_memory_format());
    folded_bias_ = bn_->bias - bn_->running_mean * scale;
    const int64_t p = o_.kernel / 2;
    fast_ = OneDnnConv(folded_weight_, folded_bias_, o_.stride, {p, p, p, p}, o_.relu);
}

void ConvBnReluImpl::train(bool on) {
    torch::nn::Module::train(on);
    if (on) {
        folded_weight_ = folded_bias_ = torch::Tensor();
        fast_ = OneDnnConv();
    }
}

std::pair<torch::Tensor, torch::Tensor> subpixel_from_transposed(const torch::Tensor& weight,
                                                                 const torch::Tensor& bias) {
    // Output row 2m takes input row m through kernel row 1; row 2m+1 takes row m through
    // kernel row 2 and row m+1 through kernel row 0 (padding 1). So for output parity p and
    // 2x2 tap t over input rows (m, m+1): p=0: t=0 -> k=1; p=1: t=0 -> k=2, t=1 -> k=0.
    // The kernel is gathered from the weight with index_select, so gradients reach it.
    // (The index list, not a tensor, is what stays static: a static tensor made under one
    // grad or inference mode would be reused under another.)
    static const std::vector<int64_t> taps = [] {
        const int kTap[2][2] = {{1, -1}, {2, 0}};  // [parity][tap] -> kernel index, -1 = none
        std::vector<int64_t> idx;                  // [py][px][ty][tx] -> flat 3x3 index, 9 = zero
        for (int py = 0; py < 2; ++py)
            for (int px = 0; px < 2; ++px)
                for (int ty = 0; ty < 2; ++ty)
                    for (int tx = 0; tx < 2; ++tx) {
                        const int ky = kTap[py][ty], kx = kTap[px][tx];
                        idx.push_back(ky < 0 || kx < 0 ? 9 : ky * 3 + kx);
                    }
        return idx;
    }();
    const int64_t in = weight.size(0), out = weight.size(1);
    const auto flat = torch::cat({weight.transpose(0, 1).reshape({out, in, 9}), weight.new_zeros({out, in, 1})}, 2);
    // [out, in, py, px, ty, tx] -> [out, py, px, in, ty, tx]: pixel_shuffle takes channel
    // c*4 + py*2 + px to (c, 2y+py, 2x+px).
    auto k = flat.index_select(2, torch::tensor(taps, torch::dtype(torch::kLong).device(weight.device())))
                 .view({out, in, 2, 2, 2, 2})
                 .permute({0, 2, 3, 1, 4, 5})
                 .reshape({out * 4, in, 2, 2})
                 .contiguous(weight.suggest_memory_format());
    auto b = bias.defined() ? bias.repeat_interleave(4) : torch::Tensor();
    return {k, b};
}

OneDnnConv subpixel_onednn(const std::pair<torch::Tensor, torch::Tensor>& kb) {
    const auto& [kernel, bias] = kb;
    const int64_t out = kernel.size(0) / 4;
    const auto k = kernel.reshape({out, 4, kernel.size(1), 2, 2}).transpose(0, 1).reshape(kernel.sizes());
    const auto b = bias.defined() ? bias.view({out, 4}).t().reshape({4 * out}) : torch::Tensor();
    return OneDnnConv(k, b, 1, {0, 0, 1, 1}, false);
}

torch::Tensor shuffle_concat(const torch::Tensor& y, const torch::Tensor& skip, torch::Tensor* workspace) {
    const int64_t n = y.size(0), c = y.size(1) / 4, h = y.size(2), w = y.size(3);
    const int64_t cs = skip.defined() ? skip.size(1) : 0, ct = c + cs;
    const auto cl = torch::MemoryFormat::ChannelsLast;
    torch::Tensor out;
    if (workspace && workspace->defined() && workspace->use_count() == 1 && workspace->storage().use_count() == 1 &&
        workspace->sizes() == torch::IntArrayRef({n, ct, 2 * h, 2 * w}) &&
        workspace->scalar_type() == y.scalar_type() && workspace->is_contiguous(cl))
        out = *workspace;
    else
        out = torch::empty({n, ct, 2 * h, 2 * w}, y.options().memory_format(cl));
    if (workspace) *workspace = out;
    // y's channel (py * 2 + px) * c + k at (i, j) goes to channel k at (2i + py, 2j + px);
    // both as [n, i, py, j, px, k] views of their channels-last memory.
    out.as_strided({n, h, 2, w, 2, c}, {4 * h * w * ct, 4 * w * ct, 2 * w * ct, 2 * ct, ct, 1})
        .copy_(y.as_strided({n, h, 2, w, 2, c}, {h * w * 4 * c, w * 4 * c, 2 * c, 4 * c, c, 1}));
    if (cs > 0) out.narrow(1, c, cs).copy_(skip);
    return out;
}

torch::Tensor subpixel_up(const torch::Tensor& x, const torch::Tensor& kernel, const torch::Tensor& bias,
                          const OneDnnConv* fast, const torch::Tensor& skip, torch::Tensor* workspace) {
    namespace F = torch::nn::functional;
    // the transposed convolution's count: every input element feeds out x 3 x 3 outputs
    add_macs(x.numel() * (kernel.size(0) / 4) * 9);
    if (auto y = fast ? fast->forward(x) : torch::Tensor(); y.defined())  // padded by the convolution
        return shuffle_concat(y, skip.defined() ? skip.to(y.scalar_type()) : skip, workspace);
    auto y = torch::pixel_shuffle(torch::conv2d(F::pad(x, F::PadFuncOptions({0, 1, 0, 1})), kernel, bias), 2);
    return skip.defined() ? torch::cat({y, skip}, 1) : y;
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

bool extra_bool(const ModelOptions& o, const std::string& key, bool fallback) {
    if (!o.extra.is_object() || !o.extra.contains(key)) return fallback;
    const auto& v = o.extra.at(key);
    if (!v.is_boolean())
        throw ConfigError("model option " + quote(key) + " of " + quote(o.arch) + " must be true or false, got " +
                          v.dump());
    return v.get<bool>();
}

double extra_number(const ModelOptions& o, const std::string& key, double fallback, double lo, double hi) {
    if (!o.extra.is_object() || !o.extra.contains(key)) return fallback;
    const auto& v = o.extra.at(key);
    if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() < hi)) {
        std::ostringstream range;
        range << "a number in [" << lo << ", " << hi << ")";
        throw ConfigError("model option " + quote(key) + " of " + quote(o.arch) + " must be " + range.str() +
                          ", got " + v.dump());
    }
    return v.get<double>();
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
