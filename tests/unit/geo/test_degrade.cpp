#include <catch2/catch.hpp>

#include <gdal_priv.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <numeric>
#include <vector>

#include "cdk/core/error.hpp"
#include "cdk/geo/degrade.hpp"
#include "support/support.hpp"

using namespace cdk::geo;
using cdk::test::read_band;
using cdk::test::TempDir;

namespace {

// A range that neither clips nor rounds: the operations' raw arithmetic is visible.
DegradeImageOptions raw(uint64_t seed = 1) {
    DegradeImageOptions o;
    o.range = ValueRange{-1e9, 1e9, false};
    o.seed = seed;
    return o;
}

// Smooth texture plus a checker, so every operation has something to change.
std::vector<float> textured(int bands, int h, int w, double scale = 100) {
    std::vector<float> v(static_cast<size_t>(bands) * h * w);
    for (int b = 0; b < bands; ++b)
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x)
                v[(size_t(b) * h + y) * w + x] = static_cast<float>(
                    scale * (1.2 + std::sin(0.31 * x + b) * std::cos(0.17 * y) + 0.4 * (((x / 3) + (y / 2)) % 2)));
    return v;
}

double mean_of(const std::vector<float>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }

double std_of(const std::vector<float>& v) {
    const double m = mean_of(v);
    double s = 0;
    for (float x : v) s += (x - m) * (x - m);
    return std::sqrt(s / (v.size() - 1));
}

void check_bad(const std::string& spec, const std::string& culprit) {
    INFO(spec);
    try {
        DegradeSpec::parse(spec);
        FAIL("accepted");
    } catch (const cdk::ConfigError& e) {
        const std::string msg = e.what();
        CHECK(msg.find(culprit) != std::string::npos);
        CHECK(msg.find('\n') == std::string::npos);
    }
}

}  // namespace

TEST_CASE("degradation specs parse, print back, and name a bad term", "[geo][degrade]") {
    CHECK(DegradeSpec::parse("blur=1.5,noise=10,jpeg=40").text() == "blur=1.5,noise=10,jpeg=40");
    // The order of application is fixed, whatever the order written.
    CHECK(DegradeSpec::parse("jpeg=40, res=4,haze=0.6:900,blur=2x0.5@30,noise=2%").text() ==
          "haze=0.6:900,blur=2x0.5@30,res=4,noise=2%,jpeg=40");
    const auto s = DegradeSpec::parse("blur=2x0.5");
    CHECK(s.blur->sigma_x == 2);
    CHECK(s.blur->sigma_y == 0.5);
    CHECK(s.blur->angle == 0);
    CHECK(DegradeSpec::parse("random").random);
    CHECK(DegradeSpec::parse("res=1").text() == "none");
    CHECK(DegradeSpec::parse("none").text() == "none");

    check_bad("", "empty");
    check_bad("blur=abc", "'blur=abc'");
    check_bad("blur=0", "'blur=0'");
    check_bad("blur=1@30", "'blur=1@30'");
    check_bad("noise=10,fog=3", "'fog=3'");
    check_bad("res=2.5", "'res=2.5'");
    check_bad("jpeg=0", "'jpeg=0'");
    check_bad("haze=1.5", "'haze=1.5'");
    check_bad("haze=0.5:x", "'haze=0.5:x'");
    check_bad("noise=-1", "'noise=-1'");
    check_bad("blur=1,blur=2", "'blur=2'");
    check_bad("random,jpeg=50", "'random'");
    check_bad("none,jpeg=50", "'none'");
    check_bad("blur", "'blur'");
    check_bad("blur=1,", "''");
}

