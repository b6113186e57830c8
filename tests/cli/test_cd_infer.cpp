#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cdk/geo/raster.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/nn/device.hpp"
#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::exists;
using cdk::test::check_one_error_line;
using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {
// The Python-side tests need Debian's python3-torch and python3-gdal; skip with a warning.
bool python_torch_missing() {
    if (cdk::test::run_shell("/usr/bin/python3 -c 'import torch, osgeo'").rc == 0) return false;
    WARN("skipped: Debian's python3-torch or python3-gdal is not installed");
    return true;
}
// A 96x80 synthetic scene in TMP/scene, tiled, and an fc-siam-diff bundle TMP/m.cdm of
// `width` trained `epochs` epochs on it. Returns the scene folder.
std::string synth_and_train(const TempDir& tmp, const std::string& width, const std::string& epochs) {
    cdk::test::SynthScene ss;
    ss.height = 80;
    const std::string scene = cdk::test::synth_scene(tmp / "scene", ss);
    cdk::test::tile_scene(scene, tmp / "tiles");
    auto t = run_tool("cd-train-teacher", {"--train", tmp / "tiles/tiles.csv", "--arch", "fc-siam-diff", "--width",
                                           width, "--epochs", epochs, "--out", tmp / "m.cdm", "--device", "cpu",
                                           "--threads", "1", "--quiet"});
    INFO(t.err);
    REQUIRE(t.rc == 0);
    return scene;
}
}  // namespace

