#include "cdk/geo/degrade.hpp"

#include <cpl_vsi.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <functional>
#include <numeric>
#include <sstream>
#include <thread>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/geo/scene.hpp"

namespace cdk::geo {

namespace {

// ---------------------------------------------------------------------------------------
// Spec parsing

constexpr const char* kGrammar = "expected res=F, blur=S|SXxSY[@ANGLE], noise=S|P%, jpeg=Q, "
                                 "haze=T[:A], joined by commas, or random, or none";

[[noreturn]] void bad_term(const std::string& term, const std::string& why) {
    throw ConfigError("degradation term " + quote(term) + ": " + why);
}

double number_in(const std::string& term, const std::string& text, const std::string& what) {
    double v = 0;
    if (!parse_number(text, v) || !std::isfinite(v)) bad_term(term, what + " " + quote(text) + " is not a number");
    return v;
}

int integer_in(const std::string& term, const std::string& text, int lo, int hi, const std::string& what) {
    const double v = number_in(term, text, what);
    if (v != std::floor(v) || v < lo || v > hi)
        bad_term(term, what + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    return static_cast<int>(v);
}

BlurSpec parse_blur(const std::string& term, const std::string& value) {
    BlurSpec b;
    std::string sigmas = value;
    const auto at = value.find('@');
    if (at != std::string::npos) {
        sigmas = value.substr(0, at);
        b.angle = number_in(term, value.substr(at + 1), "angle");
    }
    const auto x = sigmas.find('x');
    b.sigma_x = number_in(term, sigmas.substr(0, x), "sigma");
    b.sigma_y = x == std::string::npos ? b.sigma_x : number_in(term, sigmas.substr(x + 1), "sigma");
    if (x == std::string::npos && at != std::string::npos)
        bad_term(term, "an angle needs two sigmas (blur=SXxSY@ANGLE)");
    for (double s : {b.sigma_x, b.sigma_y})
        if (s <= 0 || s > 50) bad_term(term, "sigma must be > 0 and <= 50 pixels");
    return b;
}

NoiseSpec parse_noise(const std::string& term, const std::string& value) {
    NoiseSpec n;
    n.relative = !value.empty() && value.back() == '%';
    n.sigma = number_in(term, n.relative ? value.substr(0, value.size() - 1) : value, "sigma");
    if (n.sigma < 0) bad_term(term, "sigma must be >= 0");
    return n;
}

HazeSpec parse_haze(const std::string& term, const std::string& value) {
    HazeSpec h;
    const auto colon = value.find(':');
    h.transmission = number_in(term, value.substr(0, colon), "transmission");
    if (h.transmission <= 0 || h.transmission > 1) bad_term(term, "transmission must be > 0 and <= 1");
    if (colon != std::string::npos) h.airlight = number_in(term, value.substr(colon + 1), "airlight");
    return h;
}

std::vector<std::string> split_terms(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream ss(text);
    std::string t;
    while (std::getline(ss, t, ',')) out.push_back(trim(t));
    if (!text.empty() && text.back() == ',') out.push_back("");
    return out;
}

// ---------------------------------------------------------------------------------------
// Hashing: the noise field and the random draws are pure functions of the seed (std
// distributions differ between standard libraries; the rasters must not).

inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

inline double unit(uint64_t h) { return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0); }

class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    double uniform(double a = 0, double b = 1) { return a + (b - a) * unit(mix64(s_ += 0x9e3779b97f4a7c15ULL)); }
    int integer(int lo, int hi) { return std::min(hi, lo + static_cast<int>(uniform() * (hi - lo + 1))); }

private:
    uint64_t s_;
};

// ---------------------------------------------------------------------------------------
// The operations, on a band-major float image.

struct Image {
    float* data;
    int bands, height, width;
    size_t plane() const { return static_cast<size_t>(height) * width; }
    float* band(int b) const { return data + b * plane(); }
};

// Index of a position outside [0, n) mirrored without repeating the edge (OpenCV's
// BORDER_REFLECT_101, the default of its filters).
int reflect101(int i, int n) {
    if (n == 1) return 0;
    const int period = 2 * (n - 1);
    i = std::abs(i) % period;
    return i < n ? i : period - i;
}

int blur_radius(const BlurSpec& b) { return static_cast<int>(std::ceil(3 * std::max(b.sigma_x, b.sigma_y))); }

std::vector<double> gauss_1d(double sigma, int r) {
    std::vector<double> k(2 * r + 1);
    for (int i = -r; i <= r; ++i) k[i + r] = std::exp(-0.5 * i * i / (sigma * sigma));
    const double sum = std::accumulate(k.begin(), k.end(), 0.0);
    for (double& v : k) v /= sum;  // sums to 1: a constant image stays constant
    return k;
}

// Correlate every band with a (2r+1)² kernel; a separable one is given as its row and
// column factors (kx, ky) with k2d empty.
void convolve(const Image& im, const std::vector<double>& kx, const std::vector<double>& ky,
              const std::vector<double>& k2d, int r) {
    const int w = im.width, h = im.height;
    std::vector<int> xi(w + 2 * r), yi(h + 2 * r);
    for (int i = 0; i < w + 2 * r; ++i) xi[i] = reflect101(i - r, w);
    for (int i = 0; i < h + 2 * r; ++i) yi[i] = reflect101(i - r, h);
    std::vector<float> src(im.plane()), tmp(im.plane());
    for (int b = 0; b < im.bands; ++b) {
        float* dst = im.band(b);
        std::copy(dst, dst + im.plane(), src.begin());
        if (k2d.empty()) {
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x) {
                    double s = 0;
                    for (int d = 0; d <= 2 * r; ++d) s += kx[d] * src[size_t(y) * w + xi[x + d]];
                    tmp[size_t(y) * w + x] = static_cast<float>(s);
                }
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x) {
                    double s = 0;
                    for (int d = 0; d <= 2 * r; ++d) s += ky[d] * tmp[size_t(yi[y + d]) * w + x];
                    dst[size_t(y) * w + x] = static_cast<float>(s);
                }
            continue;
        }
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
                double s = 0;
                for (int dy = 0; dy <= 2 * r; ++dy) {
                    const float* row = src.data() + size_t(yi[y + dy]) * w;
                    const double* k = k2d.data() + size_t(dy) * (2 * r + 1);
                    for (int dx = 0; dx <= 2 * r; ++dx) s += k[dx] * row[xi[x + dx]];
                }
                dst[size_t(y) * w + x] = static_cast<float>(s);
            }
    }
}

