// Model registry and the FC family of Daudt, Le Saux & Boulch (ICIP 2018): FC-EF,
// FC-Siam-conc and FC-Siam-diff.
#include "cdk/nn/models.hpp"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <functional>
#include <map>
#include <mutex>

#include "cdk/core/error.hpp"
#include "layers.hpp"
#include "onednn.hpp"

namespace cdk::nn {

using detail::ConvBnRelu;
using detail::ConvBnReluOptions;

nlohmann::json to_json(const ModelOptions& o) {
    return {{"arch", o.arch}, {"in_bands", o.in_bands}, {"width", o.width}, {"extra", o.extra}};
}

ModelOptions model_options_from_json(const nlohmann::json& j) {
    if (!j.is_object()) throw ModelError("model options must be a JSON object, got " + j.dump());
    ModelOptions o;
    auto need = [&](const char* key) -> const nlohmann::json& {
        if (!j.contains(key)) throw ModelError(std::string("model options lack ") + quote(key));
        return j.at(key);
    };
    const auto& arch = need("arch");
    if (!arch.is_string()) throw ModelError("model option 'arch' must be a string, got " + arch.dump());
    o.arch = arch.get<std::string>();
    const auto& bands = need("in_bands");
    if (!bands.is_number_integer())
        throw ModelError("model option 'in_bands' must be an integer, got " + bands.dump());
    o.in_bands = bands.get<int>();
    const auto& width = need("width");
    if (!width.is_number_integer())
        throw ModelError("model option 'width' must be an integer, got " + width.dump());
    o.width = width.get<int>();
    if (j.contains("extra")) {
        if (!j.at("extra").is_object())
            throw ModelError("model option 'extra' must be an object, got " + j.at("extra").dump());
        o.extra = j.at("extra");
    }
    return o;
}

namespace {

constexpr double kFcDropout = 0.2;  // Daudt et al.'s dropout after every conv block (default)

// How the FC decoders combine the two dates' skip features.
enum class FcFusion { kEarly, kConcat, kDiff };

ConvBnRelu cbr(int64_t in, int64_t out, double dropout) {
    ConvBnReluOptions o;
    o.in = in;
    o.out = out;
    o.dropout = dropout;
    return ConvBnRelu(o);
}

// The 4-level encoder: 2, 2, 3, 3 conv blocks at w, 2w, 4w, 8w channels.
struct FcEncoderImpl : torch::nn::Module {
    FcEncoderImpl(int64_t in, int64_t w, double dropout) {
        const std::vector<std::vector<int64_t>> levels = {{in, w, w}, {w, 2 * w, 2 * w},
                                                          {2 * w, 4 * w, 4 * w, 4 * w},
                                                          {4 * w, 8 * w, 8 * w, 8 * w}};
        for (size_t l = 0; l < levels.size(); ++l) {
            torch::nn::Sequential seq;
            for (size_t i = 0; i + 1 < levels[l].size(); ++i)
                seq->push_back(cbr(levels[l][i], levels[l][i + 1], dropout));
            levels_.push_back(register_module("level" + std::to_string(l + 1), seq));
        }
    }
    // Features before each pooling, strides 1, 2, 4, 8; `bottom` gets the last pooled map.
    std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor& bottom) {
        std::vector<torch::Tensor> feats;
        for (auto& level : levels_) {
            x = level->forward(x);
            feats.push_back(x);
            auto pooled = detail::onednn_max_pool2(x);  // evaluation, channels-last; else LibTorch
            x = pooled.defined() ? pooled : torch::max_pool2d(x, 2, 2);
        }
        bottom = x;
        return feats;
    }
    std::vector<torch::nn::Sequential> levels_;
};
TORCH_MODULE(FcEncoder);

// The decoder: transposed conv up, concatenate the skip, conv blocks; `k` = how many
// encoder-width copies the skip has (1 for EF/diff, 2 for conc).
struct FcDecoderImpl : torch::nn::Module, detail::Foldable {
    FcDecoderImpl(int64_t w, int64_t k, double dropout) {
        const std::vector<int64_t> ch = {w, 2 * w, 4 * w, 8 * w};
        // level 4 .. 1: up(ch) then convs
        for (int l = 3; l >= 0; --l) {
            const int64_t c = ch[size_t(l)];
            auto up = torch::nn::ConvTranspose2d(
                torch::nn::ConvTranspose2dOptions(c, c, 3).stride(2).padding(1).output_padding(1));
            ups_.insert(ups_.begin(), register_module("up" + std::to_string(l + 1), up));
            torch::nn::Sequential seq;
            const int64_t in = c * (1 + k);
            if (l >= 2) {  // three blocks: in -> c -> c -> c/2
                seq->push_back(cbr(in, c, dropout));
                seq->push_back(cbr(c, c, dropout));
                seq->push_back(cbr(c, c / 2, dropout));
            } else if (l == 1) {  // two blocks: in -> c -> c/2
                seq->push_back(cbr(in, c, dropout));
                seq->push_back(cbr(c, c / 2, dropout));
            } else {  // one block, then the classifier
                seq->push_back(cbr(in, c, dropout));
            }
            convs_.insert(convs_.begin(), register_module("dec" + std::to_string(l + 1), seq));
        }
        head_ = register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(w, 2, 3).padding(1)));
    }
    torch::Tensor forward(torch::Tensor x, const std::vector<torch::Tensor>& skips) {
        const bool folded = !subpixel_.empty() && !is_training();
        // Sub-pixel form (the same function and gradients) where it was measured faster: on
        // the CPU channels-last or in bfloat16, where LibTorch's transposed convolution has
        // no oneDNN path and costs a quarter of a training step (docs/benchmarks.md); not
        // for contiguous float32 (5-9 % slower at width 4) or CUDA (not measured).
        const bool subpixel = x.is_cpu() && (x.is_contiguous(torch::MemoryFormat::ChannelsLast) ||
                                             at::autocast::is_cpu_enabled());
        // The concatenation buffers are kept between evaluation calls (one caller at a time;
        // a concurrent one allocates its own).
        std::unique_lock<std::mutex> workspace_lock(workspace_mutex_, std::defer_lock);
        if (folded && workspace_lock.try_lock()) workspace_.resize(ups_.size());
        for (int l = 3; l >= 0; --l) {
            const auto i = size_t(l);
            if (folded) {  // upsampled and concatenated with the skip in one pass
                x = detail::subpixel_up(x, subpixel_[i].first, subpixel_[i].second, &subpixel_fast_[i], skips[i],
                                        workspace_lock.owns_lock() ? &workspace_[i] : nullptr);
                x = convs_[i]->forward(x);
                continue;
            }
            if (subpixel) {
                const auto [kernel, bias] = detail::subpixel_from_transposed(ups_[i]->weight, ups_[i]->bias);
                x = detail::subpixel_up(x, kernel, bias);
            } else {
                x = detail::conv_t(ups_[i], x);
            }
            x = convs_[i]->forward(torch::cat({x, skips[i]}, 1));
        }
        return detail::conv(head_, x, folded ? &head_fast_ : nullptr);
    }
    // Keep the gathered sub-pixel kernels for evaluation (no gather per forward pass).
    void fold() override {
        subpixel_.clear();
        torch::NoGradGuard no_grad;
        subpixel_fast_.clear();
        for (auto& up : ups_) {
            subpixel_.push_back(detail::subpixel_from_transposed(up->weight, up->bias));
            subpixel_fast_.push_back(detail::subpixel_onednn(subpixel_.back()));
        }
        head_fast_ = detail::OneDnnConv(head_->weight, head_->bias, 1, {1, 1, 1, 1}, false);
    }
    void train(bool on = true) override {
        torch::nn::Module::train(on);
        if (on) {
            subpixel_.clear();
            subpixel_fast_.clear();
            head_fast_ = detail::OneDnnConv();
            std::lock_guard<std::mutex> lock(workspace_mutex_);
            workspace_.clear();
        }
    }
    std::vector<std::pair<torch::Tensor, torch::Tensor>> subpixel_;
    std::vector<detail::OneDnnConv> subpixel_fast_;  // the same kernels through oneDNN
    detail::OneDnnConv head_fast_;                   // the classifier through oneDNN
    std::mutex workspace_mutex_;                     // guards workspace_
    std::vector<torch::Tensor> workspace_;           // concatenation buffers, per level
    std::vector<torch::nn::ConvTranspose2d> ups_;
    std::vector<torch::nn::Sequential> convs_;
    torch::nn::Conv2d head_{nullptr};
};
TORCH_MODULE(FcDecoder);

