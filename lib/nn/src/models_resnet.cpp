// The two families with a width option: resnet-fpn (Siamese ResNet encoder + feature
// pyramid decoder) and bit (Siamese ResNet encoder + a small token transformer, after
// Chen, Qi & Shi, "Remote sensing image change detection with transformers", 2021).
#include <cmath>

#include "cdk/core/error.hpp"
#include "cdk/nn/kdmsi.hpp"
#include "layers.hpp"

namespace cdk::nn::detail {

namespace {

namespace F = torch::nn::functional;

ConvBnRelu cbr(int64_t in, int64_t out, int64_t kernel = 3, int64_t stride = 1, bool relu = true) {
    ConvBnReluOptions o;
    o.in = in;
    o.out = out;
    o.kernel = kernel;
    o.stride = stride;
    o.relu = relu;
    return ConvBnRelu(o);
}

torch::Tensor upsample_to(const torch::Tensor& x, const torch::Tensor& like, bool nearest = false) {
    const std::vector<int64_t> size = {like.size(2), like.size(3)};
    if (nearest) return F::interpolate(x, F::InterpolateFuncOptions().size(size).mode(torch::kNearest));
    return F::interpolate(x, F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false));
}

// ResNet BasicBlock: two 3x3 conv-BN, identity (or 1x1 projection) shortcut, ReLU.
struct BasicBlockImpl : torch::nn::Module {
    BasicBlockImpl(int64_t in, int64_t out, int64_t stride) {
        c1_ = register_module("c1", cbr(in, out, 3, stride));
        c2_ = register_module("c2", cbr(out, out, 3, 1, false));
        if (in != out || stride != 1) short_ = register_module("shortcut", cbr(in, out, 1, stride, false));
    }
    torch::Tensor forward(const torch::Tensor& x) {
        auto y = c2_->forward(c1_->forward(x));
        if (inference_only()) return y.add_(short_ ? short_->forward(x) : x).relu_();
        return torch::relu(y + (short_ ? short_->forward(x) : x));
    }
    ConvBnRelu c1_{nullptr}, c2_{nullptr}, short_{nullptr};
};
TORCH_MODULE(BasicBlock);

// Stem (3x3, stride 2, w channels) then `stages` stages of `blocks` BasicBlocks with
// w, 2w, 4w, 8w channels at output strides 2, 4, 8, 16.
struct ResEncoderImpl : torch::nn::Module {
    ResEncoderImpl(int64_t in, int64_t w, int stages, int blocks) {
        stem_ = register_module("stem", cbr(in, w, 3, 2));
        int64_t c = w;
        for (int s = 0; s < stages; ++s) {
            const int64_t out = w << s;
            torch::nn::Sequential seq;
            for (int b = 0; b < blocks; ++b) {
                seq->push_back(BasicBlock(b == 0 ? c : out, out, (b == 0 && s > 0) ? 2 : 1));
            }
            c = out;
            channels.push_back(out);
            stages_.push_back(register_module("stage" + std::to_string(s + 1), seq));
        }
    }
    std::vector<torch::Tensor> forward(const torch::Tensor& x) {
        std::vector<torch::Tensor> feats;
        auto y = stem_->forward(x);
        for (auto& s : stages_) {
            y = s->forward(y);
            feats.push_back(y);
        }
        return feats;
    }
    ConvBnRelu stem_{nullptr};
    std::vector<torch::nn::Sequential> stages_;
    std::vector<int64_t> channels;
};
TORCH_MODULE(ResEncoder);

// ---------------------------------------------------------------------------- resnet-fpn

class ResNetFpnImpl : public ChangeModelImpl {
public:
    explicit ResNetFpnImpl(const ModelOptions& o) : ChangeModelImpl(o) {
        check_extra_keys(o, {"blocks", "fusion", "fpn_channels"});
        const int blocks = extra_int(o, "blocks", 2);
        const std::string fusion = extra_string(o, "fusion", "diff");
        if (fusion != "diff" && fusion != "concat")
            throw ConfigError("model option 'fusion' of " + quote(o.arch) + " must be 'diff' or 'concat', got " +
                              quote(fusion));
        concat_ = fusion == "concat";
        const int64_t w = o.width;
        const int64_t f = extra_int(o, "fpn_channels", int(std::max<int64_t>(2 * w, 16)));
        encoder_ = register_module("encoder", ResEncoder(o.in_bands, w, 4, blocks));
        for (size_t i = 0; i < encoder_->channels.size(); ++i) {
            const int64_t c = encoder_->channels[i];
            const auto n = std::to_string(i + 1);
            if (concat_) fuse_.push_back(register_module("fuse" + n, cbr(2 * c, c, 1)));
            lateral_.push_back(register_module("lateral" + n, torch::nn::Conv2d(torch::nn::Conv2dOptions(c, f, 1))));
            smooth_.push_back(register_module("smooth" + n, cbr(f, f)));
        }
        head_ = register_module("head", cbr(f, f));
        classifier_ = register_module("classifier", torch::nn::Conv2d(torch::nn::Conv2dOptions(f, 2, 1)));
    }

