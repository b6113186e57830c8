#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include "cdk/core/error.hpp"
#include "cdk/geo/metrics.hpp"
#include "support/support.hpp"

using namespace cdk::geo;
using cdk::test::make_raster;
using cdk::test::RasterSpec;
using cdk::test::TempDir;

namespace {

Confusion make_confusion(long long tp, long long fp, long long fn, long long tn) {
    Confusion c;
    c.tp = tp;
    c.fp = fp;
    c.fn = fn;
    c.tn = tn;
    return c;
}

void check_class(const ClassMetrics& m, double p, double r, double f1, double iou) {
    CHECK(m.precision == Approx(p));
    CHECK(m.recall == Approx(r));
    CHECK(m.f1 == Approx(f1));
    CHECK(m.iou == Approx(iou));
}

// Every number in the JSON is finite (nlohmann writes NaN/inf as null).
void check_no_nan(const nlohmann::json& j) {
    if (j.is_structured()) {
        for (const auto& v : j) check_no_nan(v);
    } else {
        CHECK(!j.is_null());
        if (j.is_number_float()) CHECK(std::isfinite(j.get<double>()));
    }
}

Confusion confusion_in(const nlohmann::json& entry) {
    const auto& c = entry.at("confusion");
    Confusion out = make_confusion(c.at("tp"), c.at("fp"), c.at("fn"), c.at("tn"));
    out.excluded = c.at("excluded");
    return out;
}

}  // namespace

TEST_CASE("metrics of a hand-computed confusion (kappa included)", "[geo][eval]") {
    // N = 100; predicted change 50, reference change 60.
    const Metrics m = compute_metrics(make_confusion(40, 10, 20, 30));
    check_class(m.change, 40.0 / 50, 40.0 / 60, 80.0 / 110, 40.0 / 70);
    check_class(m.no_change, 30.0 / 50, 30.0 / 40, 60.0 / 90, 30.0 / 60);
    CHECK(m.oa == Approx(0.7));
    // pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    CHECK(m.kappa == Approx(0.4));
    CHECK(m.miou == Approx((40.0 / 70 + 0.5) / 2));
    CHECK(m.mf1 == Approx((80.0 / 110 + 60.0 / 90) / 2));
}

TEST_CASE("metrics of a second hand-computed confusion with rare change", "[geo][eval]") {
    const Metrics m = compute_metrics(make_confusion(5, 5, 0, 90));
    check_class(m.change, 0.5, 1.0, 10.0 / 15, 0.5);
    check_class(m.no_change, 1.0, 90.0 / 95, 180.0 / 185, 90.0 / 95);
    CHECK(m.oa == Approx(0.95));
    // pe = 0.10 * 0.05 + 0.90 * 0.95 = 0.86; kappa = 0.09 / 0.14
    CHECK(m.kappa == Approx(0.09 / 0.14));
}

TEST_CASE("perfect and all-wrong predictions", "[geo][eval]") {
    const Metrics p = compute_metrics(make_confusion(30, 0, 0, 70));
    check_class(p.change, 1, 1, 1, 1);
    check_class(p.no_change, 1, 1, 1, 1);
    CHECK(p.oa == 1.0);
    CHECK(p.kappa == Approx(1.0));
    CHECK(p.miou == 1.0);
    CHECK(p.mf1 == 1.0);

    const Metrics w = compute_metrics(make_confusion(0, 70, 30, 0));
    check_class(w.change, 0, 0, 0, 0);
    check_class(w.no_change, 0, 0, 0, 0);
    CHECK(w.oa == 0.0);
    // pe = 0.7 * 0.3 + 0.3 * 0.7 = 0.42; kappa = -0.42 / 0.58
    CHECK(w.kappa == Approx(-0.42 / 0.58));
    CHECK(w.miou == 0.0);
}

