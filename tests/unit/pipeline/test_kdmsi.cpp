// KD-MSI through the shared trainer and mapper: image-level labels only, multiscale sigmoid
// inference of a scene, pseudo-masks and the threshold sweep (cd-infer --tiles).
#include <catch2/catch.hpp>

#include <filesystem>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/pipeline/distill.hpp"
#include "cdk/pipeline/infer.hpp"
#include "cdk/pipeline/train.hpp"
#include "pipeline_fixtures.hpp"

using namespace cdk::pipeline;
using cdk::test::TempDir;
namespace fs = std::filesystem;

namespace {

DistillOptions kdmsi_options(const std::string& train, const std::string& out) {
    DistillOptions d;
    d.train = cdk::test::tiny_train_options(train, train, out);
    d.train.model.arch.clear();  // kd-msi-cam by default
    d.train.epochs = 2;
    d.method = "kd-msi";
    return d;
}

// A copy of a manifest beside it with one column changed by `edit(row, column index of name)`.
std::string edited_manifest(const std::string& manifest, const std::string& name,
                            const std::function<void(std::vector<std::vector<std::string>>&, int)>& edit,
                            const std::string& column) {
    auto t = cdk::read_csv(manifest);
    edit(t.rows, t.column(column));
    std::string text = cdk::csv_line(t.header) + "\n";
    for (const auto& r : t.rows) text += cdk::csv_line(r) + "\n";
    const std::string path = (fs::path(manifest).parent_path() / name).string();
    cdk::write_text_file(path, text);
    return path;
}

}  // namespace

TEST_CASE("KD-MSI reads only the image-level bit: other masks or no masks give the same weights",
          "[pipeline][distill][kdmsi]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "train");
    // No label rasters at all (label and CAR emptied; the `changed` column stays).
    auto no_masks = edited_manifest(
        tiles, "no_masks.csv", [](auto& rows, int c) { for (auto& r : rows) r[size_t(c)].clear(); }, "label");
    no_masks = edited_manifest(
        no_masks, "no_masks.csv", [](auto& rows, int c) { for (auto& r : rows) r[size_t(c)].clear(); }, "car");
    // Other masks: every tile points at the next tile's label raster.
    const auto other = edited_manifest(
        tiles, "other_masks.csv",
        [](auto& rows, int c) {
            const std::string first = rows.front()[size_t(c)];
            for (size_t i = 0; i + 1 < rows.size(); ++i) rows[i][size_t(c)] = rows[i + 1][size_t(c)];
            rows.back()[size_t(c)] = first;
        },
        "label");
    auto a = kdmsi_options(tiles, tmp / "a.cdm");
    const auto sa = distill_model(a);
    CHECK(sa["distillation"]["method"] == "kd-msi");
    CHECK(sa["metrics"].contains("image"));
    auto b = kdmsi_options(no_masks, tmp / "b.cdm");
    distill_model(b);
    auto c = kdmsi_options(other, tmp / "c.cdm");
    distill_model(c);
    CHECK(cdk::test::same_weights(tmp / "a.cdm", tmp / "b.cdm"));
    CHECK(cdk::test::same_weights(tmp / "a.cdm", tmp / "c.cdm"));
    // The log names the terms; the bundle records the method.
    const auto h = cdk::nn::read_bundle_info(tmp / "a.cdm");
    CHECK(h.model.arch == "kd-msi-cam");
    CHECK(h.distillation["method"] == "kd-msi");
    // A changed bit is what it learns from: flipping them changes the weights.
    const auto flipped = edited_manifest(
        tiles, "flipped.csv", [](auto& rows, int c) { for (auto& r : rows) r[size_t(c)] = r[size_t(c)] == "1" ? "0" : "1"; },
        "changed");
    auto f = kdmsi_options(flipped, tmp / "f.cdm");
    distill_model(f);
    CHECK_FALSE(cdk::test::same_weights(tmp / "a.cdm", tmp / "f.cdm"));
    // A tile with neither a bit nor a pixel label is refused, naming it.
    const auto unknown = edited_manifest(
        no_masks, "unknown.csv", [](auto& rows, int c) { rows[1][size_t(c)].clear(); }, "changed");
    auto u = kdmsi_options(unknown, tmp / "u.cdm");
    CHECK_THROWS_WITH(distill_model(u), Catch::Contains("image-level label"));
    // Pixel selection needs pixel-labelled validation tiles.
    auto p = kdmsi_options(no_masks, tmp / "p.cdm");
    p.kdmsi.select = "pixel";
    CHECK_THROWS_WITH(distill_model(p), Catch::Contains("no pixel label"));
    // A crop could cut the change out of a changed tile: refused.
    auto cr = kdmsi_options(tiles, tmp / "cr.cdm");
    cr.train.augment.crop = 16;
    CHECK_THROWS_AS(distill_model(cr), cdk::ConfigError);
    CHECK_FALSE(fs::exists(tmp / "u.cdm"));
}

