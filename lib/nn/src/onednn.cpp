#include "onednn.hpp"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#ifdef CDK_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "env_switch.hpp"

namespace cdk::nn::detail {

#ifdef CDK_HAVE_ONEDNN

namespace {

std::atomic<bool>& enabled_flag() {
    static std::atomic<bool> on{env_switch_on("CDK_ONEDNN")};
    return on;
}

dnnl::engine& cpu_engine() {
    static dnnl::engine e(dnnl::engine::kind::cpu, 0);
    return e;
}

// Whether oneDNN picked one of its reference kernels (no optimised one for this shape or
// CPU): far slower than LibTorch's own fallback, so those are left to LibTorch.
bool reference_kernel(const char* impl_info) { return std::string(impl_info).rfind("ref", 0) == 0; }

// Float32 3x3 convolutions with at least 64 input and output channels run as Winograd
// F(4x4, 3x3) in the inference form (fewer multiplications; measured faster from 64
// channels on, slower at 16 to 32), and from 32 channels on in training, where the
// backward passes gain as much (docs/benchmarks.md). CDK_ONEDNN_WINOGRAD=0 switches it
// off, =N sets both floors to N.
int64_t winograd_min_channels(bool training = false) {
    static const int64_t floor = [] {
        const char* e = std::getenv("CDK_ONEDNN_WINOGRAD");
        return e != nullptr ? int64_t(std::max(0, std::atoi(e))) : int64_t(-1);
    }();
    if (floor >= 0) return floor;
    return training ? 32 : 64;
}

// A descriptor for a float32 tensor's own sizes and strides (any dense layout).
dnnl::memory::desc strided_md(const torch::Tensor& t) {
    return dnnl::memory::desc(dnnl::memory::dims(t.sizes().begin(), t.sizes().end()), dnnl::memory::data_type::f32,
                              dnnl::memory::dims(t.strides().begin(), t.strides().end()));
}

// A fresh buffer in layout `md`, and the memory over it.
std::pair<torch::Tensor, dnnl::memory> blocked(const dnnl::memory::desc& md) {
    auto buf = torch::empty({int64_t(md.get_size())}, torch::kByte);
    return {buf, dnnl::memory(md, cpu_engine(), buf.data_ptr())};
}

// `t` reordered into layout `md` (a fresh buffer, kept alive by the returned tensor).
std::pair<torch::Tensor, dnnl::memory> to_blocked(const torch::Tensor& t, const dnnl::memory::desc& md,
                                                  dnnl::stream& s) {
    auto [buf, m] = blocked(md);
    dnnl::memory u(strided_md(t), cpu_engine(), t.data_ptr());
    dnnl::reorder(u, m).execute(s, u, m);
    return {buf, m};
}

// Reorder `m` into the tensor `t` (its own strides).
void from_blocked(dnnl::memory m, const torch::Tensor& t, dnnl::stream& s) {  // (a handle: cheap to copy)
    dnnl::memory u(strided_md(t), cpu_engine(), t.data_ptr());
    dnnl::reorder(m, u).execute(s, m, u);
}

}  // namespace

bool onednn_enabled() { return enabled_flag().load(); }

bool set_onednn_enabled(bool on) { return enabled_flag().exchange(on); }

struct OneDnnConv::Impl {
    torch::Tensor weight;  // float32 [out, in, kh, kw], contiguous
    torch::Tensor bias;    // float32 [out], contiguous, or undefined
    int64_t stride = 1;
    std::array<int64_t, 4> padding{};  // top, left, bottom, right
    bool relu = false;

    // One primitive per input shape and precision, its weights in the primitive's layout.
    struct Entry {
        bool ok = false;  // false: oneDNN has no implementation here; LibTorch runs it
        dnnl::convolution_forward conv;
        dnnl::memory weights, bias;
        int64_t out_h = 0, out_w = 0;
        // Winograd: blocked source and destination (allocated per call, like any
        // activation), reordered from and to channels-last
        bool winograd = false;
        dnnl::memory::desc blocked_src, blocked_dst;
    };
    std::vector<dnnl::memory> packed;  // weights in each layout a primitive asked for, shared
    std::mutex mutex;  // guards the cache and the primitives' scratchpads
    std::map<std::array<int64_t, 4>, Entry> cache;  // N, H, W, bfloat16?