// FC-EF, FC-Siam-conc and FC-Siam-diff.
class FcModelImpl : public ChangeModelImpl {
public:
    FcModelImpl(const ModelOptions& o, FcFusion fusion) : ChangeModelImpl(o), fusion_(fusion) {
        if (fusion == FcFusion::kEarly) {
            detail::check_extra_keys(o, {"dropout"});
        } else {
            detail::check_extra_keys(o, {"dropout", "shared_dropout"});
            shared_dropout_ = detail::extra_bool(o, "shared_dropout", false);
        }
        // The Dropout2d probability after every conv block, encoder and decoder.
        const double dropout = detail::extra_number(o, "dropout", kFcDropout, 0.0, 1.0);
        const int64_t in = fusion == FcFusion::kEarly ? 2 * o.in_bands : o.in_bands;
        encoder_ = register_module("encoder", FcEncoder(in, o.width, dropout));
        decoder_ = register_module("decoder", FcDecoder(o.width, fusion == FcFusion::kConcat ? 2 : 1, dropout));
    }

    bool local() const override { return true; }

    ChangeOutput forward(const torch::Tensor& pre, const torch::Tensor& post) override {
        detail::check_pair(pre, post, options_.in_bands, options_.arch);
        const int64_t h = pre.size(2), w = pre.size(3);
        constexpr int64_t kMultiple = 16;  // four 2x poolings
        const auto a = detail::pad_to_multiple(pre, kMultiple);
        const auto b = detail::pad_to_multiple(post, kMultiple);
        ChangeOutput out;
        std::vector<torch::Tensor> skips;
        torch::Tensor bottom;
        if (fusion_ == FcFusion::kEarly) {
            skips = encoder_->forward(torch::cat({a, b}, 1), bottom);
        } else {
            torch::Tensor bottom_pre;
            // shared_dropout: the post date's encoder draws the same Dropout2d masks as the
            // pre date's (the generator is rewound), so a channel is dropped in both or
            // neither and |f1 - f2| sees no difference the masks made up.
            at::Generator gen;
            torch::Tensor rng_state;
            if (shared_dropout_ && is_training()) {
                gen = at::globalContext().defaultGenerator(a.device());
                std::lock_guard<std::mutex> lock(gen.mutex());
                rng_state = gen.get_state();
            }
            const auto fa = encoder_->forward(a, bottom_pre);
            if (gen.defined()) {
                std::lock_guard<std::mutex> lock(gen.mutex());
                gen.set_state(rng_state);
            }
            const auto fb = encoder_->forward(b, bottom);  // the post-date bottom, as published
            for (size_t l = 0; l < fa.size(); ++l) {
                skips.push_back(fusion_ == FcFusion::kDiff ? detail::abs_diff(fa[l], fb[l])
                                                           : torch::cat({fa[l], fb[l]}, 1));
                out.features_pre.push_back(detail::crop_feature(fa[l], h, w, int64_t(1) << l));
                out.features_post.push_back(detail::crop_feature(fb[l], h, w, int64_t(1) << l));
            }
        }
        for (size_t l = 0; l < skips.size(); ++l)
            out.features_fused.push_back(detail::crop_feature(skips[l], h, w, int64_t(1) << l));
        out.logits = detail::crop(decoder_->forward(bottom, skips), h, w);
        return out;
    }

private:
    FcFusion fusion_;
    bool shared_dropout_ = false;  // Siamese: both dates' encoders drop the same channels
    FcEncoder encoder_{nullptr};
    FcDecoder decoder_{nullptr};
};

