#include "fused_bn.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "env_switch.hpp"

namespace cdk::nn::detail {

namespace {

std::atomic<bool>& enabled_flag() {
    static std::atomic<bool> on{env_switch_on("CDK_FUSED_BN")};
    return on;
}

// The kernels work on a channels-last activation as R = N*H*W rows of C values; row r
// belongs to image r / hw, whose Dropout2d factors are mask[(r / hw) * C + c].
constexpr int64_t kBlock = 64;

// One row each. Plain loops that GCC vectorises, given pointers it knows do not alias
// (restrict-qualified parameters keep that knowledge when inlined; pointers declared
// inside a loop do not) and no branch inside (a comparison turned into a branch leaves
// the loop scalar: hence the multiplication by the ReLU mask, and -fno-trapping-math).
#define CDK_ROW inline __attribute__((always_inline))

CDK_ROW void stats_row(const float* __restrict x, float* __restrict s, float* __restrict q, int64_t C) {
    for (int64_t c = 0; c < C; ++c) {
        s[c] += x[c];
        q[c] += x[c] * x[c];
    }
}

// y = dropout(relu(x * scale + shift))
template <bool Relu, bool Mask>
CDK_ROW void apply_row(const float* __restrict x, float* __restrict y, const float* __restrict scale,
                       const float* __restrict shift, const float* __restrict m, int64_t C) {
    for (int64_t c = 0; c < C; ++c) {
        float v = x[c] * scale[c] + shift[c];
        if (Relu) v = std::max(v, 0.f);
        if (Mask) v *= m[c];
        y[c] = v;
    }
}

// The gradient reaching the batch norm's output: dy through the dropout factor and the
// ReLU, whose mask is recomputed from x exactly as apply_row computed it.
template <bool Relu, bool Mask>
CDK_ROW float bn_grad(float dy, float x, float scale, float shift, float m) {
    float g = Mask ? dy * m : dy;
    if (Relu) g *= static_cast<float>(x * scale + shift > 0.f);
    return g;
}

// s += g, t += g * (x - mean)
template <bool Relu, bool Mask>
CDK_ROW void grad_stats_row(const float* __restrict dy, const float* __restrict x, const float* __restrict scale,
                            const float* __restrict shift, const float* __restrict m, const float* __restrict mean,
                            float* __restrict s, float* __restrict t, int64_t C) {
    for (int64_t c = 0; c < C; ++c) {
        const float g = bn_grad<Relu, Mask>(dy[c], x[c], scale[c], shift[c], Mask ? m[c] : 1.f);
        s[c] += g;
        t[c] += g * (x[c] - mean[c]);
    }
}

// dx = k1 * g + k2 * (x - mean) + k3
template <bool Relu, bool Mask>
CDK_ROW void grad_apply_row(const float* __restrict dy, const float* __restrict x, float* __restrict dx,
                            const float* __restrict scale, const float* __restrict shift, const float* __restrict m,
                            const float* __restrict mean, const float* __restrict k1, const float* __restrict k2,
                            const float* __restrict k3, int64_t C) {
    for (int64_t c = 0; c < C; ++c) {
        const float g = bn_grad<Relu, Mask>(dy[c], x[c], scale[c], shift[c], Mask ? m[c] : 1.f);
        dx[c] = k1[c] * g + k2[c] * (x[c] - mean[c]) + k3[c];
    }
}

// The row loops. Sums are kept in float over blocks of kBlock rows and added into double,
// so long reductions stay accurate without converting every element.
void stats_rows(const float* x, int64_t r0, int64_t r1, int64_t C, double* sum, double* sq) {
    std::vector<float> s(C), q(C);
    for (int64_t b = r0; b < r1; b += kBlock) {
        std::fill(s.begin(), s.end(), 0.f);
        std::fill(q.begin(), q.end(), 0.f);
        for (int64_t r = b, e = std::min(r1, b + kBlock); r < e; ++r) stats_row(x + r * C, s.data(), q.data(), C);
        for (int64_t c = 0; c < C; ++c) {
            sum[c] += s[c];
            sq[c] += q[c];
        }
    }
}

template <bool Relu, bool Mask>
void apply_rows(const float* x, float* y, int64_t r0, int64_t r1, int64_t C, int64_t hw, const float* scale,
                const float* shift, const float* mask) {
    for (int64_t r = r0; r < r1; ++r)
        apply_row<Relu, Mask>(x + r * C, y + r * C, scale, shift, Mask ? mask + (r / hw) * C : scale, C);
}

template <bool Relu, bool Mask>
void grad_stats_rows(const float* dy, const float* x, int64_t r0, int64_t r1, int64_t C, int64_t hw,
                     const float* scale, const float* shift, const float* mask, const float* mean, double* sg,
                     double* sgx) {
    std::vector<float> s(C), t(C);
    for (int64_t b = r0; b < r1; b += kBlock) {
        std::fill(s.begin(), s.end(), 0.f);
        std::fill(t.begin(), t.end(), 0.f);
        for (int64_t r = b, e = std::min(r1, b + kBlock); r < e; ++r)
            grad_stats_row<Relu, Mask>(dy + r * C, x + r * C, scale, shift, Mask ? mask + (r / hw) * C : scale,
                                       mean, s.data(), t.data(), C);
        for (int64_t c = 0; c < C; ++c) {
            sg[c] += s[c];
            sgx[c] += t[c];
        }
    }
}

template <bool Relu, bool Mask>
void grad_apply_rows(const float* dy, const float* x, float* dx, int64_t r0, int64_t r1, int64_t C, int64_t hw,
                     const float* scale, const float* shift, const float* mask, const float* mean, const float* k1,
                     const float* k2, const float* k3) {
    for (int64_t r = r0; r < r1; ++r)
        grad_apply_row<Relu, Mask>(dy + r * C, x + r * C, dx + r * C, scale, shift,
                                   Mask ? mask + (r / hw) * C : scale, mean, k1, k2, k3, C);
}

// Run f(r0, r1) over [0, rows) on ATen's threads, one contiguous share per thread, and
// return the per-share double accumulators (2 * C each) summed.
template <class F>
std::vector<double> reduce_rows(int64_t rows, int64_t C, const F& f) {
    const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / kBlock));
    std::vector<double> acc(shares * 2 * C, 0.0);
    at::parallel_for(0, shares, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t)
            f(rows * t / shares, rows * (t + 1) / shares, acc.data() + t * 2 * C, acc.data() + t * 2 * C + C);
    });
    for (int64_t t = 1; t < shares; ++t)
        for (int64_t c = 0; c < 2 * C; ++c) acc[c] += acc[t * 2 * C + c];
    acc.resize(2 * C);
    return acc;
}

