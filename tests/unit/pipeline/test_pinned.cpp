// Exact results pinned across refactors: the weights a small training and a small MTKD
// distillation produce on CPU with a fixed seed, and the bytes cd-infer maps in every mode
// with bundles written by an earlier commit (tests/data/pinned, made by make.sh there).
// The pins hold for the CPU kernels they were taken with (LibTorch version and the CPU's
// vector instruction sets): elsewhere the comparisons are skipped with a warning, the rest still runs.
// To pin a deliberate change: CDK_WRITE_PINS=1 ctest -R pinned rewrites pins.json.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cdk/nn/bundle.hpp"
#include "cdk/pipeline/distill.hpp"
#include "cdk/pipeline/train.hpp"
#include "pipeline_fixtures.hpp"
#include "support/cli_checks.hpp"

using cdk::test::TempDir;

namespace {

const std::string kPinDir = std::string(CDK_SOURCE_DIR) + "/tests/data/pinned";
const std::string kPins = kPinDir + "/pins.json";

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ULL) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

std::string hex(uint64_t h) {
    std::ostringstream s;
    s << std::hex << h;
    return s.str();
}

// Names and bytes of every parameter and buffer, in registration order.
std::string weights_hash(cdk::nn::ChangeModelImpl& m) {
    uint64_t h = fnv1a("", 0);
    auto add = [&](const std::string& name, const torch::Tensor& t) {
        const auto c = t.detach().to(torch::kCPU).contiguous();
        h = fnv1a(name.data(), name.size(), h);
        h = fnv1a(c.data_ptr(), size_t(c.numel()) * c.element_size(), h);
    };
    for (const auto& p : m.named_parameters()) add(p.key(), p.value());
    for (const auto& b : m.named_buffers()) add(b.key(), b.value());
    return hex(h);
}

std::string weights_hash(const std::string& bundle) { return weights_hash(*cdk::nn::load_bundle(bundle).model); }

// Pixel values of band 1 of a raster (as doubles: exact for Byte and Float32).
std::string raster_hash(const std::string& path) {
    const auto v = cdk::test::read_band(path);
    return hex(fnv1a(v.data(), v.size() * sizeof(double)));
}

// The instruction sets that pick ATen's and oneDNN's CPU kernels (and so the last bits of
// every float result).
std::string cpu_capability() {
    std::string c;
    auto add = [&](bool has, const char* name) {
        if (has) c += std::string(c.empty() ? "" : ",") + name;
    };
    add(__builtin_cpu_supports("avx2"), "avx2");
    add(__builtin_cpu_supports("fma"), "fma");
    add(__builtin_cpu_supports("avx512f"), "avx512f");
    add(__builtin_cpu_supports("avx512bw"), "avx512bw");
    add(__builtin_cpu_supports("avx512vl"), "avx512vl");
    add(__builtin_cpu_supports("avx512dq"), "avx512dq");
    add(__builtin_cpu_supports("avx512vnni"), "avx512vnni");
    add(__builtin_cpu_supports("avx512bf16"), "avx512bf16");
    return c;
}

nlohmann::json machine() { return {{"torch", TORCH_VERSION}, {"cpu_capability", cpu_capability()}}; }

bool writing_pins() { return std::getenv("CDK_WRITE_PINS") != nullptr; }

nlohmann::json read_pins() {
    std::ifstream in(kPins);
    if (!in) return {{"machine", machine()}, {"values", nlohmann::json::object()}};
    return nlohmann::json::parse(in);
}

// Compare `value` with the pin `name` (or record it with CDK_WRITE_PINS). Returns false,
// after a warning, when the pins were taken with other CPU kernels.
void check_pin(const std::string& name, const std::string& value) {
    nlohmann::json pins = read_pins();
    if (writing_pins()) {
        pins["machine"] = machine();
        pins["values"][name] = value;
        std::ofstream(kPins) << pins.dump(2) << '\n';
        WARN("pinned " << name << " = " << value);
        return;
    }
    if (pins["machine"] != machine()) {
        WARN("skipped the comparison with pin " << name << ": pinned on " << pins["machine"].dump() << ", this is "
                                                << machine().dump());
        return;
    }
    INFO("pin " << name);
    REQUIRE(pins["values"].contains(name));
    CHECK(value == pins["values"][name].get<std::string>());
}

}  // namespace

