// The programs in a GDAL user's hands: GDAL's flag spellings, usage errors, the output format
// from the extension, compressed GeoTIFFs, provenance, the bundle's threshold, the polygons'
// default minimum area, band checks, rounded JSON and --summary, quick looks and training
// curves.
#include <catch2/catch.hpp>

#include <gdal_priv.h>
#include <ogrsf_frmts.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "cdk/core/fs.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/nn/bundle.hpp"
#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::check_one_error_line;
using cdk::test::exists;
using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {

std::string text_of(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

std::string metadata(const std::string& path, const char* key, const char* domain = nullptr) {
    auto ds = cdk::geo::open_raster(path);
    const char* v = ds->GetMetadataItem(key, domain);
    return v ? v : "";
}

// A synthetic scene (TMP/scene), its 32 px tiles and an fc-siam-diff bundle TMP/m.cdm trained
// 2 epochs with validation (so that it records the threshold validation chose).
std::string scene_and_bundle(const TempDir& tmp) {
    cdk::test::SynthScene ss;
    ss.height = 80;
    const std::string scene = cdk::test::synth_scene(tmp / "scene", ss);
    const std::string tiles = cdk::test::tile_scene(scene, tmp / "tiles");
    auto t = run_tool("cd-train-teacher", {"--train", tiles, "--val", tiles, "--arch", "fc-siam-diff", "--width", "4",
                                           "--epochs", "2", "--out", tmp / "m.cdm", "--device", "cpu", "--threads",
                                           "1", "--quiet"});
    INFO(t.err);
    REQUIRE(t.rc == 0);
    return scene;
}

}  // namespace

TEST_CASE("GDAL's spellings -of, -co, --config, and usage errors exiting 2", "[cli][gis]") {
    TempDir tmp;
    const std::string scene = cdk::test::synth_scene(tmp / "scene");
    const std::vector<std::string> io = {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "-q"};
    auto with = [&](std::vector<std::string> a) {
        a.insert(a.begin(), io.begin(), io.end());
        return a;
    };
    auto r = run_tool("cd-cva", with({"--out", tmp / "cog.tif", "-of", "COG", "-co", "COMPRESS=DEFLATE", "--config",
                                      "GDAL_CACHEMAX", "64", "--config", "GDAL_NUM_THREADS=1"}));
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(metadata(tmp / "cog.tif", "LAYOUT", "IMAGE_STRUCTURE") == "COG");
    CHECK(metadata(tmp / "cog.tif", "COMPRESSION", "IMAGE_STRUCTURE") == "DEFLATE");

    // Usage errors: 2, as POSIX tools; help and version: 0.
    CHECK(run_tool("cd-cva", with({"--out", tmp / "x.tif", "--bogus"})).rc == 2);
    CHECK(run_tool("cd-cva", {"--pre", scene + "/pre.tif"}).rc == 2);         // --post, --out missing
    CHECK(run_tool("cd-cva", with({"--out", tmp / "x.tif", "--config"})).rc == 2);  // no KEY VALUE
    CHECK(run_tool("cd-eval", {"-q"}).rc == 2);
    CHECK(run_tool("cd-infer", {"--threshold"}).rc == 2);
    CHECK_FALSE(exists(tmp / "x.tif"));
    for (const char* tool : {"cd-cva", "cd-infer", "cd-tile", "cd-train-teacher"}) {
        const auto h = run_tool(tool, {"--help"});
        CHECK(h.rc == 0);
        CHECK(h.out.find("Example:") != std::string::npos);
        CHECK(h.out.find(std::string("man ") + tool) != std::string::npos);
        CHECK(h.out.find("2 usage error") != std::string::npos);
        const auto v = run_tool(tool, {"--version"});
        CHECK(v.rc == 0);
        CHECK(std::regex_search(v.out, std::regex(std::string(tool) + R"( \(cdkit\) [0-9]+\.[0-9]+\.[0-9]+)")));
    }
}

TEST_CASE("the output format follows the extension, and the default GeoTIFF is tiled and compressed", "[cli][gis]") {
    TempDir tmp;
    const std::string scene = cdk::test::synth_scene(tmp / "scene");
    auto cva = [&](const std::string& out, std::vector<std::string> extra = {}) {
        std::vector<std::string> a = {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out", out, "-q"};
        a.insert(a.end(), extra.begin(), extra.end());
        return run_tool("cd-cva", a);
    };
    auto r = cva(tmp / "c.tif");
    REQUIRE(r.rc == 0);
    {
        auto ds = cdk::geo::open_raster(tmp / "c.tif");
        CHECK(std::string(ds->GetDriver()->GetDescription()) == "GTiff");
        int bx = 0, by = 0;
        ds->GetRasterBand(1)->GetBlockSize(&bx, &by);
        CHECK(bx == 256);
        CHECK(by == 256);
        CHECK(std::string(ds->GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE")) == "DEFLATE");
    }
    // --co wins over the defaults it names; the others stay.
    REQUIRE(cva(tmp / "lzw.tif", {"--co", "COMPRESS=LZW"}).rc == 0);
    CHECK(metadata(tmp / "lzw.tif", "COMPRESSION", "IMAGE_STRUCTURE") == "LZW");
    REQUIRE(cva(tmp / "plain.tif", {"-co", "COMPRESS=NONE", "-co", "TILED=NO"}).rc == 0);
    CHECK(metadata(tmp / "plain.tif", "COMPRESSION", "IMAGE_STRUCTURE").empty());

    // .png: a PNG (GDAL writes it by copy), georeferenced through its .aux.xml, same values.
    r = cva(tmp / "c.png");
    INFO(r.err);
    REQUIRE(r.rc == 0);
    {
        auto ds = cdk::geo::open_raster(tmp / "c.png");
        CHECK(std::string(ds->GetDriver()->GetDescription()) == "PNG");
        double gt[6];
        CHECK(ds->GetGeoTransform(gt) == CE_None);
        CHECK(gt[1] == 10.0);
    }
    CHECK(cdk::test::read_band(tmp / "c.png") == cdk::test::read_band(tmp / "c.tif"));
    CHECK(exists(tmp / "c.png.aux.xml"));
    for (const auto& name : cdk::test::list_dir(tmp.path())) CHECK(name.find(".part-") == std::string::npos);

    // What cannot be written: an unknown extension, a lossy format, a format at odds with the name.
    check_one_error_line(cva(tmp / "c.foo"), std::vector<std::string>{"c.foo", "'.foo'", "--of"});
    check_one_error_line(cva(tmp / "c.jpg"), std::vector<std::string>{"c.jpg", "lossy"});
    check_one_error_line(cva(tmp / "d.tif", {"--of", "PNG"}), std::vector<std::string>{"d.tif", "--of PNG"});
    for (const char* f : {"c.foo", "c.jpg", "d.tif"}) CHECK_FALSE(exists(tmp / f));
    // No extension: GeoTIFF, as GDAL's own programs.
    REQUIRE(cva(tmp / "noext").rc == 0);
    CHECK(std::string(cdk::geo::open_raster(tmp / "noext")->GetDriver()->GetDescription()) == "GTiff");
}

TEST_CASE("cd-infer: provenance, the bundle's threshold, band descriptions, polygons without speckle",
          "[cli][gis][infer]") {
    TempDir tmp;
    const std::string scene = scene_and_bundle(tmp);
    const auto bundle = cdk::nn::load_bundle(tmp / "m.cdm");
    const auto best = bundle.info.best_threshold();
    REQUIRE(best);
    const std::vector<std::string> io = {"--model", tmp / "m.cdm", "--pre", scene + "/pre.tif", "--post",
                                         scene + "/post.tif", "--threads", "1", "-q"};
    auto infer = [&](std::vector<std::string> a) {
        a.insert(a.begin(), io.begin(), io.end());
        return run_tool("cd-infer", a);
    };
    auto r = infer({"--out", tmp / "a.tif", "--prob", tmp / "a_prob.tif", "--polygons", tmp / "a.gpkg", "--summary",
                    tmp / "a.json"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["threshold"].get<double>() == Approx(*best).margin(1e-6));
    CHECK(j["threshold_source"] == "model");
    // --summary: the same JSON in a file; numbers rounded (areas to the m²).
    CHECK(nlohmann::json::parse(text_of(tmp / "a.json")) == j);
    CHECK(j["changed_area_m2"].is_number_integer());
    CHECK(j["car"].dump().size() <= 10);  // 6 significant digits at most: "0.0123457"

    // Provenance in the map's metadata, band descriptions.
    CHECK(metadata(tmp / "a.tif", "CDK_MODEL") == tmp / "m.cdm");
    CHECK(metadata(tmp / "a.tif", "CDK_MODEL_ARCH") == "fc-siam-diff");
    CHECK(metadata(tmp / "a.tif", "CDK_MODEL_CRC32") == bundle.header["checksum"]["weights"].get<std::string>());
    CHECK(std::stod(metadata(tmp / "a.tif", "CDK_THRESHOLD")) == Approx(*best).margin(1e-6));
    CHECK(metadata(tmp / "a.tif", "CDK_COMMAND").find("cd-infer") != std::string::npos);
    CHECK(metadata(tmp / "a.tif", "CDK_COMMAND").find("--summary") != std::string::npos);
    CHECK_FALSE(metadata(tmp / "a.tif", "CDK_VERSION").empty());
    CHECK(metadata(tmp / "a.tif", "TIFFTAG_SOFTWARE").find("cdkit") != std::string::npos);
    CHECK(metadata(tmp / "a_prob.tif", "CDK_MODEL_ARCH") == "fc-siam-diff");
    CHECK(std::string(cdk::geo::open_raster(tmp / "a.tif")->GetRasterBand(1)->GetDescription()) == "change");
    CHECK(std::string(cdk::geo::open_raster(tmp / "a_prob.tif")->GetRasterBand(1)->GetDescription()) ==
          "change probability");

    // --threshold 0.5 as before; the mask then follows the probability at 0.5.
    r = infer({"--out", tmp / "b.tif", "--threshold", "0.5"});
    REQUIRE(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["threshold_source"] == "given");
    {
        const auto prob = cdk::test::read_band(tmp / "a_prob.tif"), mask = cdk::test::read_band(tmp / "b.tif");
        for (size_t i = 0; i < prob.size(); ++i)
            if (prob[i] >= 0) REQUIRE(mask[i] == (prob[i] >= 0.5 ? 1 : 0));
    }

    // Polygons: the default leaves out regions under 5 pixels; --min-area 0 keeps them all.
    r = infer({"--out", tmp / "c.tif", "--polygons", tmp / "all.gpkg", "--min-area", "0"});
    REQUIRE(r.rc == 0);
    const auto all = nlohmann::json::parse(r.out)["polygons"];
    const auto kept = j["polygons"];
    CHECK(kept["regions"].get<long long>() + kept["dropped"].get<long long>() == all["regions"].get<long long>());
    {
        auto ds = cdk::geo::adopt_dataset(static_cast<GDALDataset*>(
            GDALOpenEx((tmp / "a.gpkg").c_str(), GDAL_OF_VECTOR, nullptr, nullptr, nullptr)));
        auto* layer = ds->GetLayer(0);
        long long n = 0;
        for (auto& f : *layer) {
            CHECK(f->GetFieldAsInteger64("pixels") >= 5);
            ++n;
        }
        CHECK(n == kept["regions"].get<long long>());
    }
    r = infer({"--out", tmp / "d.tif", "--polygons", tmp / "d.gpkg", "--min-area", "2px"});
    REQUIRE(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["polygons"]["regions"].get<long long>() >= kept["regions"].get<long long>());
    check_one_error_line(infer({"--out", tmp / "e.tif", "--polygons", tmp / "e.gpkg", "--min-area", "5pixels"}),
                         std::vector<std::string>{"--min-area", "5pixels"});
    CHECK_FALSE(exists(tmp / "e.tif"));
    // A PNG cannot hold the probability.
    check_one_error_line(infer({"--out", tmp / "f.tif", "--prob", tmp / "f.png"}),
                         std::vector<std::string>{"f.png", "Float32"});
}

TEST_CASE("cd-infer warns when a scene's bands look unlike the bundle's training data", "[cli][gis][infer]") {
    TempDir tmp;
    const std::string scene = scene_and_bundle(tmp);
    // The same scene with its values divided by 5 (another product's scaling).
    cdk::test::RasterSpec spec;
    spec.width = 96;
    spec.height = 80;
    spec.bands = 3;
    for (const char* date : {"pre", "post"}) {
        std::vector<std::vector<double>> b;
        for (int k = 1; k <= 3; ++k) b.push_back(cdk::test::read_band(scene + "/" + date + ".tif", k));
        cdk::test::make_raster(tmp / (std::string(date) + "_dim.tif"), spec,
                               [&](int band, int x, int y) { return std::round(b[size_t(band - 1)][size_t(y * 96 + x)] / 5); });
    }
    auto run = [&](const std::string& pre, const std::string& post, const std::string& out,
                   std::vector<std::string> extra = {}) {
        std::vector<std::string> a = {"--model", tmp / "m.cdm", "--pre", pre, "--post", post, "--out", out,
                                      "--threads", "1"};
        a.insert(a.end(), extra.begin(), extra.end());
        return run_tool("cd-infer", a);
    };
    auto ok = run(scene + "/pre.tif", scene + "/post.tif", tmp / "ok.tif");
    REQUIRE(ok.rc == 0);
    CHECK(ok.err.find("Warning") == std::string::npos);
    auto far = run(tmp / "pre_dim.tif", tmp / "post_dim.tif", tmp / "far.tif");
    INFO(far.err);
    REQUIRE(far.rc == 0);  // a warning, not an error: the user may know better
    CHECK(far.err.find("far from the training data") != std::string::npos);
    CHECK(far.err.find("pre_dim.tif") != std::string::npos);
    CHECK(far.err.find("--scene-norm") != std::string::npos);
    auto quiet = run(tmp / "pre_dim.tif", tmp / "post_dim.tif", tmp / "q.tif", {"--no-band-check"});
    REQUIRE(quiet.rc == 0);
    CHECK(quiet.err.find("far from") == std::string::npos);
}

TEST_CASE("quick looks: date 2 with the changes in red, nodata as a grey checker", "[cli][gis][infer]") {
    TempDir tmp;
    const std::string scene = scene_and_bundle(tmp);
    // A threshold at the median probability, so that the tiny model's map has both classes.
    auto r = run_tool("cd-infer", {"--model", tmp / "m.cdm", "--pre", scene + "/pre.tif", "--post",
                                   scene + "/post.tif", "--out", tmp / "p_mask.tif", "--prob", tmp / "p.tif",
                                   "--threads", "1", "-q"});
    REQUIRE(r.rc == 0);
    std::vector<double> probs;
    for (double p : cdk::test::read_band(tmp / "p.tif"))
        if (p >= 0) probs.push_back(p);
    std::sort(probs.begin(), probs.end());
    REQUIRE(probs.size() > 100);
    const double median = probs[probs.size() / 2];
    REQUIRE(median < probs.back());
    // Full size (96 x 80 < --quicklook-size), so that picture pixels are map pixels.
    r = run_tool("cd-infer", {"--model", tmp / "m.cdm", "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                              "--out", tmp / "m.tif", "--quicklook", tmp / "q.png", "--threshold",
                              cdk::format_number(median), "--threads", "1", "-q"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["quicklook"]["width"] == 96);
    auto check_picture = [](const std::string& png, const std::string& mask_path) {
        auto ds = cdk::geo::open_raster(png);
        CHECK(std::string(ds->GetDriver()->GetDescription()) == "PNG");
        REQUIRE(ds->GetRasterCount() == 3);
        const auto mask = cdk::test::read_band(mask_path);
        const auto R = cdk::test::read_band(png, 1), G = cdk::test::read_band(png, 2), B = cdk::test::read_band(png, 3);
        REQUIRE(R.size() == mask.size());
        long long changed = 0, red_unchanged = 0, unchanged = 0;
        for (size_t i = 0; i < mask.size(); ++i) {
            const bool red = R[i] >= 178 && G[i] <= 91 && B[i] <= 91;
            if (mask[i] == 1) {
                ++changed;
                CHECK(red);
            } else if (mask[i] == 0) {
                ++unchanged;
                red_unchanged += red;
            } else {  // nodata: grey
                CHECK(R[i] == G[i]);
                CHECK(G[i] == B[i]);
                CHECK((R[i] == 64 || R[i] == 96));
            }
        }
        CHECK(changed > 0);
        CHECK(red_unchanged < unchanged / 20);
    };
    check_picture(tmp / "q.png", tmp / "m.tif");

    // A scene larger than the picture: decimated to --quicklook-size on its longer side.
    r = run_tool("cd-cva", {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out", tmp / "cva.tif",
                            "--quicklook", tmp / "cva.png", "--quicklook-size", "48", "-q"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    auto ds = cdk::geo::open_raster(tmp / "cva.png");
    CHECK(ds->GetRasterXSize() == 48);
    CHECK(ds->GetRasterYSize() == 40);
    r = run_tool("cd-cva", {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out", tmp / "cva2.tif",
                            "--quicklook", tmp / "cva.jpg", "-q"});
    check_one_error_line(r, std::vector<std::string>{"cva.jpg", ".png"});
    CHECK_FALSE(exists(tmp / "cva2.tif"));
}

TEST_CASE("training draws its curves beside the bundle, epoch by epoch", "[cli][gis][train]") {
    TempDir tmp;
    scene_and_bundle(tmp);
    const std::string svg = text_of(tmp / "m.cdm.curves.svg");
    CHECK(svg.rfind("<?xml", 0) == 0);
    CHECK(svg.find("</svg>") != std::string::npos);
    CHECK(svg.find("training loss") != std::string::npos);
    CHECK(svg.find("F1 (change)") != std::string::npos);
    // Two epochs: two points on each of the loss, validation loss, F1 and best-threshold F1 lines.
    size_t circles = 0;
    for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1)) ++circles;
    CHECK(circles == 8);
}
