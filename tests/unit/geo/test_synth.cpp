#include <catch2/catch.hpp>

#include <gdal_priv.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cdk/core/error.hpp"
#include "cdk/geo/cva.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/geo/synth.hpp"
#include "support/support.hpp"

using namespace cdk::geo;
using cdk::test::read_band;
using cdk::test::TempDir;

namespace {

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(slurp(path)); }

// All bands of a raster, band-sequential.
std::vector<std::vector<double>> read_all(const std::string& path) {
    auto ds = open_raster(path);
    std::vector<std::vector<double>> out;
    for (int b = 1; b <= ds->GetRasterCount(); ++b) out.push_back(read_band(path, b));
    return out;
}

bool all_zero(const std::vector<std::vector<double>>& img, size_t i) {
    for (const auto& band : img)
        if (band[i] != 0) return false;
    return true;
}

SynthOptions small(const std::string& out, int size = 300) {
    SynthOptions o;
    o.out = out;
    o.width = o.height = size;
    o.border = 8;
    return o;
}

struct Counts {
    long long tp = 0, fp = 0, fn = 0, tn = 0;
    double f1() const { return tp == 0 ? 0.0 : 2.0 * tp / (2.0 * tp + fp + fn); }
};

}  // namespace

TEST_CASE("synthetic pair: grid, bands, type, nodata and an exact label", "[geo][synth]") {
    TempDir tmp;
    SynthOptions o = small(tmp / "scene", 320);
    o.height = 280;
    o.bands = 3;
    o.type = "UInt16";
    o.epsg = 32632;
    o.pixel_size = 5;
    o.misregistration = 2;
    o.seed = 7;
    auto summary = synthesize_pair(o);
    REQUIRE(cdk::test::list_dir(tmp / "scene") ==
            std::vector<std::string>{"label.tif", "post.tif", "pre.tif", "truth.json"});
    CHECK(cdk::test::list_dir(tmp.path()) ==
          std::vector<std::string>{"scene"});  // no temporary left

    for (const char* name : {"pre.tif", "post.tif", "label.tif"}) {
        auto ds = open_raster(tmp / "scene" + "/" + name);
        Grid g = grid_of(*ds);
        CHECK(g.width == 320);
        CHECK(g.height == 280);
        CHECK(g.geotransform == std::array<double, 6>{500000, 5, 0, 5000000, 0, -5});
        CHECK(epsg_of(g.crs_wkt) == 32632);
        const bool label = std::string(name) == "label.tif";
        CHECK(ds->GetRasterCount() == (label ? 1 : 3));
        for (int b = 1; b <= ds->GetRasterCount(); ++b) {
            auto* band = ds->GetRasterBand(b);
            int has = 0;
            const double nd = band->GetNoDataValue(&has);
            CHECK(has);
            CHECK(nd == (label ? 255 : 0));
            CHECK(band->GetRasterDataType() == (label ? GDT_Byte : GDT_UInt16));
        }
        if (label) CHECK(ds->GetRasterBand(1)->GetColorTable() != nullptr);
    }

    const auto pre = read_all(tmp / "scene/pre.tif");
    const auto post = read_all(tmp / "scene/post.tif");
    const auto label = read_band(tmp / "scene/label.tif");
    long long changed = 0, valid = 0, pre_nodata = 0, post_nodata = 0;
    double diff_in = 0, diff_out = 0;
    double vmin = 1e9, vmax = -1e9;
    for (size_t i = 0; i < label.size(); ++i) {
        const bool nd1 = all_zero(pre, i), nd2 = all_zero(post, i);
        pre_nodata += nd1;
        post_nodata += nd2;
        REQUIRE((label[i] == 255) == (nd1 || nd2));  // 255 exactly where either date is nodata
        if (label[i] == 255) continue;
        REQUIRE((label[i] == 0 || label[i] == 1));
        ++valid;
        double d = 0;
        for (int b = 0; b < 3; ++b) {
            d += std::abs(post[b][i] - pre[b][i]);
            vmin = std::min({vmin, pre[b][i], post[b][i]});
            vmax = std::max({vmax, pre[b][i], post[b][i]});
        }
        if (label[i] == 1) {
            ++changed;
            diff_in += d;
        } else {
            diff_out += d;
        }
    }
    // Both dates have nodata: date 2's border (left and top), date 1's corner cut.
    CHECK(post_nodata >= 8 * 320 + 8 * 280 - 64);
    CHECK(all_zero(post, 0));
    CHECK(all_zero(post, 7 * 320 + 300));  // row 7: still in the top border
    CHECK(!all_zero(pre, 0));
    CHECK(pre_nodata > 0);
    CHECK(all_zero(pre, label.size() - 1));  // bottom-right corner cut
    // Reflectance-like UInt16 values on valid pixels.
    CHECK(vmin >= 1);
    CHECK(vmax <= 10000);
    CHECK(vmax > 1000);

    const double car = static_cast<double>(changed) / valid;
    CHECK(changed > 0);
    CHECK(car > 0.01);
    CHECK(car < 0.15);
    CHECK(summary["changed_pixels"] == changed);
    CHECK(summary["valid_pixels"] == valid);
    auto truth = read_json(tmp / "scene/truth.json");
    CHECK(truth["seed"] == 7);
    CHECK(truth["changed_pixels"] == changed);
    CHECK(truth["car"].get<double>() == Approx(car));
    CHECK(truth["options"]["misregistration"] == 2);
    REQUIRE(truth["changes"].size() > 0);
    for (const auto& c : truth["changes"]) {
        CHECK((c["kind"] == "appear" || c["kind"] == "vanish"));
        CHECK((c["object"] == "building" || c["object"] == "road"));
        const auto& bb = c["bbox"];
        CHECK(bb[0] >= 0);
        CHECK(bb[1] >= 0);
        CHECK(bb[2] <= 320);
        CHECK(bb[3] <= 280);
        CHECK(bb[0] < bb[2]);
    }
    // The changes are real: pixels marked changed differ far more between dates than the
    // rest (which only carries illumination, season, noise and misregistration).
    const double mean_in = diff_in / changed, mean_out = diff_out / (valid - changed);
    INFO("mean |post - pre| inside " << mean_in << ", outside " << mean_out);
    CHECK(mean_in > 2 * mean_out);
}