TEST_CASE("res=f equals area averaging down then bicubic up (OpenCV)", "[geo][degrade]") {
    for (int f : {2, 3, 4}) {
        const int lw = 11, lh = 7, w = lw * f, h = lh * f;
        auto img = textured(1, h, w);
        cv::Mat src(h, w, CV_32F, img.data()), low, up;
        cv::resize(src, low, cv::Size(lw, lh), 0, 0, cv::INTER_AREA);
        cv::resize(low, up, cv::Size(w, h), 0, 0, cv::INTER_CUBIC);
        const cv::Mat expected = up.clone();
        degrade_image(img.data(), nullptr, 1, h, w, DegradeSpec::parse("res=" + std::to_string(f)), raw());
        double worst = 0;
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) worst = std::max(worst, double(std::abs(img[size_t(y) * w + x] - expected.at<float>(y, x))));
        INFO("f = " << f);
        CHECK(worst < 1e-3);  // values ~100: float rounding only
    }
}

TEST_CASE("res=f on a size that is not a multiple of f averages the partial cells", "[geo][degrade]") {
    // A 5x1 image, f = 2: cells {0,1} {2,3} {4}; means 1.5, 3.5, 5.
    std::vector<float> img{1, 2, 3, 4, 5};
    degrade_image(img.data(), nullptr, 1, 1, 5, DegradeSpec::parse("res=2"), raw());
    // Pixel 4 sits at cell coordinate (4 + 0.5) / 2 - 0.5 = 1.75: bicubic between cells 0..3
    // (index 3 clamped to 2): weights of t = 0.75.
    const double t = 0.75, A = -0.75;
    const double w0 = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A;
    const double w1 = ((A + 2) * t - (A + 3)) * t * t + 1;
    const double w2 = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1;
    const double w3 = 1 - w0 - w1 - w2;
    CHECK(img[4] == Approx(w0 * 1.5 + w1 * 3.5 + (w2 + w3) * 5).epsilon(1e-6));
}

TEST_CASE("blur kernels sum to 1 and have the requested spread", "[geo][degrade]") {
    for (const char* spec : {"blur=1.5", "blur=3x0.7@35", "blur=0.4"}) {
        std::vector<float> flat(40 * 30, 123.0f);
        degrade_image(flat.data(), nullptr, 1, 30, 40, DegradeSpec::parse(spec), raw());
        INFO(spec);
        for (float v : flat) REQUIRE(v == Approx(123).epsilon(1e-5));
    }
    // Impulse response: second moments along x and y are sigma_x² and sigma_y² (angle 0),
    // swapped at 90 degrees.
    for (const auto& [spec, vx, vy] : {std::tuple{"blur=2x1", 4.0, 1.0}, std::tuple{"blur=2x1@90", 1.0, 4.0}}) {
        const int n = 41, c = 20;
        std::vector<float> img(n * n, 0.0f);
        img[c * n + c] = 1;
        degrade_image(img.data(), nullptr, 1, n, n, DegradeSpec::parse(spec), raw());
        double sum = 0, mx = 0, my = 0;
        for (int y = 0; y < n; ++y)
            for (int x = 0; x < n; ++x) {
                const double v = img[y * n + x];
                sum += v;
                mx += v * (x - c) * (x - c);
                my += v * (y - c) * (y - c);
            }
        INFO(spec);
        CHECK(sum == Approx(1).epsilon(1e-5));
        CHECK(mx == Approx(vx).epsilon(0.03));  // truncated at 3 sigma
        CHECK(my == Approx(vy).epsilon(0.03));
    }
}