TEST_CASE("0/0 conventions: no change anywhere, missed change, false alarms, nothing valid",
          "[geo][eval]") {
    SECTION("no change in the reference nor in the prediction: change class perfect, kappa 1") {
        const Metrics m = compute_metrics(make_confusion(0, 0, 0, 100));
        check_class(m.change, 1, 1, 1, 1);
        check_class(m.no_change, 1, 1, 1, 1);
        CHECK(m.kappa == 1.0);
        CHECK(m.oa == 1.0);
    }
    SECTION("change everywhere in both: no-change class perfect") {
        const Metrics m = compute_metrics(make_confusion(100, 0, 0, 0));
        check_class(m.no_change, 1, 1, 1, 1);
        CHECK(m.kappa == 1.0);
    }
    SECTION("true change, none predicted: precision 0 (not 1)") {
        const Metrics m = compute_metrics(make_confusion(0, 0, 10, 90));
        check_class(m.change, 0, 0, 0, 0);
        CHECK(m.kappa == Approx(0.0));
        CHECK(m.oa == Approx(0.9));
    }
    SECTION("no true change, some predicted: recall 0 (not 1)") {
        const Metrics m = compute_metrics(make_confusion(0, 10, 0, 90));
        check_class(m.change, 0, 0, 0, 0);
        check_class(m.no_change, 1, 0.9, 180.0 / 190, 0.9);
        CHECK(m.kappa == Approx(0.0));
    }
    SECTION("no valid pixel at all") {
        const Metrics m = compute_metrics(Confusion{});
        CHECK(m.oa == 1.0);
        CHECK(m.kappa == 1.0);
        check_no_nan(to_json(m));
    }
    for (const auto& c : {make_confusion(0, 0, 0, 0), make_confusion(0, 0, 10, 90),
                          make_confusion(0, 10, 0, 90), make_confusion(7, 0, 0, 0)})
        check_no_nan(to_json(compute_metrics(c)));
}

TEST_CASE("confusion JSON and pooling", "[geo][eval]") {
    Confusion a = make_confusion(1, 2, 3, 4);
    a.excluded = 5;
    Confusion b = make_confusion(10, 20, 30, 40);
    b.excluded = 50;
    a += b;
    CHECK(a == [] {
        Confusion e = make_confusion(11, 22, 33, 44);
        e.excluded = 55;
        return e;
    }());
    const auto j = to_json(a);
    CHECK(j["tp"] == 11);
    CHECK(j["fp"] == 22);
    CHECK(j["fn"] == 33);
    CHECK(j["tn"] == 44);
    CHECK(j["valid"] == 110);
    CHECK(j["excluded"] == 55);
    const auto mj = to_json(compute_metrics(make_confusion(40, 10, 20, 30)));
    CHECK(mj["change"]["precision"].get<double>() == Approx(0.8));
    CHECK(mj["no_change"]["iou"].get<double>() == Approx(0.5));
    CHECK(mj["kappa"].get<double>() == Approx(0.4));
    CHECK(mj.contains("miou"));
    CHECK(mj.contains("mf1"));
    CHECK(mj["oa"].get<double>() == Approx(0.7));
}

TEST_CASE("confusion_from_masks excludes 255 in either mask", "[geo][eval]") {
    //                          tp tp fp fn tn  x  x  x  (2 counts as change)
    const uint8_t pred[] = {1, 2, 1, 0, 0, 255, 1, 255};
    const uint8_t ref[] = {1, 1, 0, 1, 0, 0, 255, 255};
    const Confusion c = confusion_from_masks(pred, ref, 8);
    CHECK(c == [] {
        Confusion e = make_confusion(2, 1, 1, 1);
        e.excluded = 3;
        return e;
    }());
    CHECK(c.valid() == 5);
}

TEST_CASE("evaluate streams strips and excludes nodata of either raster", "[geo][eval]") {
    TempDir tmp;
    RasterSpec s;
    s.width = 20;
    s.height = 17;
    // Prediction: change for x >= 10; nodata (255, tagged) on row 0.
    RasterSpec sp = s;
    sp.nodata = 255;
    make_raster(tmp / "pred.tif", sp, [](int, int x, int y) {
        return y == 0 ? 255 : x >= 10 ? 1 : 0;
    });
    // Reference: change for x >= 12; nodata tagged as 9 in column 0.
    RasterSpec sr = s;
    sr.nodata = 9;
    make_raster(tmp / "ref.tif", sr, [](int, int x, int) { return x == 0 ? 9 : x >= 12 ? 1 : 0; });
    // Valid: rows 1..16 (16 rows), columns 1..19. Per row: tp x 12..19 = 8, fp x 10..11 = 2,
    // fn 0, tn x 1..9 = 9. Excluded: row 0 (20) + column 0 of rows 1..16 (16).
    Confusion want = make_confusion(8 * 16, 2 * 16, 0, 9 * 16);
    want.excluded = 20 + 16;

    EvalOptions o;
    o.pred = tmp / "pred.tif";
    o.ref = tmp / "ref.tif";
    for (int rows : {0, 1, 3, 17}) {
        o.strip_rows = rows;
        const auto j = evaluate(o);
        INFO("strip rows " << rows);
        CHECK(confusion_in(j["pooled"]) == want);
        REQUIRE(j["scenes"].size() == 1);
        CHECK(j["scenes"][0]["scene"] == "ref");
        CHECK(j["scenes"][0]["pred"] == o.pred);
        CHECK(confusion_in(j["scenes"][0]) == want);
        CHECK(j["pooled"]["change"]["recall"].get<double>() == Approx(1.0));
        CHECK(j["pooled"]["change"]["precision"].get<double>() == Approx(0.8));
    }

    // Overriding the reference's nodata with a value it does not hold brings column 0 back
    // (9 counts as change there).
    o.strip_rows = 0;
    o.ref_nodata = 77;
    const auto j = evaluate(o);
    CHECK(j["pooled"]["confusion"]["excluded"] == 20);
    CHECK(j["pooled"]["confusion"]["fn"] == 16);
}