TEST_CASE("synthetic pair: UInt8 values stay in 1..255 on valid pixels", "[geo][synth]") {
    TempDir tmp;
    SynthOptions o = small(tmp / "s", 200);
    o.border = 0;  // no nodata at all
    synthesize_pair(o);
    const auto pre = read_all(tmp / "s/pre.tif");
    REQUIRE(pre.size() == 4);
    auto ds = open_raster(tmp / "s/pre.tif");
    CHECK(ds->GetRasterBand(1)->GetRasterDataType() == GDT_Byte);
    for (const auto& band : pre)
        for (double v : band) REQUIRE((v >= 1 && v <= 255));
    const auto label = read_band(tmp / "s/label.tif");
    CHECK(std::count(label.begin(), label.end(), 255.0) == 0);
    CHECK(std::count(label.begin(), label.end(), 1.0) > 0);
}

TEST_CASE("synthetic pair: same seed gives identical files, another seed another scene",
          "[geo][synth]") {
    TempDir tmp;
    synthesize_pair(small(tmp / "a"));
    synthesize_pair(small(tmp / "b"));
    SynthOptions c = small(tmp / "c");
    c.seed = 2;
    synthesize_pair(c);
    for (const char* f : {"/pre.tif", "/post.tif", "/label.tif", "/truth.json"}) {
        CHECK(slurp(tmp / "a" + f) == slurp(tmp / "b" + f));
        CHECK(slurp(tmp / "a" + f) != slurp(tmp / "c" + f));
    }
}

TEST_CASE("synthetic pair: no seam between strips (output independent of strip height and threads)",
          "[geo][synth]") {
    TempDir tmp;
    SynthOptions a = small(tmp / "a");
    a.strip_height = 256;  // one boundary at row 256
    SynthOptions b = small(tmp / "b");
    b.strip_height = 37;  // boundaries at rows 37, 74, ...
    b.threads = 1;
    SynthOptions c = small(tmp / "c");
    c.strip_height = 1;
    c.threads = 3;
    synthesize_pair(a);
    synthesize_pair(b);
    synthesize_pair(c);
    for (const char* f : {"/pre.tif", "/post.tif", "/label.tif"}) {
        const auto ra = read_all(tmp / "a" + f);
        CHECK(ra == read_all(tmp / "b" + f));
        CHECK(ra == read_all(tmp / "c" + f));
    }
}

TEST_CASE("synthetic pair: an existing folder is kept unless overwriting", "[geo][synth]") {
    TempDir tmp;
    std::filesystem::create_directory(tmp / "s");
    std::ofstream(tmp / "s/keep.txt") << "old";
    SynthOptions o = small(tmp / "s", 64);
    CHECK_THROWS_AS(synthesize_pair(o), cdk::ConfigError);
    CHECK(cdk::test::list_dir(tmp / "s") == std::vector<std::string>{"keep.txt"});
    CHECK(cdk::test::list_dir(tmp.path()) == std::vector<std::string>{"s"});
    o.write.overwrite = true;
    synthesize_pair(o);
    CHECK(cdk::test::list_dir(tmp / "s") ==
          std::vector<std::string>{"label.tif", "post.tif", "pre.tif", "truth.json"});
}