void apply_blur(const Image& im, const BlurSpec& b) {
    const int r = blur_radius(b);
    const double a = std::fmod(std::fmod(b.angle, 180.0) + 180.0, 180.0);
    if (b.sigma_x == b.sigma_y || a == 0 || a == 90) {
        // Axis-aligned: two 1-D passes instead of (2r+1)² taps.
        const bool swap = a == 90;
        convolve(im, gauss_1d(swap ? b.sigma_y : b.sigma_x, r), gauss_1d(swap ? b.sigma_x : b.sigma_y, r), {}, r);
        return;
    }
    const double t = b.angle * M_PI / 180, c = std::cos(t), s = std::sin(t);
    std::vector<double> k((2 * r + 1) * (2 * r + 1));
    for (int y = -r; y <= r; ++y)
        for (int x = -r; x <= r; ++x) {
            const double u = x * c + y * s, v = -x * s + y * c;
            k[size_t(y + r) * (2 * r + 1) + (x + r)] =
                std::exp(-0.5 * (u * u / (b.sigma_x * b.sigma_x) + v * v / (b.sigma_y * b.sigma_y)));
        }
    const double sum = std::accumulate(k.begin(), k.end(), 0.0);
    for (double& v : k) v /= sum;
    convolve(im, {}, {}, k, r);
}