    bool local() const override { return true; }

    ChangeOutput forward(const torch::Tensor& pre, const torch::Tensor& post) override {
        check_pair(pre, post, options_.in_bands, options_.arch);
        const int64_t h = pre.size(2), w = pre.size(3);
        const auto a = pad_to_multiple(pre, 16), b = pad_to_multiple(post, 16);
        const auto fa = encoder_->forward(a), fb = encoder_->forward(b);
        ChangeOutput out;
        std::vector<torch::Tensor> fused;
        for (size_t i = 0; i < fa.size(); ++i) {
            fused.push_back(concat_ ? fuse_[i]->forward(torch::cat({fa[i], fb[i]}, 1)) : abs_diff(fa[i], fb[i]));
            const int64_t stride = int64_t(2) << i;
            out.features_pre.push_back(crop_feature(fa[i], h, w, stride));
            out.features_post.push_back(crop_feature(fb[i], h, w, stride));
            out.features_fused.push_back(crop_feature(fused[i], h, w, stride));
        }
        // Top-down pathway, then every level upsampled to stride 2 and summed.
        const size_t n = fused.size();
        std::vector<torch::Tensor> p(n);
        p[n - 1] = conv(lateral_[n - 1], fused[n - 1]);
        for (size_t i = n - 1; i-- > 0;) p[i] = conv(lateral_[i], fused[i]) + upsample_to(p[i + 1], fused[i], true);
        torch::Tensor sum;
        for (size_t i = 0; i < n; ++i) {
            auto s = smooth_[i]->forward(p[i]);
            if (i > 0) s = upsample_to(s, p[0]);
            sum = sum.defined() ? sum + s : s;
        }
        auto logits = conv(classifier_, head_->forward(sum));
        logits = upsample_to(logits, a);
        out.logits = crop(logits, h, w);
        return out;
    }

private:
    bool concat_ = false;
    ResEncoder encoder_{nullptr};
    std::vector<ConvBnRelu> fuse_;
    std::vector<torch::nn::Conv2d> lateral_;
    std::vector<ConvBnRelu> smooth_;
    ConvBnRelu head_{nullptr};
    torch::nn::Conv2d classifier_{nullptr};
};

// ---------------------------------------------------------------------------- bit

// Multi-head attention on [N, L, d] tensors (batch first), counted by the FLOP counter.
struct AttentionImpl : torch::nn::Module {
    AttentionImpl(int64_t dim, int64_t heads) : heads_(heads) {
        q_ = register_module("q", torch::nn::Linear(dim, dim));
        k_ = register_module("k", torch::nn::Linear(dim, dim));
        v_ = register_module("v", torch::nn::Linear(dim, dim));
        o_ = register_module("o", torch::nn::Linear(dim, dim));
    }
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context) {
        const int64_t n = x.size(0), lq = x.size(1), lk = context.size(1), d = x.size(2), dh = d / heads_;
        auto split = [&](const torch::Tensor& t, int64_t l) { return t.view({n, l, heads_, dh}).transpose(1, 2); };
        const auto q = split(linear(q_, x), lq);
        const auto k = split(linear(k_, context), lk);
        const auto v = split(linear(v_, context), lk);
        const auto att = torch::softmax(detail::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(dh)), -1);
        const auto y = detail::matmul(att, v).transpose(1, 2).reshape({n, lq, d});
        return linear(o_, y);
    }
    int64_t heads_;
    torch::nn::Linear q_{nullptr}, k_{nullptr}, v_{nullptr}, o_{nullptr};
};
TORCH_MODULE(Attention);

