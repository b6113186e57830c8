// Model bundles (.cdm): "CDKMDL01", uint64 LE header length, JSON header, LibTorch archive.
#include "cdk/nn/bundle.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/version.hpp"

#include <zlib.h>

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

// CRC-32 (zlib's, the one zip and PNG use) as 8 hex digits.
std::string crc32_hex(const std::string& bytes) {
    uLong crc = ::crc32(0L, Z_NULL, 0);
    for (size_t at = 0; at < bytes.size();) {  // zlib takes uInt lengths
        const size_t n = std::min<size_t>(bytes.size() - at, size_t(1) << 30);
        crc = ::crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + at), static_cast<uInt>(n));
        at += n;
    }
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08lx", static_cast<unsigned long>(crc) & 0xffffffffUL);
    return hex;
}

// The header's own checksum covers its JSON without the "checksum" entry, in nlohmann's
// compact form (keys sorted; numbers in their shortest round-trip form, so text that was
// written, read and written again is the same).
std::string header_crc(nlohmann::json header) {
    header.erase("checksum");
    return crc32_hex(header.dump());
}

// An open bundle: the header parsed (and checked against its checksum), the stream
// positioned at the weights.
struct OpenBundle {
    std::ifstream in;
    nlohmann::json header;
    uint64_t weights_size = 0;
    std::string weights_crc;  // the stored checksum of the weights ("" = none stored)
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
    if (b.header.contains("checksum")) {
        const auto& c = b.header["checksum"];
        if (!c.is_object() || c.value("algorithm", "") != "crc32" || !c.contains("header") ||
            !c["header"].is_string() || !c.contains("weights") || !c["weights"].is_string())
            throw ModelError("model bundle " + quote(path) + " has an unreadable checksum entry");
        if (c["header"].get<std::string>() != header_crc(b.header))
            throw ModelError("model bundle " + quote(path) +
                             " is corrupt: its header does not match its checksum (edited or damaged)");
        b.weights_crc = c["weights"].get<std::string>();
    }
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
    header.erase("checksum");
    header["checksum"] = {{"algorithm", "crc32"}, {"header", header_crc(header)}, {"weights", crc32_hex(w)}};
    const std::string text = header.dump(2);
    std::array<char, 8> len{};
    for (size_t i = 0; i < 8; ++i) len[i] = static_cast<char>((uint64_t(text.size()) >> (8 * i)) & 0xff);

    AtomicPath out(path, overwrite);
    std::string bytes(kMagic, 8);
    bytes.append(len.data(), 8);
    bytes += text;
    bytes += w;
    write_file(out.temp(), bytes, "model bundle", path);
    out.commit();
}

nlohmann::json read_bundle_header(const std::string& path) {
    OpenBundle b;
    open_bundle(path, b);
    return b.header;
}

BundleHeader read_bundle_info(const std::string& path) { return BundleHeader::parse(read_bundle_header(path), path); }

// ---------------------------------------------------------------------------------------
// BundleHeader

namespace {

// Keys BundleHeader knows; every other key is kept in `other`.
const char* const kKnownKeys[] = {"format", "model",    "bands",   "data_type",    "nodata",  "normalization",
                                  "tile_size", "overlap", "training", "metrics", "distillation", "toolkit",
                                  "weights_bytes", "checksum"};

}  // namespace

BundleHeader BundleHeader::parse(const nlohmann::json& j, const std::string& path) {
    auto bad = [&](const std::string& key, const std::string& what) {
        return ModelError("model bundle " + quote(path) + ": header entry " + quote(key) + " " + what);
    };
    if (!j.is_object()) throw ModelError(corrupt(path));
    BundleHeader h;
    if (!j.contains("model")) throw ModelError("model bundle " + quote(path) + " has no 'model' entry");
    try {
        h.model = model_options_from_json(j.at("model"));
    } catch (const ModelError& e) {
        throw ModelError("model bundle " + quote(path) + ": " + e.what());
    }
    if (j.contains("bands") && !j["bands"].is_null()) {
        if (!j["bands"].is_array()) throw bad("bands", "must be a list of band names");
        for (const auto& b : j["bands"]) h.bands.push_back(b.is_string() ? b.get<std::string>() : b.dump());
    }
    if (j.contains("data_type") && !j["data_type"].is_null()) {
        if (!j["data_type"].is_string()) throw bad("data_type", "must be a GDAL data type name");
        h.data_type = j["data_type"].get<std::string>();
    }
    if (j.contains("nodata") && !j["nodata"].is_null()) {
        if (!j["nodata"].is_number()) throw bad("nodata", "must be a number or null");
        h.nodata = j["nodata"].get<double>();
    }
    if (j.contains("normalization") && !j["normalization"].is_null()) {
        try {
            h.normalization = Normalization::from_json(j["normalization"]);
        } catch (const Error& e) {
            throw bad("normalization", std::string("is invalid: ") + e.what());
        }
    }
    for (auto [key, field] : {std::pair{"tile_size", &h.tile_size}, std::pair{"overlap", &h.overlap}})
        if (j.contains(key) && !j[key].is_null()) {
            if (!j[key].is_number_integer() || j[key].get<int64_t>() < 0) throw bad(key, "must be an integer >= 0");
            *field = j[key].get<int>();
        }
    for (auto [key, field] : {std::pair{"training", &h.training}, std::pair{"metrics", &h.metrics},
                              std::pair{"distillation", &h.distillation}})
        if (j.contains(key) && !j[key].is_null()) {
            if (!j[key].is_object()) throw bad(key, "must be an object");
            *field = j[key];
        }
    if (j.contains("toolkit") && j["toolkit"].is_string()) h.toolkit = j["toolkit"].get<std::string>();
    if (j.contains("weights_bytes") && !j["weights_bytes"].is_null()) {
        if (!j["weights_bytes"].is_number_unsigned()) throw ModelError(corrupt(path));
        h.weights_bytes = j["weights_bytes"].get<uint64_t>();
    }
    for (const auto& [key, value] : j.items())
        if (std::find(std::begin(kKnownKeys), std::end(kKnownKeys), key) == std::end(kKnownKeys)) h.other[key] = value;
    return h;
}