// Bicubic weights of OpenCV's INTER_CUBIC (a = -0.75) for a fraction t in [0, 1).
std::array<double, 4> cubic_weights(double t) {
    constexpr double A = -0.75;
    std::array<double, 4> w;
    w[0] = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A;
    w[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
    w[2] = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1;
    w[3] = 1 - w[0] - w[1] - w[2];
    return w;
}

// Source index and weights of each of n output positions sampling a grid of m cells of
// f pixels (pixel centres: s = (x + 0.5) / f - 0.5), indices clamped (replicated edges).
void cubic_taps(int n, int m, int f, std::vector<std::array<int, 4>>& idx, std::vector<std::array<double, 4>>& wt) {
    idx.resize(n);
    wt.resize(n);
    for (int x = 0; x < n; ++x) {
        const double s = (x + 0.5) / f - 0.5;
        const int i = static_cast<int>(std::floor(s));
        wt[x] = cubic_weights(s - i);
        for (int k = 0; k < 4; ++k) idx[x][k] = std::clamp(i - 1 + k, 0, m - 1);
    }
}

// Area average over cells of f×f pixels (the last row and column of cells may be partial),
// then bicubic back onto the pixel grid.
void apply_res(const Image& im, int f) {
    const int w = im.width, h = im.height, lw = (w + f - 1) / f, lh = (h + f - 1) / f;
    std::vector<std::array<int, 4>> ix, iy;
    std::vector<std::array<double, 4>> wx, wy;
    cubic_taps(w, lw, f, ix, wx);
    cubic_taps(h, lh, f, iy, wy);
    std::vector<double> low(size_t(lw) * lh), across(size_t(lh) * w);
    for (int b = 0; b < im.bands; ++b) {
        float* p = im.band(b);
        std::fill(low.begin(), low.end(), 0.0);
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) low[size_t(y / f) * lw + x / f] += p[size_t(y) * w + x];
        for (int J = 0; J < lh; ++J)
            for (int I = 0; I < lw; ++I)
                low[size_t(J) * lw + I] /= double(std::min(f, w - I * f)) * std::min(f, h - J * f);
        for (int J = 0; J < lh; ++J)
            for (int x = 0; x < w; ++x) {
                double s = 0;
                for (int k = 0; k < 4; ++k) s += wx[x][k] * low[size_t(J) * lw + ix[x][k]];
                across[size_t(J) * w + x] = s;
            }
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
                double s = 0;
                for (int k = 0; k < 4; ++k) s += wy[y][k] * across[size_t(iy[y][k]) * w + x];
                p[size_t(y) * w + x] = static_cast<float>(s);
            }
    }
}

// Standard normal value of pixel (x, y) of band b in the raster: a pure function of
// (seed, b, x, y), so any window of the raster sees the same field.
double noise_at(uint64_t key, int b, int64_t x, int64_t y) {
    const uint64_t h1 = mix64(key + static_cast<uint64_t>(b) * 0x9e6c63d0676a9a99ULL +
                              static_cast<uint64_t>(x) * 0xd1b54a32d192ed03ULL +
                              static_cast<uint64_t>(y) * 0xaef17502108ef2d9ULL);
    const uint64_t h2 = mix64(h1 ^ 0x5851f42d4c957f2dULL);
    const double u1 = (static_cast<double>(h1 >> 11) + 1) * (1.0 / 9007199254740992.0);  // (0, 1]
    return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * unit(h2));                   // Box-Muller
}