    // `winograd`: try the Winograd algorithm where it applies (direct if oneDNN has none).
    Entry make(int64_t n, int64_t h, int64_t w, bool bf16, bool winograd = true) {
        using tag = dnnl::memory::format_tag;
        using dt = dnnl::memory::data_type;
        Entry e;
        const int64_t out = weight.size(0), in = weight.size(1), kh = weight.size(2), kw = weight.size(3);
        e.out_h = (h + padding[0] + padding[2] - kh) / stride + 1;
        e.out_w = (w + padding[1] + padding[3] - kw) / stride + 1;
        if (e.out_h < 1 || e.out_w < 1) return e;
        const auto d = bf16 ? dt::bf16 : dt::f32;
        e.winograd = winograd && !bf16 && winograd_min_channels() > 0 && kh == 3 && kw == 3 && stride == 1 &&
                     std::min(in, out) >= winograd_min_channels();
        const auto act = e.winograd ? tag::any : tag::nhwc;  // Winograd takes blocked layouts only
        const dnnl::memory::desc src_md({n, in, h, w}, d, act);
        const dnnl::memory::desc dst_md({n, out, e.out_h, e.out_w}, d, act);
        const dnnl::memory::desc w_md({out, in, kh, kw}, d, tag::any);
        const dnnl::memory::desc b_md({out}, dt::f32, tag::x);
        dnnl::primitive_attr attr;
        if (relu) {
            dnnl::post_ops ops;
            ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
            attr.set_post_ops(ops);
        }
        try {
            const dnnl::memory::dims strides = {stride, stride};
            const dnnl::memory::dims pad_l = {padding[0], padding[1]}, pad_r = {padding[2], padding[3]};
            const auto pk = dnnl::prop_kind::forward_inference;
            const auto alg = e.winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
            const auto desc = bias.defined()
                                  ? dnnl::convolution_forward::desc(pk, alg, src_md, w_md, b_md, dst_md, strides,
                                                                     pad_l, pad_r)
                                  : dnnl::convolution_forward::desc(pk, alg, src_md, w_md, dst_md, strides, pad_l,
                                                                     pad_r);
            const dnnl::convolution_forward::primitive_desc pd(desc, attr, cpu_engine());
            if (reference_kernel(pd.impl_info_str())) throw dnnl::error(dnnl_unimplemented, "reference kernel");
            dnnl::stream s(cpu_engine());
            dnnl::memory user_w({{out, in, kh, kw}, dt::f32, tag::oihw}, cpu_engine(), weight.data_ptr());
            for (const auto& m : packed)
                if (m.get_desc() == pd.weights_desc()) e.weights = m;
            if (!e.weights) {
                e.weights = dnnl::memory(pd.weights_desc(), cpu_engine());
                dnnl::reorder(user_w, e.weights).execute(s, user_w, e.weights);
                packed.push_back(e.weights);
            }
            if (bias.defined()) {
                e.bias = dnnl::memory(pd.bias_desc(), cpu_engine());
                std::memcpy(e.bias.get_data_handle(), bias.data_ptr(), size_t(out) * sizeof(float));
            }
            s.wait();
            e.conv = dnnl::convolution_forward(pd);
            if (e.winograd) {
                e.blocked_src = pd.src_desc();
                e.blocked_dst = pd.dst_desc();
            }
            e.ok = true;
        } catch (const dnnl::error&) {
            if (e.winograd) return make(n, h, w, bf16, false);  // no Winograd on this CPU
            e.ok = false;  // e.g. bfloat16 on a CPU without AVX-512: LibTorch's path
        }
        return e;
    }
};

OneDnnConv::OneDnnConv(const torch::Tensor& weight, const torch::Tensor& bias, int64_t stride,
                       std::array<int64_t, 4> padding, bool relu) {
    if (!weight.defined() || !weight.is_cpu() || weight.dim() != 4 || weight.scalar_type() != torch::kFloat)
        return;  // a CUDA model, or a type this path does not take: LibTorch runs it
    torch::NoGradGuard no_grad;
    impl_ = std::make_shared<Impl>();
    impl_->weight = weight.detach().contiguous().clone();
    if (bias.defined()) impl_->bias = bias.detach().to(torch::kFloat).contiguous().clone();
    impl_->stride = stride;
    impl_->padding = padding;
    impl_->relu = relu;
}

torch::Tensor OneDnnConv::forward(const torch::Tensor& x) const {
    if (!impl_ || !onednn_enabled() || torch::GradMode::is_enabled()) return {};
    if (!x.is_cpu() || x.dim() != 4 || x.size(1) != impl_->weight.size(1)) return {};
    const bool bf16 = at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16;
    const auto want = bf16 ? torch::kBFloat16 : torch::kFloat;
    if (x.scalar_type() != want && !(bf16 && x.scalar_type() == torch::kFloat)) return {};
    if (!x.is_contiguous(torch::MemoryFormat::ChannelsLast)) return {};
    const auto src = x.scalar_type() == want ? x : x.to(want);  // keeps the channels-last strides
    if (!src.is_contiguous(torch::MemoryFormat::ChannelsLast)) return {};

    const int64_t n = src.size(0), h = src.size(2), w = src.size(3);
    std::lock_guard<std::mutex> lock(impl_->mutex);
    const std::array<int64_t, 4> key = {n, h, w, bf16 ? 1 : 0};
    auto it = impl_->cache.find(key);
    if (it == impl_->cache.end()) it = impl_->cache.emplace(key, impl_->make(n, h, w, bf16)).first;
    auto& e = it->second;
    if (!e.ok) return {};
    auto y = torch::empty({n, impl_->weight.size(0), e.out_h, e.out_w},
                          src.options().memory_format(torch::MemoryFormat::ChannelsLast));
    using tag = dnnl::memory::format_tag;
    const auto d = bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
    dnnl::memory src_m({{n, impl_->weight.size(1), h, w}, d, tag::nhwc}, cpu_engine(), src.data_ptr());
    dnnl::memory dst_m({{n, impl_->weight.size(0), e.out_h, e.out_w}, d, tag::nhwc}, cpu_engine(), y.data_ptr());
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, e.weights}, {DNNL_ARG_DST, dst_m}};
    if (impl_->bias.defined()) args.emplace(DNNL_ARG_BIAS, e.bias);
    dnnl::stream s(cpu_engine());
    if (e.winograd) {  // float32 only
        const auto bsrc = to_blocked(src, e.blocked_src, s);
        const auto bdst = blocked(e.blocked_dst);
        args[DNNL_ARG_SRC] = bsrc.second;
        args[DNNL_ARG_DST] = bdst.second;
        e.conv.execute(s, args);
        from_blocked(bdst.second, y, s);
    } else {
        e.conv.execute(s, args);
    }
    s.wait();
    return y;
}

