#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <sstream>

#include "cdk/core/error.hpp"
#include "cdk/nn/bundle.hpp"
#include "support/bytes.hpp"

namespace fs = std::filesystem;
using cdk::nn::ModelOptions;

namespace {

// A fresh folder under the system temp folder, removed at the end of the test.
struct Scratch {
    fs::path dir;
    Scratch() {
        std::random_device rd;
        dir = fs::temp_directory_path() / ("cdk_nn_bundle_" + std::to_string(rd()) + std::to_string(rd()));
        fs::create_directories(dir);
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    std::string file(const std::string& name) const { return (dir / name).string(); }
};

cdk::nn::ChangeModel small_model(const std::string& arch = "fc-siam-diff", int bands = 3, int width = 4) {
    ModelOptions o;
    o.arch = arch;
    o.in_bands = bands;
    o.width = width;
    torch::manual_seed(5);
    auto m = cdk::nn::create_model(o);
    // A few training-mode passes so the batch-norm running statistics are not their defaults.
    m->train();
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) m->forward(torch::randn({2, bands, 16, 16}) + 1.5, torch::randn({2, bands, 16, 16}));
    return m;
}

torch::Tensor probe_output(cdk::nn::ChangeModelImpl& m, int bands) {
    torch::manual_seed(11);
    const auto a = torch::randn({1, bands, 21, 19}), b = torch::randn({1, bands, 21, 19});
    m.eval();
    torch::NoGradGuard no_grad;
    return m.forward(a, b).logits;
}

using cdk::test::edit_header;
using cdk::test::read_all;
using cdk::test::write_all;

}  // namespace

TEST_CASE("a bundle round-trips: same header, same outputs in eval mode", "[nn][bundle]") {
    Scratch tmp;
    auto model = small_model();
    const auto before = probe_output(*model, 3);
    nlohmann::json header = {{"bands", {"B04", "B03", "B02"}}, {"data_type", "UInt16"}, {"tile_size", 256}};
    const auto path = tmp.file("m.cdm");
    cdk::nn::save_bundle(path, *model, header);
    REQUIRE(fs::exists(path));
    CHECK(read_all(path).substr(0, 8) == "CDKMDL01");
    // no temporary left beside it
    CHECK(std::distance(fs::directory_iterator(tmp.dir), fs::directory_iterator()) == 1);

    const auto h = cdk::nn::read_bundle_header(path);
    CHECK(h.at("format") == "cdkit-model/1");
    CHECK(h.at("model").at("arch") == "fc-siam-diff");
    CHECK(h.at("model").at("width") == 4);
    CHECK(h.at("bands").size() == 3);
    CHECK(h.at("tile_size") == 256);
    CHECK(h.contains("toolkit"));

    auto b = cdk::nn::load_bundle(path);
    CHECK(!b.model->is_training());
    CHECK(b.header.at("data_type") == "UInt16");
    const auto after = probe_output(*b.model, 3);
    CHECK(torch::equal(before, after));
    // buffers (batch-norm running statistics) came along too
    auto bufs_a = model->named_buffers(), bufs_b = b.model->named_buffers();
    REQUIRE(bufs_a.size() == bufs_b.size());
    for (const auto& item : bufs_a) CHECK(torch::equal(item.value(), bufs_b[item.key()]));
}

TEST_CASE("every registered architecture round-trips through a bundle", "[nn][bundle]") {
    Scratch tmp;
    for (const auto& arch : cdk::nn::model_names()) {
        INFO(arch);
        auto model = small_model(arch, 2, 8);
        const auto before = probe_output(*model, 2);
        cdk::nn::save_bundle(tmp.file(arch + ".cdm"), *model, {});
        auto b = cdk::nn::load_bundle(tmp.file(arch + ".cdm"));
        CHECK(torch::equal(before, probe_output(*b.model, 2)));
    }
}

// Child half of the second-process test: loads the bundle named by CDK_NN_BUNDLE and saves
// its logits on the probe input to CDK_NN_BUNDLE_OUT. Hidden; run by the test below.
TEST_CASE("bundle child process", "[.bundle-child]") {
    const char* in = std::getenv("CDK_NN_BUNDLE");
    const char* out = std::getenv("CDK_NN_BUNDLE_OUT");
    REQUIRE(in != nullptr);
    REQUIRE(out != nullptr);
    auto b = cdk::nn::load_bundle(in);
    torch::save(probe_output(*b.model, 3), out);
}