void apply_noise(const Image& im, const NoiseSpec& n, const std::vector<BandLevels>& lv,
                 const DegradeImageOptions& o) {
    const uint64_t key = mix64(o.seed ^ 0x6e6f697365ULL);
    for (int b = 0; b < im.bands; ++b) {
        const double sigma = n.relative ? n.sigma / 100 * lv[b].white : n.sigma;
        if (sigma == 0) continue;
        float* p = im.band(b);
        for (int y = 0; y < im.height; ++y)
            for (int x = 0; x < im.width; ++x)
                p[size_t(y) * im.width + x] += static_cast<float>(sigma * noise_at(key, b, int64_t(o.x0) + x, int64_t(o.y0) + y));
    }
}

// JPEG round trip of one 8-bit plane through GDAL's JPEG driver in /vsimem/.
void jpeg_round_trip(std::vector<uint8_t>& plane, int width, int height, int quality) {
    static std::atomic<unsigned long> counter{0};
    ensure_gdal_registered();  // degrade_image is called without any other GDAL use (training)
    auto* mem_drv = GetGDALDriverManager()->GetDriverByName("MEM");
    auto* jpg_drv = GetGDALDriverManager()->GetDriverByName("JPEG");
    if (!mem_drv || !jpg_drv) throw ConfigError("this GDAL has no JPEG driver (needed by jpeg=Q)");
    std::ostringstream name;
    name << "/vsimem/cdk_degrade_" << std::this_thread::get_id() << "_" << counter++ << ".jpg";
    const std::string path = name.str();
    CPLErrorReset();
    DatasetPtr mem = adopt_dataset(mem_drv->Create("", width, height, 1, GDT_Byte, nullptr));
    if (!mem || mem->RasterIO(GF_Write, 0, 0, width, height, plane.data(), width, height, GDT_Byte, 1,
                              nullptr, 0, 0, 0, nullptr) != CE_None)
        throw IoError("cannot prepare a JPEG round trip: " + gdal_message());
    CPLStringList co;
    co.SetNameValue("QUALITY", std::to_string(quality).c_str());
    GDALDataset* enc = jpg_drv->CreateCopy(path.c_str(), mem.get(), FALSE, co.List(), nullptr, nullptr);
    bool ok = enc != nullptr;
    if (enc) GDALClose(enc);
    DatasetPtr dec = ok ? adopt_dataset(GDALDataset::Open(path.c_str(), GDAL_OF_RASTER | GDAL_OF_READONLY)) : nullptr;
    ok = dec && dec->RasterIO(GF_Read, 0, 0, width, height, plane.data(), width, height, GDT_Byte, 1, nullptr,
                              0, 0, 0, nullptr) == CE_None;
    const std::string msg = ok ? "" : gdal_message();
    dec.reset();
    VSIUnlink(path.c_str());
    VSIUnlink((path + ".aux.xml").c_str());
    if (!ok) throw IoError("cannot JPEG-compress a " + std::to_string(width) + "x" + std::to_string(height) + " image: " + msg);
}

// 8-bit data goes through JPEG as it is; other data is rescaled linearly from the band's
// [min, max] to 0..255 and back, so that a quality means the same loss for every type.
void apply_jpeg(const Image& im, int quality, const std::vector<BandLevels>& lv, const ValueRange& range) {
    std::vector<uint8_t> plane(im.plane());
    for (int b = 0; b < im.bands; ++b) {
        const bool direct = range.is_byte();
        const double lo = direct ? 0 : lv[b].min;
        const double step = direct ? 1 : (lv[b].max > lv[b].min ? (lv[b].max - lv[b].min) / 255 : 1);
        float* p = im.band(b);
        for (size_t i = 0; i < plane.size(); ++i)
            plane[i] = static_cast<uint8_t>(std::clamp(std::nearbyint((p[i] - lo) / step), 0.0, 255.0));
        jpeg_round_trip(plane, im.width, im.height, quality);
        for (size_t i = 0; i < plane.size(); ++i) p[i] = static_cast<float>(lo + plane[i] * step);
    }
}