using Factory = std::function<ChangeModel(const ModelOptions&)>;

const std::map<std::string, Factory>& registry() {
    static const std::map<std::string, Factory> r = {
        {"fc-ef", [](const ModelOptions& o) { return std::make_shared<FcModelImpl>(o, FcFusion::kEarly); }},
        {"fc-siam-conc",
         [](const ModelOptions& o) { return std::make_shared<FcModelImpl>(o, FcFusion::kConcat); }},
        {"fc-siam-diff", [](const ModelOptions& o) { return std::make_shared<FcModelImpl>(o, FcFusion::kDiff); }},
        {"resnet-fpn", detail::make_resnet_fpn},
        {"bit", detail::make_bit},
        {"kd-msi-cam", detail::make_cam_pair},
    };
    return r;
}

}  // namespace

ChangeModel create_model(const ModelOptions& options) {
    const auto& r = registry();
    const auto it = r.find(options.arch);
    if (it == r.end()) {
        std::string known;
        for (const auto& [name, f] : r) known += (known.empty() ? "" : ", ") + name;
        throw ConfigError("unknown model architecture " + quote(options.arch) + " (known: " + known + ")");
    }
    if (options.in_bands < 1 || options.in_bands > 1024)
        throw ConfigError("model " + quote(options.arch) + " cannot take " + std::to_string(options.in_bands) +
                          " input bands");
    if (options.width < 1 || options.width > 1024)
        throw ConfigError("model " + quote(options.arch) + " cannot take width " + std::to_string(options.width));
    if (!options.extra.is_object())
        throw ConfigError("model " + quote(options.arch) + " options 'extra' must be an object");
    return it->second(options);
}

std::vector<std::string> model_names() {
    std::vector<std::string> names;
    for (const auto& [name, f] : registry()) names.push_back(name);
    return names;  // std::map keeps them sorted
}

void to_channels_last(torch::nn::Module& model) {
    torch::NoGradGuard no_grad;
    for (auto& p : model.parameters())
        if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    for (auto& b : model.buffers())
        if (b.dim() == 4) b.set_data(b.contiguous(torch::MemoryFormat::ChannelsLast));
}

void prepare_for_inference(torch::nn::Module& model) {
    model.eval();
    for (const auto& m : model.modules(/*include_self=*/true))
        if (auto* f = dynamic_cast<detail::Foldable*>(m.get())) f->fold();
}

int64_t parameter_count(torch::nn::Module& model) {
    int64_t n = 0;
    for (const auto& p : model.parameters())
        if (p.requires_grad()) n += p.numel();
    return n;
}

int64_t estimate_flops(const ModelOptions& options, int height, int width) {
    auto model = create_model(options);
    model->eval();
    torch::NoGradGuard no_grad;
    const auto x = torch::zeros({1, options.in_bands, height, width});
    int64_t macs = 0;
    {
        detail::MacCounterGuard guard(macs);
        model->forward(x, x);
    }
    return 2 * macs;
}

}  // namespace cdk::nn