TEST_CASE("a bundle written by one process loads in another", "[nn][bundle]") {
    Scratch tmp;
    auto model = small_model();
    const auto path = tmp.file("shared.cdm"), out = tmp.file("child_logits.pt");
    cdk::nn::save_bundle(path, *model, {{"bands", {"R", "G", "B"}}});
    const auto expected = probe_output(*model, 3);
    // Run this same test binary again, as a separate process, on the hidden child test.
    const std::string exe = fs::read_symlink("/proc/self/exe").string();
    const std::string cmd = "CDK_NN_BUNDLE='" + path + "' CDK_NN_BUNDLE_OUT='" + out + "' '" + exe +
                            "' '[.bundle-child]' > '" + tmp.file("child.log") + "' 2>&1";
    const int rc = std::system(cmd.c_str());
    INFO(read_all(tmp.file("child.log")));
    REQUIRE(rc == 0);
    REQUIRE(fs::exists(out));
    torch::Tensor got;
    torch::load(got, out);
    CHECK(got.sizes() == expected.sizes());
    CHECK(torch::allclose(got, expected, 1e-5, 1e-6));
}

TEST_CASE("a truncated or foreign file fails with a clear ModelError", "[nn][bundle]") {
    Scratch tmp;
    auto model = small_model();
    const auto path = tmp.file("m.cdm");
    cdk::nn::save_bundle(path, *model, {});
    const std::string bytes = read_all(path);
    for (size_t keep : {size_t(5), size_t(20), bytes.size() / 2, bytes.size() - 1}) {
        INFO("kept " << keep << " of " << bytes.size() << " bytes");
        const auto cut = tmp.file("cut.cdm");
        write_all(cut, bytes.substr(0, keep));
        CHECK_THROWS_AS(cdk::nn::load_bundle(cut), cdk::ModelError);
        CHECK_THROWS_WITH(cdk::nn::load_bundle(cut), "model bundle '" + cut + "' is truncated or corrupt");
    }
    write_all(tmp.file("text.cdm"), "hello, this is not a model at all");
    CHECK_THROWS_WITH(cdk::nn::load_bundle(tmp.file("text.cdm")),
                      Catch::Contains("is not a cdkit model bundle") && Catch::Contains("text.cdm"));
    CHECK_THROWS_AS(cdk::nn::load_bundle(tmp.file("absent.cdm")), cdk::IoError);
}

TEST_CASE("a bundle whose header does not fit its weights or this build is refused", "[nn][bundle]") {
    Scratch tmp;
    auto model = small_model("fc-siam-diff", 3, 4);
    const auto path = tmp.file("m.cdm");
    cdk::nn::save_bundle(path, *model, {});

    SECTION("wrong width: a shape mismatch names the file, the tensor and both shapes") {
        edit_header(path, [](nlohmann::json& h) { h["model"]["width"] = 8; });
        CHECK_THROWS_AS(cdk::nn::load_bundle(path), cdk::ModelError);
        CHECK_THROWS_WITH(cdk::nn::load_bundle(path), Catch::Contains("'" + path + "'") &&
                                                          Catch::Contains("has shape [4, 3, 3, 3]") &&
                                                          Catch::Contains("needs [8, 3, 3, 3]"));
    }
    SECTION("another architecture: a missing tensor is named") {
        edit_header(path, [](nlohmann::json& h) { h["model"]["arch"] = "resnet-fpn"; });
        CHECK_THROWS_WITH(cdk::nn::load_bundle(path), Catch::Contains("'" + path + "'") &&
                                                          Catch::Contains("lacks tensor") &&
                                                          Catch::Contains("'resnet-fpn'"));
    }
    SECTION("another band count") {
        edit_header(path, [](nlohmann::json& h) { h["model"]["in_bands"] = 13; });
        CHECK_THROWS_WITH(cdk::nn::load_bundle(path), Catch::Contains("has shape [4, 3, 3, 3]") &&
                                                          Catch::Contains("needs [4, 13, 3, 3]"));
    }
    SECTION("unknown architecture") {
        edit_header(path, [](nlohmann::json& h) { h["model"]["arch"] = "fc-future"; });
        CHECK_THROWS_AS(cdk::nn::load_bundle(path), cdk::ModelError);
        CHECK_THROWS_WITH(cdk::nn::load_bundle(path), Catch::Contains("'fc-future'") &&
                                                          Catch::Contains("cannot be rebuilt"));
    }
    SECTION("unknown format version") {
        edit_header(path, [](nlohmann::json& h) { h["format"] = "cdkit-model/2"; });
        CHECK_THROWS_WITH(cdk::nn::read_bundle_header(path), Catch::Contains("'cdkit-model/2'") &&
                                                                 Catch::Contains("'cdkit-model/1'"));
    }
}