void apply_haze(const Image& im, const HazeSpec& hz, const std::vector<BandLevels>& lv) {
    const double t = hz.transmission;
    for (int b = 0; b < im.bands; ++b) {
        const double veil = hz.airlight.value_or(lv[b].white) * (1 - t);
        float* p = im.band(b);
        for (size_t i = 0; i < im.plane(); ++i) p[i] = static_cast<float>(p[i] * t + veil);
    }
}

int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }
int round_up(int v, int m) { return (v + m - 1) / m * m; }

}  // namespace

// ---------------------------------------------------------------------------------------
// DegradeSpec

DegradeSpec DegradeSpec::parse(const std::string& text) {
    DegradeSpec s;
    const auto terms = split_terms(text);
    if (trim(text).empty()) throw ConfigError(std::string("empty degradation spec (") + kGrammar + ")");
    std::vector<std::string> seen;
    for (const auto& term : terms) {
        if (term == "random" || term == "none") {
            if (terms.size() > 1) bad_term(term, term + " cannot be combined with other terms");
            s.random = term == "random";
            continue;
        }
        const auto eq = term.find('=');
        if (eq == std::string::npos) bad_term(term, std::string("not of the form NAME=VALUE (") + kGrammar + ")");
        const std::string key = trim(term.substr(0, eq)), value = trim(term.substr(eq + 1));
        if (std::find(seen.begin(), seen.end(), key) != seen.end()) bad_term(term, key + " is given twice");
        seen.push_back(key);
        if (key == "res") s.res = integer_in(term, value, 1, 64, "factor");
        else if (key == "blur") s.blur = parse_blur(term, value);
        else if (key == "noise") s.noise = parse_noise(term, value);
        else if (key == "jpeg") s.jpeg = integer_in(term, value, 1, 100, "quality");
        else if (key == "haze") s.haze = parse_haze(term, value);
        else bad_term(term, std::string("unknown operation ") + quote(key) + " (" + kGrammar + ")");
    }
    return s;
}

std::string DegradeSpec::text() const {
    if (random) return "random";
    std::vector<std::string> t;
    if (haze)
        t.push_back("haze=" + format_number(haze->transmission) +
                    (haze->airlight ? ":" + format_number(*haze->airlight) : ""));
    if (blur) {
        const bool iso = blur->sigma_x == blur->sigma_y && blur->angle == 0;
        t.push_back("blur=" + format_number(blur->sigma_x) +
                    (iso ? "" : "x" + format_number(blur->sigma_y) + "@" + format_number(blur->angle)));
    }
    if (res > 1) t.push_back("res=" + std::to_string(res));
    if (noise) t.push_back("noise=" + format_number(noise->sigma) + (noise->relative ? "%" : ""));
    if (jpeg > 0) t.push_back("jpeg=" + std::to_string(jpeg));
    if (t.empty()) return "none";
    std::string out = t[0];
    for (size_t i = 1; i < t.size(); ++i) out += "," + t[i];
    return out;
}

DegradeSpec DegradeSpec::draw(uint64_t seed) const {
    if (!random) return *this;
    // Every draw is made whether its operation is on or not, so changing one probability
    // does not reshuffle the others. Probabilities and ranges: docs/cd-degrade.md.
    // Strengths are rounded (0.01, angles 1 degree) so that `applied` reads back exactly.
    Rng rng(mix64(seed ^ 0x72616e646f6dULL));
    auto hundredths = [](double v) { return std::round(v * 100) / 100; };
    DegradeSpec s;
    const bool haze_on = rng.uniform() < 0.2;
    const double t = hundredths(rng.uniform(0.6, 0.95));
    const bool blur_on = rng.uniform() < 0.5, aniso = rng.uniform() < 0.5;
    const double sx = hundredths(rng.uniform(0.5, 2.5)), sy = hundredths(rng.uniform(0.5, 2.5));
    const double angle = std::floor(rng.uniform(0, 180));
    const bool res_on = rng.uniform() < 0.5;
    const int f = rng.integer(2, 4);
    const bool noise_on = rng.uniform() < 0.5;
    const double p = hundredths(rng.uniform(0.5, 3));
    const bool jpeg_on = rng.uniform() < 0.5;
    const int q = rng.integer(30, 95);
    if (haze_on) s.haze = HazeSpec{t, std::nullopt};
    if (blur_on) s.blur = aniso ? BlurSpec{sx, sy, angle} : BlurSpec{sx, sx, 0};
    if (res_on) s.res = f;
    if (noise_on) s.noise = NoiseSpec{p, true};
    if (jpeg_on) s.jpeg = q;
    return s;
}