TEST_CASE("noise has the requested sigma and depends on the seed only", "[geo][degrade]") {
    const int n = 256;
    std::vector<float> a(n * n, 1000.0f);
    auto b = a, c = a;
    degrade_image(a.data(), nullptr, 1, n, n, DegradeSpec::parse("noise=10"), raw(5));
    degrade_image(b.data(), nullptr, 1, n, n, DegradeSpec::parse("noise=10"), raw(5));
    degrade_image(c.data(), nullptr, 1, n, n, DegradeSpec::parse("noise=10"), raw(6));
    // Sampling error of a standard deviation from 65536 values: 10 / sqrt(2n) ~ 0.03.
    CHECK(std_of(a) == Approx(10).margin(0.15));
    CHECK(mean_of(a) == Approx(1000).margin(0.15));
    CHECK(a == b);
    CHECK(a != c);
    // Relative: 2 % of the band's white level (here the constant 500).
    std::vector<float> r(n * n, 500.0f);
    degrade_image(r.data(), nullptr, 1, n, n, DegradeSpec::parse("noise=2%"), raw(5));
    CHECK(std_of(r) == Approx(10).margin(0.15));
}

TEST_CASE("UInt16 results stay in range and integral", "[geo][degrade]") {
    const int n = 64;
    std::vector<float> img(n * n);
    for (int i = 0; i < n * n; ++i) img[i] = (i % 2) ? 65530.0f : 3.0f;
    DegradeImageOptions o;
    o.range = ValueRange::of(GDT_UInt16);
    degrade_image(img.data(), nullptr, 1, n, n, DegradeSpec::parse("noise=2000,jpeg=50"), o);
    for (float v : img) {
        REQUIRE(v >= 0);
        REQUIRE(v <= 65535);
        REQUIRE(v == std::nearbyint(v));
    }
    CHECK(*std::max_element(img.begin(), img.end()) > 60000);  // clipped, not wrapped
}

TEST_CASE("haze follows I·t + A·(1 - t)", "[geo][degrade]") {
    std::vector<float> img{10, 100, 200, 250};
    degrade_image(img.data(), nullptr, 1, 2, 2, DegradeSpec::parse("haze=0.6:240"), raw());
    for (const auto& [got, in] : {std::pair{img[0], 10.0}, {img[1], 100.0}, {img[2], 200.0}, {img[3], 250.0}})
        CHECK(got == Approx(in * 0.6 + 240 * 0.4));
    // Default airlight: the band's 99th percentile (here of 0..99: rank 98).
    std::vector<float> ramp(100);
    std::iota(ramp.begin(), ramp.end(), 0.0f);
    degrade_image(ramp.data(), nullptr, 1, 10, 10, DegradeSpec::parse("haze=0.5"), raw());
    CHECK(ramp[0] == Approx(49));
    CHECK(ramp[99] == Approx(99 * 0.5 + 49));
}

TEST_CASE("JPEG degrades 8-bit data and keeps UInt16 on its band's scale", "[geo][degrade]") {
    const int h = 48, w = 64;
    auto img = textured(1, h, w, 80);
    for (float& v : img) v = std::nearbyint(v);
    const auto orig = img;
    DegradeImageOptions o;
    o.range = ValueRange::of(GDT_Byte);
    degrade_image(img.data(), nullptr, 1, h, w, DegradeSpec::parse("jpeg=20"), o);
    double err = 0;
    for (size_t i = 0; i < img.size(); ++i) err += std::abs(img[i] - orig[i]);
    err /= img.size();
    CHECK(err > 0.5);  // visibly compressed
    CHECK(err < 15);   // still the same picture
    auto hi = orig;
    degrade_image(hi.data(), nullptr, 1, h, w, DegradeSpec::parse("jpeg=100"), o);
    for (size_t i = 0; i < hi.size(); ++i) REQUIRE(std::abs(hi[i] - orig[i]) <= 3);

    // UInt16: 8-bit rescale of [min, max] → every result is min + k·(max − min)/255.
    auto u = textured(1, h, w, 2000);
    for (float& v : u) v = std::nearbyint(v);
    const auto lv = image_levels(u.data(), nullptr, 1, h, w);
    o.range = ValueRange::of(GDT_UInt16);
    degrade_image(u.data(), nullptr, 1, h, w, DegradeSpec::parse("jpeg=60"), o);
    const double step = (lv[0].max - lv[0].min) / 255;
    for (float v : u) {
        REQUIRE(v >= lv[0].min - 0.5);
        REQUIRE(v <= lv[0].max + 0.5);
        const double k = (v - lv[0].min) / step;
        REQUIRE(std::abs(k - std::nearbyint(k)) * step <= 0.5 + 1e-6);  // rounded to an integer
    }
}