TEST_CASE("a bundle's checksums catch damaged weights and an edited header", "[nn][bundle]") {
    Scratch tmp;
    auto model = small_model("fc-siam-diff", 3, 4);
    const auto path = tmp.file("m.cdm");
    cdk::nn::save_bundle(path, *model, {{"tile_size", 256}});
    const auto header = cdk::nn::read_bundle_header(path);
    REQUIRE(header.contains("checksum"));
    CHECK(header["checksum"]["algorithm"] == "crc32");
    CHECK(header["checksum"]["weights"].get<std::string>().size() == 8);
    CHECK(cdk::nn::load_bundle(path).verified);
    // Saving a loaded bundle's header again gives a fresh, matching checksum.
    cdk::nn::save_bundle(tmp.file("again.cdm"), *model, header);
    CHECK(cdk::nn::load_bundle(tmp.file("again.cdm")).verified);

    const std::string bytes = read_all(path);
    SECTION("one flipped bit in the weights") {
        std::string bad = bytes;
        bad[bad.size() - 200] = char(bad[bad.size() - 200] ^ 0x01);
        write_all(path, bad);
        CHECK_NOTHROW(cdk::nn::read_bundle_header(path));  // the header alone is intact
        CHECK_THROWS_AS(cdk::nn::load_bundle(path), cdk::ModelError);
        CHECK_THROWS_WITH(cdk::nn::load_bundle(path),
                          Catch::Contains("'" + path + "'") && Catch::Contains("weights do not match their checksum"));
    }
    SECTION("a header value changed in place") {
        std::string bad = bytes;
        const auto at = bad.find("\"tile_size\": 256");
        REQUIRE(at != std::string::npos);
        bad[at + 13] = '5';
        write_all(path, bad);
        CHECK_THROWS_WITH(cdk::nn::read_bundle_header(path),
                          Catch::Contains("'" + path + "'") && Catch::Contains("header does not match its checksum"));
    }
    SECTION("no checksum (an older bundle): loads, unverified") {
        edit_header(path, [](nlohmann::json&) {});
        const auto b = cdk::nn::load_bundle(path);
        CHECK_FALSE(b.verified);
        CHECK(cdk::nn::unverified_warning(path).find("'" + path + "' has no checksum") != std::string::npos);
    }
}

TEST_CASE("save_bundle honours overwrite=false", "[nn][bundle]") {
    Scratch tmp;
    auto model = small_model();
    const auto path = tmp.file("m.cdm");
    cdk::nn::save_bundle(path, *model, {}, false);
    CHECK_THROWS_AS(cdk::nn::save_bundle(path, *model, {}, false), cdk::ConfigError);
    CHECK_NOTHROW(cdk::nn::save_bundle(path, *model, {}, true));
}

TEST_CASE("check_input names both sides of a mismatch", "[nn][bundle]") {
    const nlohmann::json header = {{"bands", std::vector<std::string>(13, "B")},
                                   {"data_type", "UInt16"},
                                   {"model", {{"arch", "fc-ef"}, {"in_bands", 13}, {"width", 16}}}};
    CHECK_NOTHROW(cdk::nn::check_input(header, 13, "UInt16", "m.cdm", "x.tif"));
    CHECK_THROWS_AS(cdk::nn::check_input(header, 3, "Byte", "m.cdm", "x.tif"), cdk::ModelError);
    CHECK_THROWS_WITH(cdk::nn::check_input(header, 3, "Byte", "m.cdm", "x.tif"),
                      "bundle 'm.cdm' expects 13 UInt16 bands, scene 'x.tif' has 3 Byte bands");
    CHECK_THROWS_WITH(cdk::nn::check_input(header, 13, "Float32", "m.cdm", "x.tif"),
                      Catch::Contains("UInt16") && Catch::Contains("Float32"));
    // Without "bands" the model's in_bands is the reference.
    const nlohmann::json bare = {{"model", {{"arch", "fc-ef"}, {"in_bands", 4}, {"width", 16}}}};
    CHECK_NOTHROW(cdk::nn::check_input(bare, 4, "Byte", "m.cdm", "x.tif"));
    CHECK_THROWS_WITH(cdk::nn::check_input(bare, 3, "Byte", "m.cdm", "x.tif"), Catch::Contains("expects 4"));
}