int DegradeSpec::halo() const {
    if (random) return 3 * 4 + blur_radius(BlurSpec{2.5, 2.5, 0});  // the largest draw
    // Bicubic reads the cells from 2 before to 2 after the pixel's own: 3 cells of pixels.
    return (res > 1 ? 3 * res : 0) + (blur ? blur_radius(*blur) : 0);
}

// ---------------------------------------------------------------------------------------
// Levels and ranges

std::vector<BandLevels> image_levels(const float* image, const uint8_t* valid, int bands, int height, int width) {
    const size_t n = static_cast<size_t>(height) * width;
    std::vector<BandLevels> out(bands);
    std::vector<float> v;
    for (int b = 0; b < bands; ++b) {
        v.clear();
        const float* p = image + b * n;
        for (size_t i = 0; i < n; ++i)
            if (!valid || valid[i]) v.push_back(p[i]);
        if (v.empty()) continue;
        double sum = 0;
        for (float x : v) sum += x;
        const auto [mn, mx] = std::minmax_element(v.begin(), v.end());
        out[b].mean = sum / v.size();
        out[b].min = *mn;
        out[b].max = *mx;
        const size_t k = static_cast<size_t>(std::floor(0.99 * (v.size() - 1)));
        std::nth_element(v.begin(), v.begin() + k, v.end());
        out[b].white = v[k];
    }
    return out;
}

ValueRange ValueRange::of(GDALDataType type) {
    switch (type) {
        case GDT_Byte: return {0, 255, true};
        case GDT_UInt16: return {0, 65535, true};
        case GDT_Int16: return {-32768, 32767, true};
        case GDT_UInt32: return {0, 4294967295.0, true};
        case GDT_Int32: return {-2147483648.0, 2147483647.0, true};
        case GDT_Float32: return {-FLT_MAX, FLT_MAX, false};
        default: return {-DBL_MAX, DBL_MAX, false};
    }
}

// ---------------------------------------------------------------------------------------
// In-memory degradation

void degrade_image(float* image, const uint8_t* valid, int bands, int height, int width, const DegradeSpec& spec,
                   const DegradeImageOptions& o) {
    if (bands <= 0 || height <= 0 || width <= 0) return;
    const DegradeSpec s = spec.draw(o.seed);
    const std::vector<BandLevels> lv =
        o.levels.empty() ? image_levels(image, valid, bands, height, width) : o.levels;
    if (static_cast<int>(lv.size()) != bands)
        throw ConfigError("degradation levels for " + std::to_string(lv.size()) + " bands given for an image of " +
                          std::to_string(bands));
    const Image im{image, bands, height, width};
    // Nodata pixels would drag filters towards the nodata value: stand in the band mean
    // while filtering, and give the pixels back their own values at the end.
    std::vector<size_t> holes;
    std::vector<float> kept;
    if (valid)
        for (size_t i = 0; i < im.plane(); ++i)
            if (!valid[i]) holes.push_back(i);
    for (int b = 0; b < bands; ++b)
        for (size_t i : holes) {
            kept.push_back(im.band(b)[i]);
            im.band(b)[i] = static_cast<float>(lv[b].mean);
        }
    if (s.haze) apply_haze(im, *s.haze, lv);
    if (s.blur) apply_blur(im, *s.blur);
    if (s.res > 1) apply_res(im, s.res);
    if (s.noise) apply_noise(im, *s.noise, lv, o);
    if (s.jpeg > 0) apply_jpeg(im, s.jpeg, lv, o.range);
    for (size_t i = 0; i < static_cast<size_t>(bands) * im.plane(); ++i) {
        const double v = std::clamp<double>(image[i], o.range.lo, o.range.hi);
        image[i] = static_cast<float>(o.range.integer ? std::nearbyint(v) : v);
    }
    size_t k = 0;
    for (int b = 0; b < bands; ++b)
        for (size_t i : holes) im.band(b)[i] = kept[k++];
}