TEST_CASE("synthetic pair: options are checked", "[geo][synth]") {
    SynthOptions o;
    o.out = "x";
    CHECK_NOTHROW(validate(o));
    auto bad = [&](auto change) {
        SynthOptions b = o;
        change(b);
        CHECK_THROWS_AS(validate(b), cdk::ConfigError);
    };
    bad([](SynthOptions& b) { b.type = "Float32"; });
    bad([](SynthOptions& b) { b.bands = 0; });
    bad([](SynthOptions& b) { b.border = 600; });
    bad([](SynthOptions& b) { b.width = 4; });
    bad([](SynthOptions& b) { b.pixel_size = 0; });
    bad([](SynthOptions& b) { b.out.clear(); });
    bad([](SynthOptions& b) { b.write.format = "PNG"; });
    TempDir tmp;
    o.out = tmp / "s";
    o.epsg = 999999;
    CHECK_THROWS_WITH(synthesize_pair(o), Catch::Contains("999999"));
    CHECK(cdk::test::list_dir(tmp.path()).empty());
}

TEST_CASE("Otsu's threshold splits a bimodal histogram between its modes", "[geo][cva]") {
    std::vector<double> h(100, 0);
    for (int i = 10; i < 20; ++i) h[i] = 50;
    for (int i = 70; i < 80; ++i) h[i] = 10;
    const size_t t = otsu_threshold(h);
    CHECK(t > 20);
    CHECK(t <= 70);
    CHECK(t == 45);  // middle of the empty gap
    CHECK(otsu_threshold(std::vector<double>(10, 0)) == 0);
}

TEST_CASE("change vector analysis finds the synthetic changes far better than chance",
          "[geo][cva]") {
    TempDir tmp;
    SynthOptions s = small(tmp / "scene", 400);
    s.seed = 3;
    synthesize_pair(s);
    CvaOptions o;
    o.pre = tmp / "scene/pre.tif";
    o.post = tmp / "scene/post.tif";
    o.out = tmp / "cva.tif";
    o.block_rows = 100;
    auto summary = change_vector_analysis(o);
    REQUIRE(cdk::test::exists(o.out));
    CHECK(summary["threshold_method"] == "otsu");
    CHECK(summary["threshold"].get<double>() > 0);

    auto ds = open_raster(o.out);
    auto pre = open_raster(o.pre);
    Grid g = grid_of(*ds);
    CHECK(g.geotransform == grid_of(*pre).geotransform);
    CHECK(g.same_as(grid_of(*pre)));
    int has = 0;
    CHECK(ds->GetRasterBand(1)->GetNoDataValue(&has) == 255);
    CHECK(has);
    CHECK(ds->GetRasterBand(1)->GetRasterDataType() == GDT_Byte);
    CHECK(ds->GetRasterBand(1)->GetColorTable() != nullptr);

    const auto pred = read_band(o.out);
    const auto label = read_band(tmp / "scene/label.tif");
    Counts c;
    long long valid = 0, changed = 0;
    for (size_t i = 0; i < label.size(); ++i) {
        REQUIRE((pred[i] == 255) == (label[i] == 255));  // nodata where either date is nodata
        if (label[i] == 255) continue;
        ++valid;
        changed += pred[i] == 1;
        if (pred[i] == 1 && label[i] == 1)
            ++c.tp;
        else if (pred[i] == 1)
            ++c.fp;
        else if (label[i] == 1)
            ++c.fn;
        else
            ++c.tn;
    }
    CHECK(summary["valid_pixels"] == valid);
    CHECK(summary["changed_pixels"] == changed);
    CHECK(summary["changed_area_m2"].get<double>() == Approx(changed * 100.0));
    CHECK(summary["car"].get<double>() == Approx(static_cast<double>(changed) / valid));
    // A random mask with the same positive rate q on prevalence p scores F1 = 2pq / (p + q).
    const double p = static_cast<double>(c.tp + c.fn) / valid,
                 q = static_cast<double>(changed) / valid;
    const double chance = 2 * p * q / (p + q);
    INFO("F1 " << c.f1() << ", chance " << chance << ", tp " << c.tp << " fp " << c.fp << " fn "
               << c.fn);
    CHECK(c.f1() > 0.3);
    CHECK(c.f1() > 3 * chance);
}

TEST_CASE("change vector analysis: a fixed threshold, and bad input", "[geo][cva]") {
    TempDir tmp;
    synthesize_pair(small(tmp / "scene", 64));
    CvaOptions o;
    o.pre = tmp / "scene/pre.tif";
    o.post = tmp / "scene/post.tif";
    o.out = tmp / "none.tif";
    o.threshold = 1e9;
    auto summary = change_vector_analysis(o);
    CHECK(summary["threshold_method"] == "fixed");
    CHECK(summary["changed_pixels"] == 0);
    CHECK(summary["valid_pixels"].get<long long>() > 0);

    o.out = tmp / "x.tif";
    o.threshold = -1;
    CHECK_THROWS_AS(change_vector_analysis(o), cdk::ConfigError);
    o.threshold.reset();
    o.pre = tmp / "missing.tif";
    CHECK_THROWS_WITH(change_vector_analysis(o), Catch::Contains("missing.tif"));
    CHECK(!cdk::test::exists(o.out));
}