TEST_CASE("a LEVIR-style mask with 255 = change and no nodata tag counts 255 as change",
          "[geo][eval]") {
    TempDir tmp;
    RasterSpec s;
    s.width = s.height = 8;
    s.georeferenced = false;
    make_raster(tmp / "ref.tif", s, [](int, int x, int) { return x < 2 ? 255 : 0; });
    make_raster(tmp / "pred.tif", s, [](int, int x, int) { return x < 3 ? 255 : 0; });
    EvalOptions o;
    o.pred = tmp / "pred.tif";
    o.ref = tmp / "ref.tif";
    const auto j = evaluate(o);
    Confusion want = make_confusion(16, 8, 0, 40);
    CHECK(confusion_in(j["pooled"]) == want);
    // The same masks with 255 declared nodata exclude them instead.
    o.pred_nodata = 255;
    o.ref_nodata = 255;
    const auto k = evaluate(o);
    want = make_confusion(0, 0, 0, 40);
    want.excluded = 24;
    CHECK(confusion_in(k["pooled"]) == want);
}

TEST_CASE("evaluate with a pairs CSV: per-scene entries and pooled = sum", "[geo][eval]") {
    TempDir tmp;
    std::filesystem::create_directories(tmp / "masks");
    RasterSpec s;
    s.width = s.height = 10;
    make_raster(tmp / "masks/a_ref.tif", s, [](int, int x, int) { return x < 5 ? 1 : 0; });
    make_raster(tmp / "masks/a_pred.tif", s, [](int, int x, int) { return x < 4 ? 1 : 0; });
    RasterSpec s2 = s;
    s2.width = 7;
    s2.gt = {600000, 5, 0, 4000000, 0, -5};
    make_raster(tmp / "masks/b_ref.tif", s2, [](int, int, int y) { return y < 2 ? 1 : 0; });
    make_raster(tmp / "masks/b_pred.tif", s2, [](int, int, int y) { return y < 3 ? 1 : 0; });
    {
        std::ofstream csv(tmp / "pairs.csv");
        csv << "scene,pred,ref\nA,masks/a_pred.tif,masks/a_ref.tif\nB,masks/b_pred.tif,"
            << (tmp / "masks/b_ref.tif") << "\n";
    }
    EvalOptions o;
    o.pairs = tmp / "pairs.csv";
    const auto j = evaluate(o);
    REQUIRE(j["scenes"].size() == 2);
    CHECK(j["scenes"][0]["scene"] == "A");
    CHECK(j["scenes"][1]["scene"] == "B");
    CHECK(j["scenes"][0]["pred"] == tmp / "masks/a_pred.tif");
    const Confusion a = confusion_in(j["scenes"][0]), b = confusion_in(j["scenes"][1]);
    CHECK(a == make_confusion(40, 0, 10, 50));
    CHECK(b == make_confusion(14, 7, 0, 49));
    Confusion sum = a;
    sum += b;
    CHECK(confusion_in(j["pooled"]) == sum);
    CHECK(j["pooled"]["change"]["iou"].get<double>() == Approx(54.0 / 71));
    check_no_nan(j);
}