// Pre-norm transformer layer: x + Attn(LN(x), ctx), then x + MLP(LN(x)).
// Self-attention when ctx is the (normalised) input itself.
struct TransformerLayerImpl : torch::nn::Module {
    TransformerLayerImpl(int64_t dim, int64_t heads, bool cross) : cross_(cross) {
        norm1_ = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
        attn_ = register_module("attn", Attention(dim, heads));
        norm2_ = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
        fc1_ = register_module("fc1", torch::nn::Linear(dim, 2 * dim));
        fc2_ = register_module("fc2", torch::nn::Linear(2 * dim, dim));
    }
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context) {
        const auto xn = norm1_->forward(x);
        auto y = x + attn_->forward(xn, cross_ ? context : xn);
        return y + linear(fc2_, F::gelu(linear(fc1_, norm2_->forward(y))));
    }
    bool cross_;
    torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
    Attention attn_{nullptr};
    torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(TransformerLayer);

class BitImpl : public ChangeModelImpl {
public:
    explicit BitImpl(const ModelOptions& o) : ChangeModelImpl(o) {
        check_extra_keys(o, {"blocks", "tokens", "layers", "decoder_layers", "heads", "dim"});
        const int blocks = extra_int(o, "blocks", 2);
        tokens_ = extra_int(o, "tokens", 4);
        const int layers = extra_int(o, "layers", 1);
        const int dec_layers = extra_int(o, "decoder_layers", 1);
        const int heads = extra_int(o, "heads", 4);
        const int64_t w = o.width;
        dim_ = extra_int(o, "dim", int(std::max<int64_t>(2 * w, 16)));
        if (dim_ % heads != 0)
            throw ConfigError("model " + quote(o.arch) + ": token dimension " + std::to_string(dim_) +
                              " is not a multiple of " + std::to_string(heads) + " heads");
        encoder_ = register_module("encoder", ResEncoder(o.in_bands, w, 3, blocks));
        project_ = register_module("project", cbr(2 * w + 4 * w, dim_));
        tokenizer_ = register_module("tokenizer", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim_, tokens_, 1)));
        pos_ = register_parameter("token_pos", torch::randn({1, 2 * int64_t(tokens_), dim_}) * 0.02);
        for (int i = 0; i < layers; ++i)
            encoder_layers_.push_back(
                register_module("transformer" + std::to_string(i + 1), TransformerLayer(dim_, heads, false)));
        for (int i = 0; i < dec_layers; ++i)
            decoder_layers_.push_back(
                register_module("decoder" + std::to_string(i + 1), TransformerLayer(dim_, heads, true)));
        head_ = register_module("head", cbr(dim_, dim_));
        classifier_ = register_module("classifier",
                                      torch::nn::Conv2d(torch::nn::Conv2dOptions(dim_, 2, 3).padding(1)));
    }

    ChangeOutput forward(const torch::Tensor& pre, const torch::Tensor& post) override {
        check_pair(pre, post, options_.in_bands, options_.arch);
        const int64_t h = pre.size(2), w = pre.size(3);
        const auto a = pad_to_multiple(pre, 8), b = pad_to_multiple(post, 8);
        const auto fa = encoder_->forward(a), fb = encoder_->forward(b);
        // Pixel features at stride 4: stage 2 with stage 3 upsampled.
        auto pixels = [&](const std::vector<torch::Tensor>& f) {
            return project_->forward(torch::cat({f[1], upsample_to(f[2], f[1])}, 1));
        };
        const auto xa = pixels(fa), xb = pixels(fb);
        const int64_t n = xa.size(0), hh = xa.size(2), ww = xa.size(3);
        // Tokenizer: L spatial attention maps pool the pixel features into L tokens.
        auto tokenize = [&](const torch::Tensor& x) {
            const auto att = torch::softmax(conv(tokenizer_, x).flatten(2), -1);  // [N, L, HW]
            return detail::matmul(att, x.flatten(2).transpose(1, 2));                     // [N, L, d]
        };
        auto t = torch::cat({tokenize(xa), tokenize(xb)}, 1) + pos_;
        for (auto& layer : encoder_layers_) t = layer->forward(t, t);
        const auto ta = t.narrow(1, 0, tokens_), tb = t.narrow(1, tokens_, tokens_);
        // Decoder: pixels attend to their date's refined tokens.
        auto decode = [&](const torch::Tensor& x, const torch::Tensor& tok) {
            auto q = x.flatten(2).transpose(1, 2);  // [N, HW, d]
            for (auto& layer : decoder_layers_) q = layer->forward(q, tok);
            return q.transpose(1, 2).reshape({n, dim_, hh, ww});
        };
        const auto da = decode(xa, ta), db = decode(xb, tb);
        const auto diff = torch::abs(da - db);
        ChangeOutput out;
        for (size_t i = 0; i < fa.size(); ++i) {
            const int64_t stride = int64_t(2) << i;
            out.features_pre.push_back(crop_feature(fa[i], h, w, stride));
            out.features_post.push_back(crop_feature(fb[i], h, w, stride));
            out.features_fused.push_back(crop_feature(torch::abs(fa[i] - fb[i]), h, w, stride));
        }
        out.features_pre.push_back(crop_feature(da, h, w, 4));
        out.features_post.push_back(crop_feature(db, h, w, 4));
        out.features_fused.push_back(crop_feature(diff, h, w, 4));
        const auto logits = upsample_to(conv(classifier_, head_->forward(diff)), a);
        out.logits = crop(logits, h, w);
        return out;
    }