constexpr int64_t kGrain = 256;  // rows per parallel task in the element-wise passes

// Call f(relu, mask) with the two flags as std::integral_constant, so that f can pick the
// row kernel's instantiation: f(r, m) { kernel<r(), m()>(...); }.
template <class F>
void with_flags(bool relu, bool mask, const F& f) {
    using T = std::true_type;
    using N = std::false_type;
    if (relu && mask) f(T{}, T{});
    else if (relu) f(T{}, N{});
    else if (mask) f(N{}, T{});
    else f(N{}, N{});
}

const auto kCl = torch::MemoryFormat::ChannelsLast;

// Inputs x, weight, bias (differentiable); mean, invstd (the batch's, float32 [C]) and the
// Dropout2d factors mask ([N, C], or empty: no dropout) as constants. (An undefined tensor
// cannot pass through Function::apply, hence empty.)
struct FusedBnFunction : torch::autograd::Function<FusedBnFunction> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                 const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
                                 const torch::Tensor& invstd, const torch::Tensor& mask, bool relu) {
        const int64_t C = x.size(1), hw = x.size(2) * x.size(3), rows = x.numel() / C;
        const auto scale = (weight * invstd).contiguous();
        const auto shift = (bias - mean * scale).contiguous();
        auto y = torch::empty_like(x, x.options().memory_format(kCl));
        const float* xp = x.data_ptr<float>();
        float* yp = y.data_ptr<float>();
        const float* sp = scale.data_ptr<float>();
        const float* hp = shift.data_ptr<float>();
        const float* mp = mask.numel() > 0 ? mask.data_ptr<float>() : nullptr;
        at::parallel_for(0, rows, kGrain, [&](int64_t r0, int64_t r1) {
            with_flags(relu, mp != nullptr,
                       [&](auto r, auto m) { apply_rows<r(), m()>(xp, yp, r0, r1, C, hw, sp, hp, mp); });
        });
        ctx->save_for_backward({x, weight, mean, invstd, scale, shift});
        ctx->saved_data["relu"] = relu;
        if (mp) ctx->saved_data["mask"] = mask;
        return y;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const auto &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3];
        const auto &scale = saved[4], &shift = saved[5];
        const bool relu = ctx->saved_data["relu"].toBool();
        const auto mask = ctx->saved_data.count("mask") ? ctx->saved_data["mask"].toTensor() : torch::Tensor();
        if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
                                         torch::Tensor(), torch::Tensor(), torch::Tensor()};
        const auto dy = grads[0].contiguous(kCl);
        const int64_t C = x.size(1), hw = x.size(2) * x.size(3), rows = x.numel() / C;
        const float* dp = dy.data_ptr<float>();
        const float* xp = x.data_ptr<float>();
        const float* sp = scale.data_ptr<float>();
        const float* hp = shift.data_ptr<float>();
        const float* mp = mask.defined() ? mask.data_ptr<float>() : nullptr;
        const float* mu = mean.data_ptr<float>();
        const auto acc = reduce_rows(rows, C, [&](int64_t r0, int64_t r1, double* sg, double* sgx) {
            with_flags(relu, mp != nullptr, [&](auto r, auto m) {
                grad_stats_rows<r(), m()>(dp, xp, r0, r1, C, hw, sp, hp, mp, mu, sg, sgx);
            });
        });
        // dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * invstd
        auto k1 = torch::empty({C}, x.options()), k2 = torch::empty({C}, x.options()),
             k3 = torch::empty({C}, x.options()), dweight = torch::empty({C}, x.options()),
             dbias = torch::empty({C}, x.options());
        const auto w = weight.contiguous();
        const float* wp = w.data_ptr<float>();
        const float* ip = invstd.data_ptr<float>();
        float *k1p = k1.data_ptr<float>(), *k2p = k2.data_ptr<float>(), *k3p = k3.data_ptr<float>();
        float *dwp = dweight.data_ptr<float>(), *dbp = dbias.data_ptr<float>();
        for (int64_t c = 0; c < C; ++c) {
            const double sg = acc[c], sgx = acc[C + c], is = ip[c], a = double(wp[c]) * is;
            k1p[c] = float(a);
            k2p[c] = float(-a * is * is * sgx / double(rows));
            k3p[c] = float(-a * sg / double(rows));
            dwp[c] = float(sgx * is);
            dbp[c] = float(sg);
        }
        auto dx = torch::empty_like(x, x.options().memory_format(kCl));
        float* op = dx.data_ptr<float>();
        at::parallel_for(0, rows, kGrain, [&](int64_t r0, int64_t r1) {
            with_flags(relu, mp != nullptr, [&](auto r, auto m) {
                grad_apply_rows<r(), m()>(dp, xp, op, r0, r1, C, hw, sp, hp, mp, mu, k1p, k2p, k3p);
            });
        });
        return {dx, dweight, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

}  // namespace