nlohmann::json BundleHeader::to_json() const {
    nlohmann::json j = other.is_object() ? other : nlohmann::json::object();
    j["model"] = nn::to_json(model);
    if (!bands.empty()) j["bands"] = bands;
    if (!data_type.empty()) j["data_type"] = data_type;
    j["nodata"] = nodata ? nlohmann::json(*nodata) : nlohmann::json(nullptr);
    if (normalization) j["normalization"] = normalization->to_json();
    j["tile_size"] = tile_size;
    j["overlap"] = overlap;
    if (!training.is_null()) j["training"] = training;
    j["metrics"] = metrics;  // null: no validation
    if (!distillation.is_null()) j["distillation"] = distillation;
    if (!toolkit.empty()) j["toolkit"] = toolkit;
    if (weights_bytes) j["weights_bytes"] = *weights_bytes;
    return j;
}

int BundleHeader::band_count() const { return bands.empty() ? model.in_bands : int(bands.size()); }

std::string BundleHeader::scene_norm() const { return normalization ? normalization->scene : "none"; }

std::optional<double> BundleHeader::best_threshold() const {
    if (!metrics.is_object()) return std::nullopt;
    const auto bt = metrics.value("best_threshold", nlohmann::json());
    if (!bt.is_object() || !bt.contains("threshold") || !bt["threshold"].is_number()) return std::nullopt;
    return bt["threshold"].get<double>();
}

std::vector<double> BundleHeader::partition_thresholds() const {
    const nlohmann::json none = nlohmann::json::object();
    if (!training.is_object()) return {};
    const auto train = training.value("train", none);
    const auto partition = train.is_object() ? train.value("partition", none) : none;
    const auto th = partition.is_object() ? partition.value("thresholds", nlohmann::json()) : nlohmann::json();
    if (!th.is_array()) return {};
    for (const auto& t : th)
        if (!t.is_number()) return {};
    return th.get<std::vector<double>>();
}

bool BundleHeader::training_complete() const { return !training.is_object() || training.value("complete", true); }

std::string unverified_warning(const std::string& path) {
    return "model bundle " + quote(path) +
           " has no checksum (an older cdkit wrote it): it cannot be checked for damage";
}

Bundle load_bundle(const std::string& path, const torch::Device& device) {
    OpenBundle b;
    open_bundle(path, b);
    BundleHeader info = BundleHeader::parse(b.header, path);
    const ModelOptions& options = info.model;
    ChangeModel model;
    try {
        model = create_model(options);
    } catch (const Error& e) {
        throw ModelError("model bundle " + quote(path) + " cannot be rebuilt: " + e.what());
    }
    if (info.weights_bytes && *info.weights_bytes != b.weights_size) throw ModelError(corrupt(path));
    std::string w(b.weights_size, '\0');
    if (!b.in.read(w.data(), static_cast<std::streamsize>(w.size()))) throw ModelError(corrupt(path));
    if (!b.weights_crc.empty() && crc32_hex(w) != b.weights_crc)
        throw ModelError("model bundle " + quote(path) +
                         " is corrupt: its weights do not match their checksum (a damaged copy?)");
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
    const bool verified = !b.weights_crc.empty();
    return Bundle{std::move(b.header), std::move(model), std::move(info), verified};
}

Bundle load_bundle(const std::string& path, const torch::Device& device, const RunContext& ctx) {
    Bundle b = load_bundle(path, device);
    if (!b.verified) ctx.warn(unverified_warning(path));
    return b;
}

void check_input(const BundleHeader& header, int bands, const std::string& data_type,
                 const std::string& bundle_name, const std::string& scene_name) {
    const int64_t want_bands = header.band_count();
    const std::string& want_type = header.data_type;
    const bool bands_ok = want_bands == bands;
    const bool type_ok = want_type.empty() || data_type.empty() || want_type == data_type;
    if (bands_ok && type_ok) return;
    auto side = [](int64_t n, const std::string& type) {
        return std::to_string(n) + (type.empty() ? "" : " " + type) + (n == 1 ? " band" : " bands");
    };
    throw ModelError("bundle " + quote(bundle_name) + " expects " + side(want_bands, want_type) + ", scene " +
                     quote(scene_name) + " has " + side(bands, data_type));
}

void check_input(const nlohmann::json& header, int bands, const std::string& data_type,
                 const std::string& bundle_name, const std::string& scene_name) {
    check_input(BundleHeader::parse(header, bundle_name), bands, data_type, bundle_name, scene_name);
}

}  // namespace cdk::nn