private:
    int64_t tokens_ = 4;
    int64_t dim_ = 32;
    ResEncoder encoder_{nullptr};
    ConvBnRelu project_{nullptr};
    torch::nn::Conv2d tokenizer_{nullptr};
    torch::Tensor pos_;
    std::vector<TransformerLayer> encoder_layers_, decoder_layers_;
    ConvBnRelu head_{nullptr};
    torch::nn::Conv2d classifier_{nullptr};
};


// ---------------------------------------------------------------------------- kd-msi-cam

// One Siamese classifier of KD-MSI: shared encoder, fusion of the deepest features, 1x1
// convolution without bias to the class activation map F.
struct CamNetImpl : torch::nn::Module {
    CamNetImpl(int64_t in, int64_t w, int stages, int blocks, std::string fusion) : fusion_(std::move(fusion)) {
        encoder_ = register_module("encoder", ResEncoder(in, w, stages, blocks));
        const int64_t c = encoder_->channels.back() * (fusion_ == "cat" ? 2 : 1);
        cam_ = register_module("cam", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, 1, 1).bias(false)));
    }
    // F at the encoder's output stride; `fa`, `fb` get the dates' features when given.
    torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b, std::vector<torch::Tensor>* fa = nullptr,
                          std::vector<torch::Tensor>* fb = nullptr, torch::Tensor* fused_out = nullptr) {
        const auto pa = encoder_->forward(a), pb = encoder_->forward(b);
        const auto& x = pa.back();
        const auto& y = pb.back();
        torch::Tensor fused = fusion_ == "abs" ? torch::abs(y - x) : fusion_ == "minus" ? y - x : torch::cat({y, x}, 1);
        if (fa) *fa = pa;
        if (fb) *fb = pb;
        if (fused_out) *fused_out = fused;
        return conv(cam_, fused);
    }
    std::string fusion_;
    ResEncoder encoder_{nullptr};
    torch::nn::Conv2d cam_{nullptr};
};
TORCH_MODULE(CamNet);