// ---------------------------------------------------------------------------------------
// Whole rasters

namespace {

void block_to_float(const Block& blk, std::vector<float>& out) {
    const size_t n = static_cast<size_t>(blk.window.pixels()) * blk.bands;
    out.resize(n);
    GDALCopyWords64(blk.data.data(), blk.type, blk.value_bytes(), out.data(), GDT_Float32, sizeof(float),
                    static_cast<GPtrDiff_t>(n));
}

// Exact levels of an integer raster from one histogram per band (the same order statistics
// image_levels finds by sorting), read in strips.
std::vector<BandLevels> raster_levels(const Scene& scene, const ValueRange& range, const RunContext& ctx) {
    const int W = scene.grid().width, H = scene.grid().height, B = scene.band_count();
    const size_t bins = static_cast<size_t>(range.hi - range.lo) + 1;
    std::vector<std::vector<uint64_t>> hist(B, std::vector<uint64_t>(bins, 0));
    std::vector<float> f;
    const int rows = std::max(1, (1 << 20) / std::max(1, W));
    for (int y = 0; y < H; y += rows) {
        const Block blk = scene.read(Window{0, y, W, std::min(rows, H - y)});
        block_to_float(blk, f);
        const size_t n = blk.valid.size();
        for (int b = 0; b < B; ++b)
            for (size_t i = 0; i < n; ++i)
                if (blk.valid[i]) ++hist[b][static_cast<size_t>(f[b * n + i] - range.lo)];
        ctx.progress(double(std::min(H, y + rows)) / H, "Levels");
    }
    std::vector<BandLevels> out(B);
    for (int b = 0; b < B; ++b) {
        uint64_t count = 0;
        double sum = 0;
        for (size_t v = 0; v < bins; ++v) {
            count += hist[b][v];
            sum += hist[b][v] * (range.lo + double(v));  // exact: integer sums below 2^53
        }
        if (count == 0) continue;
        const uint64_t rank = static_cast<uint64_t>(std::floor(0.99 * double(count - 1)));
        uint64_t seen = 0;
        bool have_min = false, have_white = false;
        for (size_t v = 0; v < bins; ++v) {
            if (!hist[b][v]) continue;
            const double value = range.lo + double(v);
            if (!have_min) {
                out[b].min = value;
                have_min = true;
            }
            out[b].max = value;
            seen += hist[b][v];
            if (!have_white && seen > rank) {
                out[b].white = value;
                have_white = true;
            }
        }
        out[b].mean = sum / double(count);
    }
    return out;
}

// Keep what a reader of the output would miss: band descriptions and colour interpretation.
void copy_band_metadata(GDALDataset& src, GDALDataset& dst) {
    for (int b = 1; b <= src.GetRasterCount(); ++b) {
        GDALRasterBand* s = src.GetRasterBand(b);
        GDALRasterBand* d = dst.GetRasterBand(b);
        if (s->GetDescription() && *s->GetDescription()) d->SetDescription(s->GetDescription());
        d->SetColorInterpretation(s->GetColorInterpretation());
    }
}

// Copy the core `core` (inside the degraded block `outer`) into a window-sized buffer.
void crop(const std::vector<float>& img, const Window& outer, const Window& core, int bands, std::vector<float>& out) {
    out.resize(static_cast<size_t>(core.pixels()) * bands);
    const size_t n = static_cast<size_t>(outer.pixels());
    size_t k = 0;
    for (int b = 0; b < bands; ++b)
        for (int y = core.y; y < core.y + core.height; ++y) {
            const float* row = img.data() + b * n + size_t(y - outer.y) * outer.width + (core.x - outer.x);
            std::copy(row, row + core.width, out.begin() + k);
            k += core.width;
        }
}

}  // namespace