TEST_CASE("pinned: a small training gives the same weights", "[pipeline][train][pinned]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0, true);
    const auto val = cdk::test::make_fixture_tiles(tmp, "val", 128, 32, 3, 1);
    auto o = cdk::test::tiny_train_options(train, val, tmp / "plain.cdm");
    cdk::pipeline::train_model(o);
    check_pin("train_plain", weights_hash(o.out));

    // Every other branch of the step: SGD, poly schedule with warm-up, EMA (the average is
    // what is saved), class weights and a Dice term, crops, no date swap, --save-last.
    o.out = tmp / "ema.cdm";
    o.save_last = tmp / "ema_last.cdm";
    o.optimizer = "sgd";
    o.schedule = "poly";
    o.warmup_steps = 2;
    o.ema = 0.9;
    o.loss.class_weights = {1, 4};
    o.loss.dice_weight = 0.5;
    o.augment.crop = 24;
    o.augment.swap_dates = false;
    o.epochs = 3;
    cdk::pipeline::train_model(o);
    check_pin("train_ema", weights_hash(o.out));
    check_pin("train_ema_last", weights_hash(o.save_last));
}

TEST_CASE("pinned: a small MTKD distillation gives the same weights", "[pipeline][distill][pinned]") {
    TempDir tmp;
    const auto train = cdk::test::make_fixture_tiles(tmp, "train", 128, 64, 3, 0);
    cdk::pipeline::DistillOptions d;
    d.train = cdk::test::tiny_train_options(train, "", tmp / "student.cdm");
    d.train.init = kPinDir + "/origin.cdm";
    d.train.model.arch.clear();
    d.mtkd.teachers = {"small=" + kPinDir + "/small.cdm", "large=" + kPinDir + "/large.cdm"};
    d.mtkd.thresholds = {0.02};
    d.mtkd.kd.weight = 0.5;
    d.mtkd.kd.kl_weight = 0.2;
    d.mtkd.kd.temperature = 2;
    // The fixture tiles have their own statistics: the teachers' normalisation differs, which
    // distillation does not check (the tiles' own statistics are used for the student).
    const auto summary = cdk::pipeline::distill_model(d);
    check_pin("distill_mtkd", weights_hash(d.train.out));
    const auto routed = summary["distillation"]["samples_routed"];
    CHECK(routed["small"].get<long long>() + routed["large"].get<long long>() > 0);
}

TEST_CASE("pinned: bundles of an earlier commit load and map to the same bytes", "[pipeline][infer][pinned]") {
    TempDir tmp;
    cdk::test::SynthScene ss;
    ss.width = 160;
    ss.height = 96;
    ss.seed = 11;
    const std::string scene = cdk::test::synth_scene(tmp / "scene", ss);
    // --threshold 0.5: the earlier commit's default (cd-infer now takes the bundle's own).
    const std::vector<std::string> io = {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--threads", "1",
                                         "--quiet", "--threshold", "0.5"};
    auto map = [&](const std::string& name, std::vector<std::string> args) {
        args.insert(args.end(), io.begin(), io.end());
        for (const std::string& a : std::vector<std::string>{"--out", tmp / (name + ".tif"), "--prob", tmp / (name + "_p.tif")})
            args.push_back(a);
        const auto r = cdk::test::run_tool("cd-infer", args);
        INFO(name << ": " << r.err);
        REQUIRE(r.rc == 0);
        check_pin("infer_" + name + "_mask", raster_hash(tmp / (name + ".tif")));
        check_pin("infer_" + name + "_prob", raster_hash(tmp / (name + "_p.tif")));
        return nlohmann::json::parse(r.out);
    };
    const std::string origin = kPinDir + "/origin.cdm";
    // The bundle of the earlier commit loads with its header.
    const auto b = cdk::nn::load_bundle(origin);
    CHECK(b.model->options().arch == "fc-siam-diff");
    CHECK(b.header["tile_size"] == 32);
    CHECK_FALSE(b.verified);  // written before bundles had checksums: it loads, unverified
    check_pin("bundle_origin_weights", weights_hash(*b.model));

    map("single", {"--model", origin});
    map("windows", {"--model", origin, "--tile-size", "48", "--overlap", "8", "--batch-size", "3"});
    map("tta", {"--model", origin, "--tta", "--tile-size", "64", "--overlap", "16"});
    map("nofold", {"--model", origin, "--no-fold", "--tile-size", "64"});
    const auto op = map("op", {"--op-origin", origin, "--op-teachers",
                               "small=" + kPinDir + "/small.cdm,large=" + kPinDir + "/large.cdm", "--op-thresholds", "0.02"});
    CHECK(op["op"]["windows"].size() == 2);
    map("op_tta", {"--op-origin", origin, "--op-teachers", "small=" + kPinDir + "/small.cdm,large=" + kPinDir + "/large.cdm",
                   "--op-thresholds", "0.02", "--tta"});
    const std::string ts = kPinDir + "/model.pt";
    map("torchscript", {"--model", ts, "--bands", "3", "--mean", "90,80,70", "--std", "30,25,20", "--tile-size", "32",
                        "--overlap", "8"});
}