TEST_CASE("nodata pixels keep their value and do not leak into their neighbours", "[geo][degrade]") {
    const int n = 32;
    std::vector<float> img(2 * n * n, 100.0f);
    std::vector<uint8_t> valid(n * n, 1);
    for (int y = 10; y < 20; ++y)
        for (int x = 0; x < 12; ++x) {
            valid[y * n + x] = 0;
            img[y * n + x] = img[n * n + y * n + x] = 0;  // nodata value 0
        }
    DegradeImageOptions o;
    o.range = ValueRange::of(GDT_Byte);
    degrade_image(img.data(), valid.data(), 2, n, n, DegradeSpec::parse("blur=2,res=3,jpeg=50"), o);
    for (int i = 0; i < n * n; ++i) {
        if (valid[i]) {
            REQUIRE(std::abs(img[i] - 100) <= 2);  // JPEG of a flat field, no dark halo
        } else {
            REQUIRE(img[i] == 0);
            REQUIRE(img[n * n + i] == 0);
        }
    }
}

TEST_CASE("the random mix is drawn from the seed", "[geo][degrade]") {
    const auto r = DegradeSpec::parse("random");
    CHECK(r.draw(3).text() == r.draw(3).text());
    int blur = 0, res = 0, haze = 0, jpeg = 0, noise = 0, differ = 0;
    for (uint64_t s = 0; s < 400; ++s) {
        const auto d = r.draw(s);
        CHECK_FALSE(d.random);
        blur += d.blur.has_value();
        haze += d.haze.has_value();
        noise += d.noise.has_value();
        jpeg += d.jpeg > 0;
        if (d.res > 1) {
            ++res;
            CHECK(d.res <= 4);
        }
        if (d.jpeg) CHECK((d.jpeg >= 30 && d.jpeg <= 95));
        if (d.blur) CHECK((d.blur->sigma_x >= 0.5 && d.blur->sigma_x <= 2.5));
        differ += d.text() != r.draw(s + 1).text();
        CHECK(DegradeSpec::parse(d.text()).text() == d.text());  // what was applied can be rerun
    }
    for (int count : {blur, res, noise, jpeg}) CHECK((count > 150 && count < 250));  // p = 0.5
    CHECK((haze > 50 && haze < 110));                                               // p = 0.2
    CHECK(differ > 350);

    const int n = 64;
    auto a = textured(3, n, n), b = a, c = a;
    DegradeImageOptions o;
    o.range = ValueRange::of(GDT_UInt16);
    o.seed = 11;
    degrade_image(a.data(), nullptr, 3, n, n, r, o);
    degrade_image(b.data(), nullptr, 3, n, n, r, o);
    o.seed = 12;
    degrade_image(c.data(), nullptr, 3, n, n, r, o);
    CHECK(a == b);
    CHECK(a != c);
}