TEST_CASE("a KD-MSI bundle maps scenes with MSI, writes pseudo-masks a segmenter trains on, and sweeps tau",
          "[pipeline][infer][kdmsi]") {
    TempDir tmp;
    const auto tiles = cdk::test::make_fixture_tiles(tmp, "train");
    auto d = kdmsi_options(tiles, tmp / "k.cdm");
    d.train.epochs = 3;
    distill_model(d);

    // A scene, mapped window by window with multiscale sigmoid inference.
    InferOptions o;
    o.model = tmp / "k.cdm";
    o.pre = tmp / "train_scene/pre.tif";
    o.post = tmp / "train_scene/post.tif";
    o.out = tmp / "map.tif";
    o.prob = tmp / "prob.tif";
    o.device = "cpu";
    o.threads = 1;
    const auto s = infer_scene(o);
    CHECK(s["op"]["mode"] == "msi");
    CHECK(s["op"]["scales"].size() == 4);
    CHECK(s["op"]["windows"].get<int>() > 0);
    CHECK(fs::exists(tmp / "map.tif"));
    CHECK(fs::exists(tmp / "prob.tif"));

    // A probability equal to the threshold is no change: a zero student CAM maps to exactly 0.5.
    {
        auto b = cdk::nn::load_bundle(tmp / "k.cdm");
        torch::NoGradGuard no_grad;
        b.model->named_parameters()["student.cam.weight"].zero_();
        cdk::nn::save_bundle(tmp / "half.cdm", *b.model, b.header, false);
    }
    InferOptions half = o;
    half.model = tmp / "half.cdm";
    half.out = tmp / "half.tif";
    half.prob = tmp / "half_prob.tif";
    half.msi_gate = false;
    const auto hs = infer_scene(half);
    CHECK(hs["changed_pixels"] == 0);
    const auto prob = cdk::test::read_band(tmp / "half_prob.tif");
    CHECK(prob[100] == Approx(0.5));

    // Pseudo-masks of the training tiles: a tile set cd-train-teacher trains on.
    InferOptions t;
    t.model = tmp / "k.cdm";
    t.tiles = tiles;
    t.out = tmp / "pseudo";
    t.device = "cpu";
    t.threads = 1;
    const auto ps = infer_tiles(t);
    CHECK(ps["count"] == 8);
    CHECK(ps["labelled_tiles"] == 8);  // the fixture's labels, only for the agreement report
    CHECK(ps["against_labels"].contains("change"));
    const auto pt = cdk::read_csv(tmp / "pseudo/tiles.csv");
    const auto src = cdk::read_csv(tiles);
    REQUIRE(pt.rows.size() == src.rows.size());
    const int lc = pt.column("label"), cc = pt.column("changed");
    for (size_t i = 0; i < pt.rows.size(); ++i) {
        CHECK(pt.rows[i][size_t(lc)] == "label/" + pt.rows[i][0] + ".tif");
        CHECK(pt.rows[i][size_t(cc)] == src.rows[i][size_t(src.column("changed"))]);
        // A tile labelled unchanged gets an all-background pseudo-mask (its bit gates the map).
        if (pt.rows[i][size_t(cc)] == "0") {
            const auto m = cdk::test::read_band((tmp / "pseudo/") + pt.rows[i][size_t(lc)]);
            for (const auto v : m) CHECK((v == 0 || v == 255));
        }
    }
    auto so = cdk::test::tiny_train_options(tmp / "pseudo/tiles.csv", "", tmp / "second.cdm");
    so.epochs = 1;
    CHECK(train_model(so)["complete"] == true);
    InferOptions second = o;  // the second-stage model maps the scene as any bundle does
    second.model = tmp / "second.cdm";
    second.out = tmp / "second.tif";
    second.prob.clear();
    const auto ss = infer_scene(second);
    CHECK(ss["op"].is_null());
    CHECK(fs::exists(tmp / "second.tif"));
    // The output folder must not hold the manifest.
    InferOptions inside = t;
    inside.out = tmp / "train";
    inside.write.overwrite = true;
    CHECK_THROWS_WITH(infer_tiles(inside), Catch::Contains("holds the input --tiles"));
    CHECK(fs::exists(tiles));

    // The sweep: F1 and IoU at 19 thresholds against the pixel labels, nothing written.
    InferOptions sw = t;
    sw.out.clear();
    sw.tau_sweep = true;
    const auto sws = infer_tiles(sw);
    CHECK(sws["sweep"].size() == 19);
    CHECK(sws["sweep"][0]["threshold"] == Approx(0.05));
    CHECK(sws["best"]["f1"].get<double>() >= sws["sweep"][18]["f1"].get<double>());
    sw.out = tmp / "nope";
    CHECK_THROWS_AS(infer_tiles(sw), cdk::ConfigError);
    CHECK_FALSE(fs::exists(tmp / "nope"));
}