torch::Tensor onednn_max_pool2(const torch::Tensor& x) {
    if (!onednn_enabled() || torch::GradMode::is_enabled() || !x.is_cpu() || x.dim() != 4) return {};
    if (x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kBFloat16) return {};
    if (!x.is_contiguous(torch::MemoryFormat::ChannelsLast) || x.size(2) < 2 || x.size(3) < 2) return {};
    using tag = dnnl::memory::format_tag;
    const auto d = x.scalar_type() == torch::kFloat ? dnnl::memory::data_type::f32 : dnnl::memory::data_type::bf16;
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    auto y = torch::empty({n, c, h / 2, w / 2}, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
    try {
        const dnnl::memory::desc src_md({n, c, h, w}, d, tag::nhwc), dst_md({n, c, h / 2, w / 2}, d, tag::nhwc);
        const dnnl::pooling_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                               src_md, dst_md, {2, 2}, {2, 2}, {0, 0}, {0, 0});
        const dnnl::pooling_forward::primitive_desc pd(desc, cpu_engine());  // oneDNN caches the primitive
        if (reference_kernel(pd.impl_info_str())) return {};
        dnnl::memory src_m(src_md, cpu_engine(), x.data_ptr()), dst_m(dst_md, cpu_engine(), y.data_ptr());
        dnnl::stream s(cpu_engine());
        dnnl::pooling_forward(pd).execute(s, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DST, dst_m}});
        s.wait();
    } catch (const dnnl::error&) {
        return {};
    }
    return y;
}