std::string cam_fusion(const ModelOptions& o, const std::string& key, const std::string& fallback) {
    const std::string f = extra_string(o, key, fallback);
    if (f != "abs" && f != "minus" && f != "cat")
        throw ConfigError("model option " + quote(key) + " of " + quote(o.arch) + " must be abs, minus or cat, got " +
                          quote(f));
    return f;
}

class CamPairImpl : public CamPairModelImpl {
public:
    explicit CamPairImpl(const ModelOptions& o) : CamPairModelImpl(o) {
        check_extra_keys(o, {"teacher_fusion", "student_fusion", "teacher_width", "blocks", "stages"});
        const int blocks = extra_int(o, "blocks", 2);
        const int stages = extra_int(o, "stages", 4);
        if (stages < 2 || stages > 4)
            throw ConfigError("model option 'stages' of " + quote(o.arch) + " must be 2, 3 or 4, got " +
                              std::to_string(stages));
        stride_ = int64_t(1) << stages;  // the stem halves, then every stage after the first
        const int teacher_width = extra_int(o, "teacher_width", o.width);
        teacher_ = register_module("teacher", CamNet(o.in_bands, teacher_width, stages, blocks,
                                                     teacher_fusion(o)));
        student_ = register_module("student", CamNet(o.in_bands, o.width, stages, blocks,
                                                     student_fusion(o)));
    }

    // The maps (and so the logits) are convolutional; the image logit, and so MSI's gate,
    // depends on the whole window: MsiPredictor is not local.
    bool local() const override { return true; }
    int64_t stride() const override { return stride_; }

    torch::Tensor student_cam(const torch::Tensor& pre, const torch::Tensor& post) override {
        return student_->forward(pre, post);
    }
    torch::Tensor teacher_cam(const torch::Tensor& pre, const torch::Tensor& post) override {
        return teacher_->forward(pre, post);
    }

    ChangeOutput forward(const torch::Tensor& pre, const torch::Tensor& post) override {
        check_pair(pre, post, options_.in_bands, options_.arch);
        const int64_t h = pre.size(2), w = pre.size(3);
        const auto a = pad_to_multiple(pre, stride_), b = pad_to_multiple(post, stride_);
        ChangeOutput out;
        std::vector<torch::Tensor> fa, fb;
        torch::Tensor fused;
        const auto fs = student_->forward(a, b, &fa, &fb, &fused);
        const auto ft = teacher_->forward(a, b);
        for (size_t i = 0; i < fa.size(); ++i) {
            const int64_t s = int64_t(2) << i;
            out.features_pre.push_back(crop_feature(fa[i], h, w, s));
            out.features_post.push_back(crop_feature(fb[i], h, w, s));
        }
        out.features_fused.push_back(crop_feature(fused, h, w, stride_));
        out.cam = crop_feature(fs, h, w, stride_);
        out.cam_teacher = crop_feature(ft, h, w, stride_);
        out.image_logits = out.cam_teacher.mean({1, 2, 3});
        const auto up = crop(upsample_to(fs, a), h, w);
        out.logits = torch::cat({up * -0.5, up * 0.5}, 1);
        return out;
    }

private:
    int64_t stride_ = 16;
    CamNet teacher_{nullptr}, student_{nullptr};
};

}  // namespace

ChangeModel make_resnet_fpn(const ModelOptions& o) { return std::make_shared<ResNetFpnImpl>(o); }
ChangeModel make_bit(const ModelOptions& o) { return std::make_shared<BitImpl>(o); }
ChangeModel make_cam_pair(const ModelOptions& o) { return std::make_shared<CamPairImpl>(o); }

}  // namespace cdk::nn::detail

namespace cdk::nn {

std::string teacher_fusion(const ModelOptions& options) { return detail::cam_fusion(options, "teacher_fusion", "abs"); }
std::string student_fusion(const ModelOptions& options) { return detail::cam_fusion(options, "student_fusion", "abs"); }

}  // namespace cdk::nn