TEST_CASE("evaluate refuses a prediction on another grid, naming both files and grids",
          "[geo][eval]") {
    TempDir tmp;
    RasterSpec s;
    make_raster(tmp / "ref.tif", s, [](int, int, int) { return 0; });
    RasterSpec shifted = s;
    shifted.gt[0] += 10;
    make_raster(tmp / "shifted.tif", shifted, [](int, int, int) { return 0; });
    RasterSpec bigger = s;
    bigger.width = 17;
    make_raster(tmp / "bigger.tif", bigger, [](int, int, int) { return 0; });
    RasterSpec other_crs = s;
    other_crs.epsg = 32634;
    make_raster(tmp / "utm34.tif", other_crs, [](int, int, int) { return 0; });

    EvalOptions o;
    o.ref = tmp / "ref.tif";
    for (const std::string name : {"shifted.tif", "bigger.tif", "utm34.tif"}) {
        o.pred = tmp / name;
        INFO(name);
        CHECK_THROWS_AS(evaluate(o), cdk::ConfigError);
        CHECK_THROWS_WITH(evaluate(o), Catch::Contains("'" + (tmp / name) + "'") &&
                                           Catch::Contains("'" + (tmp / "ref.tif") + "'") &&
                                           Catch::Contains("16x16, EPSG:32633"));
    }
    o.pred = tmp / "bigger.tif";
    CHECK_THROWS_WITH(evaluate(o), Catch::Contains("17x16"));

    // In a pairs CSV, a mismatch in the last scene fails before any scene is evaluated.
    {
        std::ofstream csv(tmp / "pairs.csv");
        csv << "scene,pred,ref\nok,ref.tif,ref.tif\nbad,utm34.tif,ref.tif\n";
    }
    EvalOptions p;
    p.pairs = tmp / "pairs.csv";
    CHECK_THROWS_WITH(evaluate(p), Catch::Contains("utm34.tif") && Catch::Contains("EPSG:32634"));
}

TEST_CASE("evaluate validates its options and its pairs CSV", "[geo][eval]") {
    TempDir tmp;
    EvalOptions o;
    CHECK_THROWS_WITH(validate(o), Catch::Contains("exactly one input"));
    o.pred = "p.tif";
    CHECK_THROWS_WITH(validate(o), Catch::Contains("--pred and --ref go together"));
    o.ref = "r.tif";
    CHECK_NOTHROW(validate(o));
    o.pairs = "pairs.csv";
    CHECK_THROWS_WITH(validate(o), Catch::Contains("exactly one input"));

    {
        std::ofstream csv(tmp / "nocol.csv");
        csv << "scene,prediction,ref\nA,a.tif,b.tif\n";
    }
    CHECK_THROWS_WITH(read_eval_pairs_csv(tmp / "nocol.csv"), Catch::Contains("pred"));
    {
        std::ofstream csv(tmp / "dup.csv");
        csv << "scene,pred,ref\nA,a.tif,b.tif\nA,c.tif,d.tif\n";
    }
    CHECK_THROWS_WITH(read_eval_pairs_csv(tmp / "dup.csv"), Catch::Contains("'A' appears twice"));
    {
        std::ofstream csv(tmp / "empty.csv");
        csv << "scene,pred,ref\n";
    }
    CHECK_THROWS_WITH(read_eval_pairs_csv(tmp / "empty.csv"), Catch::Contains("lists no scene"));
    EvalOptions m;
    m.pred = tmp / "missing.tif";
    m.ref = tmp / "missing_ref.tif";
    CHECK_THROWS_AS(evaluate(m), cdk::IoError);
    CHECK_THROWS_WITH(evaluate(m),
                      Catch::Contains("missing_ref.tif") && Catch::Contains("no such file"));
}

TEST_CASE("an OSCD change map evaluated against itself is perfect", "[geo][eval]") {
    auto cm = cdk::test::shared_data("oscd/abudhabi/cm.tif");
    if (!cm) {
        WARN("skipped: ../shared/data/oscd is absent");
        return;
    }
    EvalOptions o;
    o.pred = o.ref = *cm;
    o.scene_name = "abudhabi";
    const auto j = evaluate(o);
    const Confusion c = confusion_in(j["pooled"]);
    CHECK(c.fp == 0);
    CHECK(c.fn == 0);
    CHECK(c.tp > 0);  // abudhabi has changed pixels
    CHECK(c.valid() == 785LL * 799);
    CHECK(j["pooled"]["kappa"].get<double>() == Approx(1.0));
    CHECK(j["scenes"][0]["scene"] == "abudhabi");
}