// ---- Training: Winograd convolutions with their backward passes ----

namespace {

// The Winograd primitives of one training shape (N, in, out, H, W; 3x3, stride 1, padding
// 1), shared by every layer of that shape: none of them depends on the weights.
struct TrainWinograd {
    bool ok = false;  // false: no Winograd on this CPU for this shape; LibTorch runs it
    dnnl::convolution_forward::primitive_desc fpd;
    dnnl::convolution_backward_data::primitive_desc bpd;
    dnnl::convolution_backward_weights::primitive_desc wpd;
    dnnl::convolution_forward fwd;
    dnnl::convolution_backward_data bwd_data;
    dnnl::convolution_backward_weights bwd_weights;
};

std::mutex& train_mutex() {  // guards the cache and the primitives' scratchpads
    static std::mutex m;
    return m;
}

const TrainWinograd& train_winograd(int64_t n, int64_t in, int64_t out, int64_t h, int64_t w) {
    static std::map<std::array<int64_t, 5>, TrainWinograd> cache;
    const std::array<int64_t, 5> key = {n, in, out, h, w};
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    TrainWinograd t;
    try {
        using tag = dnnl::memory::format_tag;
        using dt = dnnl::memory::data_type;
        const dnnl::memory::desc src({n, in, h, w}, dt::f32, tag::any), dst({n, out, h, w}, dt::f32, tag::any),
            wei({out, in, 3, 3}, dt::f32, tag::any);
        const dnnl::memory::dims one = {1, 1};
        const auto alg = dnnl::algorithm::convolution_winograd;
        t.fpd = dnnl::convolution_forward::primitive_desc(
            dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, src, wei, dst, one, one, one),
            cpu_engine());
        t.bpd = dnnl::convolution_backward_data::primitive_desc(
            dnnl::convolution_backward_data::desc(alg, src, wei, dst, one, one, one), cpu_engine(), t.fpd);
        t.wpd = dnnl::convolution_backward_weights::primitive_desc(
            dnnl::convolution_backward_weights::desc(alg, src, wei, dst, one, one, one), cpu_engine(), t.fpd);
        for (const char* info : {t.fpd.impl_info_str(), t.bpd.impl_info_str(), t.wpd.impl_info_str()})
            if (reference_kernel(info)) throw dnnl::error(dnnl_unimplemented, "reference kernel");
        t.fwd = dnnl::convolution_forward(t.fpd);
        t.bwd_data = dnnl::convolution_backward_data(t.bpd);
        t.bwd_weights = dnnl::convolution_backward_weights(t.wpd);
        t.ok = true;
    } catch (const dnnl::error&) {
        t.ok = false;
    }
    return cache.emplace(key, std::move(t)).first->second;
}

const auto kChannelsLast = torch::MemoryFormat::ChannelsLast;