TEST_CASE("a raster degraded window by window equals one whole-image call", "[geo][degrade]") {
    TempDir tmp;
    cdk::test::RasterSpec rs;
    rs.width = 101;
    rs.height = 75;
    rs.bands = 3;
    rs.type = GDT_UInt16;
    rs.nodata = 0;
    auto value = [](int b, int x, int y) {
        if (x < 9 && y > 30) return 0.0;  // nodata corner
        return std::floor(3000 + 1500 * std::sin(0.2 * x + b) * std::cos(0.13 * y) + 700 * (((x / 5) + (y / 4)) % 2));
    };
    cdk::test::make_raster(tmp / "in.tif", rs, value);
    {
        GDALDatasetUniquePtr ds(GDALDataset::Open((tmp / "in.tif").c_str(), GDAL_OF_RASTER | GDAL_OF_UPDATE));
        ds->GetRasterBand(2)->SetDescription("green");
    }
    const int n = rs.width * rs.height;
    std::vector<float> whole(size_t(3) * n);
    for (int b = 0; b < 3; ++b) {
        const auto band = read_band(tmp / "in.tif", b + 1);
        std::copy(band.begin(), band.end(), whole.begin() + size_t(b) * n);
    }
    std::vector<uint8_t> valid(n);
    for (int i = 0; i < n; ++i) valid[i] = !(whole[i] == 0 && whole[n + i] == 0 && whole[2 * n + i] == 0);

    for (const char* spec : {"haze=0.8,blur=1.2x0.6@30,res=3,noise=20,jpeg=60", "random", "blur=2.5,noise=1%"}) {
        DegradeOptions o;
        o.in = tmp / "in.tif";
        o.out = tmp / "out.tif";
        o.spec = spec;
        o.seed = 7;
        o.block = 16;  // many windows, each with a halo
        o.write.overwrite = true;
        const auto summary = degrade_raster(o);
        auto expected = whole;
        DegradeImageOptions io;
        io.range = ValueRange::of(GDT_UInt16);
        io.seed = 7;
        degrade_image(expected.data(), valid.data(), 3, rs.height, rs.width, DegradeSpec::parse(spec), io);
        INFO(spec << " applied as " << summary["applied"].get<std::string>());
        long long differ = 0, changed = 0;
        for (int b = 0; b < 3; ++b) {
            const auto got = read_band(o.out, b + 1);
            for (int i = 0; i < n; ++i) {
                differ += got[i] != expected[size_t(b) * n + i];
                changed += got[i] != whole[size_t(b) * n + i];
            }
        }
        CHECK(differ == 0);
        CHECK(changed > 0);
    }

    // Grid, type, nodata and band descriptions are kept; nodata pixels stay nodata.
    GDALDatasetUniquePtr in(GDALDataset::Open((tmp / "in.tif").c_str(), GDAL_OF_RASTER));
    GDALDatasetUniquePtr out(GDALDataset::Open((tmp / "out.tif").c_str(), GDAL_OF_RASTER));
    REQUIRE((in && out));
    CHECK(grid_of(*out).same_as(grid_of(*in)));
    CHECK(grid_of(*out).crs_wkt == grid_of(*in).crs_wkt);
    CHECK(out->GetRasterBand(1)->GetRasterDataType() == GDT_UInt16);
    int has = 0;
    CHECK(out->GetRasterBand(3)->GetNoDataValue(&has) == 0);
    CHECK(has);
    CHECK(std::string(out->GetRasterBand(2)->GetDescription()) == "green");
    CHECK(read_band(tmp / "out.tif", 1)[40 * rs.width + 2] == 0);
}

TEST_CASE("degrade_raster refuses an existing output and unsupported data types", "[geo][degrade]") {
    TempDir tmp;
    cdk::test::RasterSpec rs;
    cdk::test::make_raster(tmp / "in.tif", rs, [](int, int x, int) { return x; });
    DegradeOptions o;
    o.in = tmp / "in.tif";
    o.out = tmp / "out.tif";
    o.spec = "blur=1";
    degrade_raster(o);
    CHECK_THROWS_AS(degrade_raster(o), cdk::ConfigError);
    o.write.overwrite = true;
    CHECK_NOTHROW(degrade_raster(o));

    rs.type = GDT_Float32;
    cdk::test::make_raster(tmp / "f.tif", rs, [](int, int x, int) { return x * 0.1; });
    o.in = tmp / "f.tif";
    o.out = tmp / "g.tif";
    CHECK_THROWS_WITH(degrade_raster(o), Catch::Contains("Float32"));
    CHECK_FALSE(cdk::test::exists(tmp / "g.tif"));
}