TEST_CASE("cd-infer --help and --version", "[cli][infer]") {
    auto h = run_tool("cd-infer", {"--help"});
    CHECK(h.rc == 0);
    for (const char* flag : {"--model", "--pre", "--post", "--out", "--prob", "--threshold", "--tile-size",
                             "--overlap", "--batch-size", "--tta", "--device", "--of", "--co", "--overwrite"})
        CHECK(h.out.find(flag) != std::string::npos);
    auto v = run_tool("cd-infer", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cd-infer (cdkit)") != std::string::npos);
}

TEST_CASE("cd-infer maps a synthetic scene with a bundle from cd-train-teacher", "[cli][infer]") {
    TempDir tmp;
    const std::string scene = synth_and_train(tmp, "4", "1");
    const std::string model = tmp / "m.cdm";

    const std::string out = tmp / "change.tif";
    auto r = run_tool("cd-infer", {"--model", model, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                                   "--out", out, "--prob", tmp / "prob.tif", "--threads", "1", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(r.err.empty());
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["window"] == 96);  // automatic: the scene's longer side (one window), not the bundle's 32
    CHECK(j["window_automatic"] == true);
    CHECK(j["windows"] == 1);
    CHECK(j["overlap"] == 8);  // a quarter of the bundle's tile size
    CHECK(j["valid_pixels"].get<long long>() > 0);
    CHECK(j["valid_pixels"].get<long long>() < 96 * 80);  // cd-synth's nodata border
    CHECK(exists(out));
    CHECK(exists(tmp / "prob.tif"));
    CHECK(exists(tmp / "change.qml"));

    // The output is scored by cd-eval against the label on the same grid.
    auto e = run_tool("cd-eval", {"--pred", out, "--ref", scene + "/label.tif", "--quiet"});
    INFO(e.err);
    CHECK(e.rc == 0);

    // COG with overviews that GDAL's validator accepts, and polygons that ogrinfo reads.
    r = run_tool("cd-infer", {"--model", model, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                              tmp / "change_cog.tif", "--of", "COG", "--co", "BLOCKSIZE=32", "--polygons",
                              tmp / "change.gpkg", "--threads", "1", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto jc = nlohmann::json::parse(r.out);
    CHECK(jc["polygons"]["out"] == tmp / "change.gpkg");
    CHECK(jc["prob"].is_null());
    auto v = cdk::test::run_shell("/usr/bin/python3 -m osgeo_utils.samples.validate_cloud_optimized_geotiff '" +
                                  (tmp / "change_cog.tif") + "'");
    INFO(v.out << v.err);
    CHECK(v.rc == 0);
    CHECK(v.out.find("is a valid cloud optimized GeoTIFF") != std::string::npos);
    auto info = cdk::test::run_shell("gdalinfo '" + (tmp / "change_cog.tif") + "'");
    CHECK(info.out.find("Overviews:") != std::string::npos);
    CHECK(info.out.find("Color Table") != std::string::npos);
    auto og = cdk::test::run_shell("ogrinfo -so -al '" + (tmp / "change.gpkg") + "'");
    CHECK(og.rc == 0);
    CHECK(og.out.find("Layer name: changes") != std::string::npos);
    for (const char* field : {"pixels: Integer64", "area_m2: Real", "mean_prob: Real"})
        CHECK(og.out.find(field) != std::string::npos);
    for (const auto& name : cdk::test::list_dir(tmp.path()))  // the intermediate probability is gone
        CHECK(name.find(".prob.tif") == std::string::npos);

    // Existing output: refused, one line.
    r = run_tool("cd-infer", {"--model", model, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                              out, "--quiet"});
    check_one_error_line(r, out);

    // A 4-band scene does not fit a 3-band bundle: one line naming both.
    cdk::test::SynthScene four;
    four.width = 64;
    four.bands = 4;
    cdk::test::synth_scene(tmp / "four", four);
    r = run_tool("cd-infer", {"--model", model, "--pre", tmp / "four/pre.tif", "--post", tmp / "four/post.tif",
                              "--out", tmp / "four.tif", "--quiet"});
    check_one_error_line(r, model);
    CHECK(r.err.find("four/pre.tif") != std::string::npos);
    CHECK_FALSE(exists(tmp / "four.tif"));

    // Many scenes from a Slurm job array: task 4 of --array=3-4 takes the second scene.
    {
        std::ofstream f(tmp / "pairs.csv");
        f << "scene,pre,post\nfirst,scene/pre.tif,scene/post.tif\nsecond,scene/pre.tif,scene/post.tif\n";
    }
    setenv("SLURM_ARRAY_TASK_ID", "4", 1);
    setenv("SLURM_ARRAY_TASK_MIN", "3", 1);
    setenv("SLURM_ARRAY_TASK_COUNT", "2", 1);
    r = run_tool("cd-infer", {"--model", model, "--pairs", tmp / "pairs.csv", "--out", tmp / "maps", "--quiet"});
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("SLURM_ARRAY_TASK_MIN");
    unsetenv("SLURM_ARRAY_TASK_COUNT");
    INFO(r.err);
    CHECK(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["shard"] == "1/2");
    CHECK(exists(tmp / "maps/second.tif"));
    CHECK_FALSE(exists(tmp / "maps/first.tif"));
    r = run_tool("cd-infer", {"--model", model, "--pairs", tmp / "pairs.csv", "--out", tmp / "maps", "--resume",
                              "--quiet"});
    CHECK(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["skipped"] == 1);
    CHECK(exists(tmp / "maps/first.tif"));

    // --threshold model: the bundle's validation-chosen threshold. This bundle was trained
    // without --val, so it has none: one line naming it, nothing written.
    r = run_tool("cd-infer", {"--model", model, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                              tmp / "thr.tif", "--threshold", "model", "--quiet"});
    check_one_error_line(r, model);
    CHECK(r.err.find("validation-chosen threshold") != std::string::npos);
    CHECK_FALSE(exists(tmp / "thr.tif"));
    r = run_tool("cd-infer", {"--model", model, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                              tmp / "thr.tif", "--threshold", "0.5x", "--quiet"});
    check_one_error_line(r, "0.5x");
    CHECK_FALSE(exists(tmp / "thr.tif"));
    // With validation tiles the bundle carries one, and cd-infer applies it.
    const std::string validated = tmp / "mv.cdm";
    auto t = run_tool("cd-train-teacher", {"--train", tmp / "tiles/tiles.csv", "--val", tmp / "tiles/tiles.csv", "--arch",
                                      "fc-siam-diff", "--width", "4", "--epochs", "1", "--out", validated, "--device",
                                      "cpu", "--threads", "1", "--quiet"});
    INFO(t.err);
    REQUIRE(t.rc == 0);
    const double chosen =
        cdk::nn::load_bundle(validated).header["metrics"]["best_threshold"]["threshold"].get<double>();
    r = run_tool("cd-infer", {"--model", validated, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                              "--out", tmp / "thr.tif", "--threshold", "model", "--threads", "1", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto jt = nlohmann::json::parse(r.out);
    CHECK(jt["threshold"].get<double>() == Approx(chosen));
    CHECK(jt["folded"] == true);
    // --no-fold runs the layers as trained: the same mask here.
    r = run_tool("cd-infer", {"--model", validated, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                              "--out", tmp / "thr-nofold.tif", "--threshold", "model", "--no-fold", "--threads", "1",
                              "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto jn = nlohmann::json::parse(r.out);
    CHECK(jn["folded"] == false);
    CHECK(std::abs(jn["changed_pixels"].get<long long>() - jt["changed_pixels"].get<long long>()) <= 2);

    // A file that is not a bundle.
    r = run_tool("cd-infer", {"--model", scene + "/pre.tif", "--pre", scene + "/pre.tif", "--post",
                              scene + "/post.tif", "--out", tmp / "x.tif", "--quiet"});
    check_one_error_line(r, "not a cdkit model bundle");
    CHECK_FALSE(exists(tmp / "x.tif"));
}

TEST_CASE("cd-infer --amp: a bfloat16 map agrees with the float32 one, or is refused in one line",
          "[cli][infer][amp]") {
    TempDir tmp;
    const std::string scene = synth_and_train(tmp, "16", "2");  // width 16: channels-last, as on real CPUs
    const std::string model = tmp / "m.cdm";
    auto infer = [&](const std::string& name, bool amp) {
        std::vector<std::string> args = {"--model", model, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                                         "--out", tmp / (name + ".tif"), "--prob", tmp / (name + "_prob.tif"),
                                         "--device", "cpu", "--threads", "1", "--quiet"};
        if (amp) args.push_back("--amp");
        return run_tool("cd-infer", args);
    };
    auto f = infer("fp32", false);
    INFO(f.err);
    REQUIRE(f.rc == 0);
    CHECK(nlohmann::json::parse(f.out)["amp"] == false);
    auto r = infer("bf16", true);
    if (!cdk::nn::cpu_bf16_supported()) {
        check_one_error_line(r, "--amp");
        CHECK(r.err.find("AVX-512") != std::string::npos);
        CHECK_FALSE(exists(tmp / "bf16.tif"));
        return;
    }
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["amp"] == true);
    // Warned (even with --quiet) exactly when bfloat16 is emulated on this CPU.
    CHECK((r.err.find("runs emulated") != std::string::npos) == !cdk::nn::cpu_bf16_native());
    const auto pa = cdk::test::read_band(tmp / "fp32_prob.tif"), pb = cdk::test::read_band(tmp / "bf16_prob.tif");
    const auto ma = cdk::test::read_band(tmp / "fp32.tif"), mb = cdk::test::read_band(tmp / "bf16.tif");
    REQUIRE(pa.size() == pb.size());
    double worst = 0;
    size_t differ = 0, valid = 0;
    for (size_t i = 0; i < pa.size(); ++i) {
        CHECK((ma[i] == 255) == (mb[i] == 255));  // nodata is nodata either way
        if (ma[i] == 255) continue;
        ++valid;
        worst = std::max(worst, std::abs(pa[i] - pb[i]));
        differ += ma[i] != mb[i];
    }
    INFO("largest probability difference " << worst << ", " << differ << " of " << valid << " pixels differ");
    REQUIRE(valid > 0);
    // bfloat16 keeps 8 bits of mantissa: probabilities move by about 1e-2, not more, and
    // only pixels that sit at the threshold change sides.
    CHECK(worst < 0.05);
    CHECK(double(differ) < 0.01 * double(valid));
}

TEST_CASE("cd-infer runs a TorchScript model from Python and matches Python's output", "[cli][infer][torchscript]") {
    if (python_torch_missing()) return;
    TempDir tmp;
    cdk::test::SynthScene ss;
    ss.height = 80;
    ss.seed = 4;
    const std::string scene = cdk::test::synth_scene(tmp / "scene", ss);
    // examples/export_torchscript.py: a model with no spatial context (1x1 convolutions), so a
    // windowed run must equal Python's run on the whole scene; Python writes its own
    // probabilities for the comparison.
    auto py = cdk::test::run_shell("/usr/bin/python3 " + std::string(CDK_SOURCE_DIR) + "/examples/export_torchscript.py '" +
                                   tmp / "m.pt" + "' --probabilities '" + scene + "' '" + tmp / "expected.f32" + "'");
    INFO(py.err);
    REQUIRE(py.rc == 0);

    auto r = run_tool("cd-infer", {"--model", tmp / "m.pt", "--bands", "3", "--mean", "90,80,70", "--std", "30,25,20",
                                   "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                                   tmp / "c.tif", "--prob", tmp / "p.tif", "--tile-size", "32", "--overlap", "8",
                                   "--threads", "1", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["arch"] == "torchscript");
    const auto ours = cdk::test::read_band(tmp / "p.tif");
    const auto expected = cdk::test::read_f32(tmp / "expected.f32", ours.size());
    size_t compared = 0;
    double worst = 0;
    for (size_t i = 0; i < ours.size(); ++i) {
        if (ours[i] < 0) continue;  // nodata border: -1 in ours, not scored
        worst = std::max(worst, std::abs(ours[i] - double(expected[i])));
        ++compared;
    }
    CHECK(compared > ours.size() / 2);
    CHECK(worst < 1e-5);

    // --amp reaches a TorchScript model too: its convolutions run in bfloat16 (the
    // probabilities move, a little).
    if (cdk::nn::cpu_bf16_supported()) {
        r = run_tool("cd-infer", {"--model", tmp / "m.pt", "--bands", "3", "--mean", "90,80,70", "--std", "30,25,20",
                                  "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                                  tmp / "c16.tif", "--prob", tmp / "p16.tif", "--tile-size", "32", "--overlap", "8",
                                  "--threads", "1", "--amp", "--quiet"});
        INFO(r.err);
        REQUIRE(r.rc == 0);
        const auto half = cdk::test::read_band(tmp / "p16.tif");
        double worst16 = 0;
        for (size_t i = 0; i < half.size(); ++i)
            if (ours[i] >= 0) worst16 = std::max(worst16, std::abs(half[i] - double(expected[i])));
        CHECK(worst16 > 0);
        CHECK(worst16 < 0.02);
    }

    // Without --bands the file cannot be used; with a bundle --bands is refused.
    r = run_tool("cd-infer", {"--model", tmp / "m.pt", "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                              "--out", tmp / "x.tif", "--quiet"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("--bands") != std::string::npos);
    CHECK_FALSE(exists(tmp / "x.tif"));
}

TEST_CASE("QGIS loads cd-infer's change mask with its style and the polygons layer", "[cli][infer][qgis]") {
    if (cdk::test::run_shell("QT_QPA_PLATFORM=offscreen /usr/bin/python3 -c 'import qgis.core'").rc != 0) {
        WARN("skipped: QGIS's Python bindings (Debian's python3-qgis) are not installed");
        return;
    }
    TempDir tmp;
    const std::string scene = cdk::test::synth_scene(tmp / "scene");
    cdk::test::tile_scene(scene, tmp / "tiles");
    REQUIRE(run_tool("cd-train-teacher", {"--train", tmp / "tiles/tiles.csv", "--arch", "fc-siam-diff", "--width",
                                          "4", "--epochs", "1", "--out", tmp / "m.cdm", "--device", "cpu", "--quiet"})
                .rc == 0);
    // At the median probability, so that the 1-epoch model's map has changes to show.
    auto r = run_tool("cd-infer", {"--model", tmp / "m.cdm", "--pre", scene + "/pre.tif", "--post",
                                   scene + "/post.tif", "--out", tmp / "first.tif", "--prob", tmp / "p.tif", "--quiet"});
    REQUIRE(r.rc == 0);
    std::vector<double> probs;
    for (double p : cdk::test::read_band(tmp / "p.tif"))
        if (p >= 0) probs.push_back(p);
    std::sort(probs.begin(), probs.end());
    REQUIRE_FALSE(probs.empty());
    r = run_tool("cd-infer", {"--model", tmp / "m.cdm", "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                              "--out", tmp / "change.tif", "--polygons", tmp / "change.gpkg", "--min-area", "0",
                              "--threshold", std::to_string(probs[probs.size() / 2]), "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    // examples/qgis_render.py, QGIS headless: the raster with the style QGIS picks up beside it,
    // the polygon layer, rendered to a PNG.
    auto q = cdk::test::run_shell("QT_QPA_PLATFORM=offscreen /usr/bin/python3 " + std::string(CDK_SOURCE_DIR) +
                                  "/examples/qgis_render.py '" + tmp / "change.tif" + "' '" + tmp / "change.gpkg" +
                                  "' '" + tmp / "map.png" + "'");
    INFO(q.out << q.err);
    REQUIRE(q.rc == 0);
    const std::string crs = "EPSG:" + std::to_string(cdk::geo::epsg_of(cdk::geo::grid_of(*cdk::geo::open_raster(scene + "/pre.tif")).crs_wkt));
    CHECK(q.out.find("raster_valid True") != std::string::npos);
    CHECK(q.out.find("raster_crs " + crs + "\n") != std::string::npos);
    CHECK(q.out.find("style_loaded True") != std::string::npos);
    CHECK(q.out.find("renderer paletted") != std::string::npos);
    CHECK(q.out.find("vector_valid True") != std::string::npos);
    CHECK(q.out.find("vector_crs " + crs + "\n") != std::string::npos);
    CHECK(q.out.find("area_m2") != std::string::npos);
    CHECK(q.out.find("mean_prob") != std::string::npos);
    CHECK(q.out.find("rendered True") != std::string::npos);
    // The rendered map shows the style's red for changed pixels.
    const auto r_band = cdk::test::read_band(tmp / "map.png", 1), g_band = cdk::test::read_band(tmp / "map.png", 2);
    size_t red = 0;
    for (size_t i = 0; i < r_band.size(); ++i) red += r_band[i] > 200 && g_band[i] < 80;
    CHECK(red > 0);
}

TEST_CASE("no seams: a windowed map equals the whole-scene map of a model that sees window borders",
          "[cli][infer][seams]") {
    if (python_torch_missing()) return;
    TempDir tmp;
    cdk::test::SynthScene ss;
    ss.width = 160;
    ss.height = 96;
    ss.seed = 6;
    ss.border = false;
    const std::string scene = cdk::test::synth_scene(tmp / "scene", ss);
    // Zero-padded 3x3 convolutions: near a window's border the output differs from the
    // whole-scene output, as for any CNN. Python maps the whole scene at once.
    const std::string script = R"PY(
import sys, numpy as np, torch
from osgeo import gdal
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 2, 3, padding=1)
    def forward(self, pre, post):
        return self.b(torch.relu(self.a(torch.cat([pre, post - pre], 1)))) * 4
torch.manual_seed(1)
m = torch.jit.script(M().eval())
m.save(sys.argv[2])
read = lambda p: (torch.from_numpy(gdal.Open(p).ReadAsArray().astype(np.float32))[None] - 100) / 40
with torch.no_grad():
    p = torch.softmax(m(read(sys.argv[1] + "/pre.tif"), read(sys.argv[1] + "/post.tif")), 1)[0, 1]
p.numpy().astype(np.float32).tofile(sys.argv[3])
)PY";
    auto py = cdk::test::run_python(tmp.path(), script, {scene, tmp / "m.pt", tmp / "whole.f32"});
    INFO(py.err);
    REQUIRE(py.rc == 0);
    const auto whole = cdk::test::read_f32(tmp / "whole.f32", 160 * 96);
    // Compare cd-infer's map (32 px windows: 5 x 3 and more) with the whole-scene one.
    struct Diff {
        double worst = 0, mean = 0;
        long long other_mask = 0;  // pixels whose change/no-change differs
    };
    auto run = [&](const std::string& overlap, const std::string& name) {
        auto r = run_tool("cd-infer", {"--model", tmp / "m.pt", "--bands", "3", "--mean", "100,100,100", "--std",
                                       "40,40,40", "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                                       "--out", tmp / (name + ".tif"), "--prob", tmp / (name + "_p.tif"),
                                       "--tile-size", "32", "--overlap", overlap, "--threads", "1", "--quiet"});
        INFO(r.err);
        REQUIRE(r.rc == 0);
        const auto p = cdk::test::read_band(tmp / (name + "_p.tif"));
        Diff d;
        for (size_t i = 0; i < p.size(); ++i) {
            const double e = std::abs(p[i] - double(whole[i]));
            d.worst = std::max(d.worst, e);
            d.mean += e / double(p.size());
            d.other_mask += (p[i] >= 0.5) != (whole[i] >= 0.5f);
        }
        return d;
    };
    const Diff blended = run("16", "overlapped");
    const Diff cut = run("0", "cut");  // windows side by side, nothing to blend
    INFO("overlapped: worst " << blended.worst << ", mean " << blended.mean << ", other mask " << blended.other_mask
                           << "; cut: worst " << cut.worst << ", mean " << cut.mean);
    // Centre cropping with 16 px of overlap: the 2-pixel receptive field never reaches a
    // window border, so the windowed map is the whole-scene map up to float rounding.
    CHECK(blended.other_mask == 0);
    CHECK(blended.worst < 1e-5);
    CHECK(cut.worst > 0.01);  // while plain cutting shows seams: the model does see window borders
}