bool fused_bn_enabled() { return enabled_flag().load(); }

bool set_fused_bn_enabled(bool on) { return enabled_flag().exchange(on); }

torch::Tensor fused_bn_relu_dropout(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, bool relu,
                                    double dropout) {
    const auto& o = bn.options;
    if (!fused_bn_enabled() || !bn.is_training() || !o.affine() || !o.track_running_stats()) return {};
    if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat || x.dim() != 4 || !x.is_contiguous(kCl) ||
        x.size(0) * x.size(2) * x.size(3) < 2 || x.size(1) != bn.weight.size(0) ||
        bn.weight.scalar_type() != torch::kFloat || dropout < 0 || dropout >= 1)
        return {};
    const int64_t C = x.size(1), rows = x.numel() / C;

    // The batch's statistics (biased variance, as batch norm normalises with).
    torch::Tensor mean = torch::empty({C}, x.options()), invstd = torch::empty({C}, x.options());
    double momentum = o.momentum().value_or(0.0);
    {
        const float* xp = x.data_ptr<float>();
        const auto acc = reduce_rows(rows, C, [&](int64_t r0, int64_t r1, double* s, double* q) {
            stats_rows(xp, r0, r1, C, s, q);
        });
        torch::NoGradGuard no_grad;
        auto unbiased = torch::empty({C}, x.options());  // for the running variance
        float *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>(), *up = unbiased.data_ptr<float>();
        for (int64_t c = 0; c < C; ++c) {
            const double m = acc[c] / double(rows), var = std::max(0.0, acc[C + c] / double(rows) - m * m);
            mp[c] = float(m);
            ip[c] = float(1.0 / std::sqrt(var + o.eps()));
            up[c] = float(var * (double(rows) / double(rows - 1)));
        }
        // The running statistics, as BatchNorm2d's forward updates them (unbiased variance).
        if (bn.num_batches_tracked.defined()) {
            bn.num_batches_tracked += 1;
            if (!o.momentum()) momentum = 1.0 / bn.num_batches_tracked.item<double>();
        }
        bn.running_mean.mul_(1 - momentum).add_(mean.to(bn.running_mean.scalar_type()), momentum);
        bn.running_var.mul_(1 - momentum).add_(unbiased.to(bn.running_var.scalar_type()), momentum);
    }
    // Dropout2d's factors, drawn as LibTorch's feature dropout draws them.
    torch::Tensor mask = torch::empty({0}, x.options());
    if (dropout > 0) {
        torch::NoGradGuard no_grad;
        mask = torch::empty({x.size(0), C, 1, 1}, x.options()).bernoulli_(1 - dropout).div_(1 - dropout);
    }
    return FusedBnFunction::apply(x, bn.weight, bn.bias, mean, invstd, mask, relu);
}

}  // namespace cdk::nn::detail