void validate(const DegradeOptions& o) {
    if (o.in.empty()) throw ConfigError("an input raster is needed (--in)");
    if (o.out.empty()) throw ConfigError("an output raster is needed (--out)");
    check_not_input(o.out, {{"--in", o.in}});
    DegradeSpec::parse(o.spec);
    if (o.block < 16 || o.block > 16384)
        throw ConfigError("block size " + quote(std::to_string(o.block)) + " must be from 16 to 16384");
    validate(o.write, o.out);
}

nlohmann::json degrade_raster(const DegradeOptions& o, const RunContext& ctx) {
    const auto start = std::chrono::steady_clock::now();
    ensure_gdal_registered();
    validate(o);
    const DegradeSpec spec = DegradeSpec::parse(o.spec), drawn = spec.draw(o.seed);
    SceneSpec ss;
    ss.files = {o.in};
    const Scene scene = Scene::open(ss);
    const GDALDataType type = scene.data_type();
    if (type != GDT_Byte && type != GDT_UInt16 && type != GDT_Int16)
        throw ConfigError("cannot degrade " + quote(o.in) + ": its data type " + quote(GDALGetDataTypeName(type)) +
                          " is not Byte, UInt16 or Int16");
    const Grid& grid = scene.grid();
    const int W = grid.width, H = grid.height, B = scene.band_count();
    const ValueRange range = ValueRange::of(type);

    RasterWriter out(o.out, grid, B, type, o.write, scene.nodata());
    copy_band_metadata(*open_raster(o.in), out.dataset());
    DegradeImageOptions io;
    io.range = range;
    io.seed = o.seed;
    io.levels = raster_levels(scene, range, ctx.scaled(0, 0.2));

    // Windows and halo are multiples of the res factor (cells fall on the raster's cell
    // grid) and of 8 (JPEG blocks fall on the raster's 8x8 grid): each window's core is
    // then exactly what one call on the whole image gives.
    const int align = drawn.res * 8 / gcd(drawn.res, 8);
    const int core = round_up(o.block, align), halo = round_up(drawn.halo(), align);
    const RunContext pass = ctx.scaled(0.2, 1.0);
    const long long windows = (long long)((W + core - 1) / core) * ((H + core - 1) / core);
    long long done = 0;
    std::vector<float> img, part;
    for (int y = 0; y < H; y += core)
        for (int x = 0; x < W; x += core) {
            const Window c{x, y, std::min(core, W - x), std::min(core, H - y)};
            const int x0 = std::max(0, x - halo), y0 = std::max(0, y - halo);
            const Window e{x0, y0, std::min(W, x + c.width + halo) - x0, std::min(H, y + c.height + halo) - y0};
            const Block blk = scene.read(e);
            block_to_float(blk, img);
            io.x0 = e.x;
            io.y0 = e.y;
            degrade_image(img.data(), blk.valid.data(), B, e.height, e.width, drawn, io);
            crop(img, e, c, B, part);
            out.write_all(c, part.data(), GDT_Float32);
            pass.progress(double(++done) / windows, "Degrading");
        }
    out.commit();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return {{"in", o.in},          {"out", o.out},           {"spec", spec.text()},
            {"applied", drawn.text()}, {"seed", o.seed},     {"width", W},
            {"height", H},         {"bands", B},             {"data_type", GDALGetDataTypeName(type)},
            {"seconds", seconds}};
}

}  // namespace cdk::geo
