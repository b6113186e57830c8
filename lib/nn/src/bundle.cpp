// Model bundles (.cdm): "CDKMDL01", uint64 LE header length, JSON header, LibTorch archive.
#include "cdk/nn/bundle.hpp"

#include <array>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/version.hpp"

namespace cdk::nn {

namespace {

constexpr char kMagic[8] = {'C', 'D', 'K', 'M', 'D', 'L', '0', '1'};
constexpr const char* kFormat = "cdkit-model/1";
constexpr uint64_t kMaxHeader = uint64_t(64) << 20;  // a header is a few kB; refuse nonsense

std::string corrupt(const std::string& path) {
    return "model bundle " + quote(path) + " is truncated or corrupt";
}

std::string shape_text(c10::IntArrayRef s) {
    std::string t = "[";
    for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
    return t + "]";
}

// Every tensor a model's state consists of: parameters and buffers, by dotted name.
std::vector<std::pair<std::string, torch::Tensor>> state_of(torch::nn::Module& m) {
    std::vector<std::pair<std::string, torch::Tensor>> s;
    for (const auto& p : m.named_parameters(true)) s.emplace_back(p.key(), p.value());
    for (const auto& b : m.named_buffers(true)) s.emplace_back(b.key(), b.value());
    return s;
}

// An open bundle: the header parsed, the stream positioned at the weights.
struct OpenBundle {
    std::ifstream in;
    nlohmann::json header;
    uint64_t weights_size = 0;
};

void open_bundle(const std::string& path, OpenBundle& b) {
    b.in.open(path, std::ios::binary);
    if (!b.in) throw IoError("cannot open model bundle " + quote(path));
    b.in.seekg(0, std::ios::end);
    const auto size = static_cast<uint64_t>(b.in.tellg());
    b.in.seekg(0);
    char magic[8];
    if (size < 16 || !b.in.read(magic, 8)) throw ModelError(corrupt(path));
    if (std::memcmp(magic, kMagic, 8) != 0)
        throw ModelError("file " + quote(path) + " is not a cdkit model bundle (no CDKMDL01 signature)");
    std::array<unsigned char, 8> len_bytes{};
    if (!b.in.read(reinterpret_cast<char*>(len_bytes.data()), 8)) throw ModelError(corrupt(path));
    uint64_t len = 0;
    for (int i = 7; i >= 0; --i) len = (len << 8) | len_bytes[size_t(i)];
    if (len > kMaxHeader || len > size - 16) throw ModelError(corrupt(path));
    std::string text(len, '\0');
    if (!b.in.read(text.data(), static_cast<std::streamsize>(len))) throw ModelError(corrupt(path));
    try {
        b.header = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
        throw ModelError(corrupt(path));
    }
    if (!b.header.is_object()) throw ModelError(corrupt(path));
    const std::string format = b.header.value("format", std::string());
    if (format != kFormat)
        throw ModelError("model bundle " + quote(path) + " has format " + quote(format) + ", this build reads " +
                         quote(kFormat));
    b.weights_size = size - 16 - len;
}

}  // namespace

void save_bundle(const std::string& path, ChangeModelImpl& model, nlohmann::json header, bool overwrite) {
    if (!header.is_object()) header = nlohmann::json::object();
    // Weights first, so the header can record their length (detects truncation exactly).
    std::ostringstream weights;
    {
        torch::NoGradGuard no_grad;
        torch::serialize::OutputArchive archive;
        for (const auto& [name, t] : state_of(model))
            archive.write(name, t.detach().to(torch::kCPU).contiguous(), /*is_buffer=*/!t.requires_grad());
        archive.save_to(weights);
    }
    const std::string w = weights.str();
    header["format"] = kFormat;
    header["model"] = to_json(model.options());
    header["toolkit"] = kVersion;
    header["weights_bytes"] = w.size();
    const std::string text = header.dump(2);
    std::array<char, 8> len{};
    for (size_t i = 0; i < 8; ++i) len[i] = static_cast<char>((uint64_t(text.size()) >> (8 * i)) & 0xff);

    AtomicPath out(path, overwrite);
    {
        std::ofstream f(out.temp(), std::ios::binary | std::ios::trunc);
        if (!f) throw IoError("cannot write model bundle " + quote(path));
        f.write(kMagic, 8);
        f.write(len.data(), 8);
        f.write(text.data(), static_cast<std::streamsize>(text.size()));
        f.write(w.data(), static_cast<std::streamsize>(w.size()));
        f.close();
        if (!f) throw IoError("cannot write model bundle " + quote(path) + " (disk full?)");
    }
    out.commit();
}

nlohmann::json read_bundle_header(const std::string& path) {
    OpenBundle b;
    open_bundle(path, b);
    return b.header;
}

Bundle load_bundle(const std::string& path, const torch::Device& device) {
    OpenBundle b;
    open_bundle(path, b);
    if (!b.header.contains("model")) throw ModelError("model bundle " + quote(path) + " has no 'model' entry");
    ModelOptions options;
    try {
        options = model_options_from_json(b.header.at("model"));
    } catch (const ModelError& e) {
        throw ModelError("model bundle " + quote(path) + ": " + e.what());
    }
    ChangeModel model;
    try {
        model = create_model(options);
    } catch (const Error& e) {
        throw ModelError("model bundle " + quote(path) + " cannot be rebuilt: " + e.what());
    }
    const auto& wb = b.header.contains("weights_bytes") ? b.header.at("weights_bytes") : nlohmann::json();
    if (!wb.is_null() && (!wb.is_number_unsigned() || wb.get<uint64_t>() != b.weights_size))
        throw ModelError(corrupt(path));
    std::string w(b.weights_size, '\0');
    if (!b.in.read(w.data(), static_cast<std::streamsize>(w.size()))) throw ModelError(corrupt(path));
    torch::serialize::InputArchive archive;
    try {
        std::istringstream ws(w);
        archive.load_from(ws);
    } catch (const c10::Error&) {
        throw ModelError(corrupt(path));
    }
    {
        torch::NoGradGuard no_grad;
        for (auto& [name, t] : state_of(*model)) {
            torch::Tensor stored;
            bool found = false;
            try {
                found = archive.try_read(name, stored, /*is_buffer=*/!t.requires_grad());
            } catch (const c10::Error&) {
                found = false;
            }
            if (!found || !stored.defined())
                throw ModelError("model bundle " + quote(path) + " lacks tensor " + quote(name) + " of model " +
                                 quote(options.arch));
            if (stored.sizes() != t.sizes())
                throw ModelError("model bundle " + quote(path) + ": tensor " + quote(name) + " has shape " +
                                 shape_text(stored.sizes()) + ", model " + quote(options.arch) + " needs " +
                                 shape_text(t.sizes()));
            t.copy_(stored);
        }
    }
    model->to(device);
    model->eval();
    return Bundle{std::move(b.header), std::move(model)};
}

void check_input(const nlohmann::json& header, int bands, const std::string& data_type,
                 const std::string& bundle_name, const std::string& scene_name) {
    int64_t want_bands = -1;
    if (header.contains("bands") && header.at("bands").is_array())
        want_bands = static_cast<int64_t>(header.at("bands").size());
    else if (header.contains("model") && header.at("model").is_object())
        want_bands = header.at("model").value("in_bands", int64_t(-1));
    const std::string want_type = header.value("data_type", std::string());
    const bool bands_ok = want_bands < 0 || want_bands == bands;
    const bool type_ok = want_type.empty() || data_type.empty() || want_type == data_type;
    if (bands_ok && type_ok) return;
    auto side = [](int64_t n, const std::string& type) {
        return std::to_string(n) + (type.empty() ? "" : " " + type) + (n == 1 ? " band" : " bands");
    };
    throw ModelError("bundle " + quote(bundle_name) + " expects " + side(want_bands, want_type) + ", scene " +
                     quote(scene_name) + " has " + side(bands, data_type));
}

}  // namespace cdk::nn
