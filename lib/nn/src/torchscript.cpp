#include "cdk/nn/torchscript.hpp"

#include <torch/script.h>

#include <cstring>
#include <fstream>

#include "cdk/core/error.hpp"

namespace cdk::nn {

namespace {

// A TorchScript module behind the ChangeModel interface.
class TorchScriptModelImpl : public ChangeModelImpl {
public:
    TorchScriptModelImpl(torch::jit::Module module, const ModelOptions& o, std::string path)
        : ChangeModelImpl(o), module_(std::move(module)), path_(std::move(path)) {}

    ChangeOutput forward(const torch::Tensor& pre, const torch::Tensor& post) override {
        c10::IValue out;
        try {
            out = module_.forward({pre, post});
        } catch (const c10::Error& e) {
            throw ModelError("TorchScript model " + quote(path_) + " failed on inputs " + c10::str(pre.sizes()) +
                             ": " + e.what_without_backtrace());
        }
        if (!out.isTensor())
            throw ModelError("TorchScript model " + quote(path_) + " must return a logits tensor from forward(pre, post)");
        ChangeOutput o;
        o.logits = out.toTensor();
        if (o.logits.dim() != 4 || o.logits.size(0) != pre.size(0) || o.logits.size(1) != 2 ||
            o.logits.size(2) != pre.size(2) || o.logits.size(3) != pre.size(3))
            throw ModelError("TorchScript model " + quote(path_) + " returned " + c10::str(o.logits.sizes()) +
                             " for inputs " + c10::str(pre.sizes()) + "; change logits must be [N, 2, H, W]");
        o.logits = o.logits.to(torch::kFloat32);
        return o;
    }

    void train(bool on) override {
        ChangeModelImpl::train(on);
        module_.train(on);
    }

private:
    torch::jit::Module module_;
    std::string path_;
};

}  // namespace

bool is_torchscript(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError("cannot open model " + quote(path));
    char magic[4] = {};
    in.read(magic, 4);
    return in.gcount() == 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0;  // a zip archive
}

ChangeModel load_torchscript(const std::string& path, int in_bands, const torch::Device& device) {
    if (in_bands < 1) throw ConfigError("a TorchScript model needs its band count (--bands)");
    torch::jit::Module m;
    try {
        m = torch::jit::load(path, device);
    } catch (const c10::Error& e) {
        throw ModelError("cannot load TorchScript model " + quote(path) + ": " + e.what_without_backtrace());
    }
    if (!m.find_method("forward"))
        throw ModelError("TorchScript model " + quote(path) + " has no forward(pre, post) method");
    m.eval();
    ModelOptions o;
    o.arch = "torchscript";
    o.in_bands = in_bands;
    o.width = 0;
    auto model = std::make_shared<TorchScriptModelImpl>(std::move(m), o, path);
    model->eval();
    return model;
}

}  // namespace cdk::nn