struct WinogradConvFunction : torch::autograd::Function<WinogradConvFunction> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                 const torch::Tensor& weight) {
        const int64_t n = x.size(0), in = x.size(1), h = x.size(2), w = x.size(3), out = weight.size(0);
        auto y = torch::empty({n, out, h, w}, x.options().memory_format(kChannelsLast));
        {
            std::lock_guard<std::mutex> lock(train_mutex());
            const auto& t = train_winograd(n, in, out, h, w);
            dnnl::stream s(cpu_engine());
            const auto src = to_blocked(x, t.fpd.src_desc(), s);
            const auto wei = to_blocked(weight, t.fpd.weights_desc(), s);
            const auto dst = blocked(t.fpd.dst_desc());
            t.fwd.execute(s, {{DNNL_ARG_SRC, src.second}, {DNNL_ARG_WEIGHTS, wei.second}, {DNNL_ARG_DST, dst.second}});
            from_blocked(dst.second, y, s);
            s.wait();
        }
        ctx->save_for_backward({x, weight});
        return y;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const auto &x = saved[0], &weight = saved[1];
        if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor()};
        const auto dy = grads[0].contiguous(kChannelsLast);
        const int64_t n = x.size(0), in = x.size(1), h = x.size(2), w = x.size(3), out = weight.size(0);
        auto dx = torch::empty_like(x, x.options().memory_format(kChannelsLast));
        auto dw = torch::empty_like(weight);
        std::lock_guard<std::mutex> lock(train_mutex());
        const auto& t = train_winograd(n, in, out, h, w);
        dnnl::stream s(cpu_engine());
        const auto ddst = to_blocked(dy, t.bpd.diff_dst_desc(), s);
        {
            const auto wei = to_blocked(weight, t.bpd.weights_desc(), s);
            const auto dsrc = blocked(t.bpd.diff_src_desc());
            t.bwd_data.execute(s, {{DNNL_ARG_DIFF_DST, ddst.second},
                                   {DNNL_ARG_WEIGHTS, wei.second},
                                   {DNNL_ARG_DIFF_SRC, dsrc.second}});
            from_blocked(dsrc.second, dx, s);
        }
        {
            const auto src = to_blocked(x, t.wpd.src_desc(), s);
            const auto wdst = t.wpd.diff_dst_desc() == t.bpd.diff_dst_desc() ? ddst : to_blocked(dy, t.wpd.diff_dst_desc(), s);
            const auto dwei = blocked(t.wpd.diff_weights_desc());
            t.bwd_weights.execute(s, {{DNNL_ARG_SRC, src.second},
                                      {DNNL_ARG_DIFF_DST, wdst.second},
                                      {DNNL_ARG_DIFF_WEIGHTS, dwei.second}});
            from_blocked(dwei.second, dw, s);
        }
        s.wait();
        return {dx, dw};
    }
};

}  // namespace

torch::Tensor onednn_train_conv3x3(const torch::Tensor& x, const torch::Tensor& weight) {
    const int64_t floor = winograd_min_channels(/*training=*/true);
    if (!onednn_enabled() || floor <= 0 || !torch::GradMode::is_enabled() || at::autocast::is_cpu_enabled())
        return {};
    if (!x.is_cpu() || x.scalar_type() != torch::kFloat || x.dim() != 4 || !x.is_contiguous(kChannelsLast))
        return {};
    if (!weight.is_cpu() || weight.scalar_type() != torch::kFloat || weight.dim() != 4 || weight.size(1) != x.size(1) ||
        weight.size(2) != 3 || weight.size(3) != 3 ||
        !(weight.is_contiguous() || weight.is_contiguous(kChannelsLast)))
        return {};
    if (std::min(x.size(1), weight.size(0)) < floor) return {};
    {
        std::lock_guard<std::mutex> lock(train_mutex());
        if (!train_winograd(x.size(0), x.size(1), weight.size(0), x.size(2), x.size(3)).ok) return {};
    }
    return WinogradConvFunction::apply(x, weight);
}

#else  // built without oneDNN: LibTorch runs every convolution

bool onednn_enabled() { return false; }

bool set_onednn_enabled(bool) { return false; }

torch::Tensor onednn_max_pool2(const torch::Tensor&) { return {}; }

torch::Tensor onednn_train_conv3x3(const torch::Tensor&, const torch::Tensor&) { return {}; }

struct OneDnnConv::Impl {};

OneDnnConv::OneDnnConv(const torch::Tensor&, const torch::Tensor&, int64_t, std::array<int64_t, 4>, bool) {}

torch::Tensor OneDnnConv::forward(const torch::Tensor&) const { return {}; }

#endif

}  // namespace cdk::nn::detail
