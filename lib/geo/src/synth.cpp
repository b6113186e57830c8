#include "cdk/geo/synth.hpp"

#include <ogr_spatialref.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>
#include <vector>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/version.hpp"

namespace fs = std::filesystem;

namespace cdk::geo {

namespace {

// ---------------------------------------------------------------------------------------
// Hashing: every pixel is a pure function of (seed, x, y), so a strip can be generated
// without its neighbours and the output does not depend on the strip height.

inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

inline uint64_t hash_xy(uint64_t key, int64_t x, int64_t y) {
    return mix64(key + static_cast<uint64_t>(x) * 0xd1b54a32d192ed03ULL +
                 static_cast<uint64_t>(y) * 0xaef17502108ef2d9ULL);
}

inline double unit(uint64_t h) { return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0); }

inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Value noise on a lattice of `scale` pixels, smoothstep-interpolated, in [0, 1).
double value_noise(uint64_t key, int64_t x, int64_t y, int scale) {
    const int64_t ix = floor_div(x, scale), iy = floor_div(y, scale);
    double tx = static_cast<double>(x - ix * scale) / scale;
    double ty = static_cast<double>(y - iy * scale) / scale;
    tx = tx * tx * (3 - 2 * tx);
    ty = ty * ty * (3 - 2 * ty);
    const double a = unit(hash_xy(key, ix, iy)), b = unit(hash_xy(key, ix + 1, iy));
    const double c = unit(hash_xy(key, ix, iy + 1)), d = unit(hash_xy(key, ix + 1, iy + 1));
    return (a + (b - a) * tx) + ((c + (d - c) * tx) - (a + (b - a) * tx)) * ty;
}

// Fractal sum of octaves, normalised to [0, 1).
double fbm(uint64_t key, int64_t x, int64_t y, int scale, int octaves) {
    double sum = 0, norm = 0, amp = 1;
    for (int o = 0; o < octaves && scale >= 2; ++o) {
        sum += amp * value_noise(mix64(key + o), x, y, scale);
        norm += amp;
        amp *= 0.5;
        scale /= 2;
    }
    return sum / norm;
}

// A small portable generator for the object list (std distributions differ between
// standard libraries; the rasters must not).
class Rng {
  public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    uint64_t next() { return mix64(s_ += 0x9e3779b97f4a7c15ULL); }
    double uniform(double a = 0, double b = 1) { return a + (b - a) * unit(next()); }
    double normal() {
        const double u1 = std::max(unit(next()), 1e-300), u2 = unit(next());
        return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
    }

  private:
    uint64_t s_;
};

// ---------------------------------------------------------------------------------------
// Spectra: reflectance at six anchor bands (blue, green, red, NIR, SWIR1, SWIR2).

constexpr int kAnchors = 6;
using Spectrum = std::array<double, kAnchors>;

enum Cover { kWater, kForest, kCrop, kGrass, kBare, kCovers };
constexpr std::array<Spectrum, kCovers> kCoverSpectra{{
    {0.06, 0.05, 0.03, 0.02, 0.01, 0.01},  // water
    {0.03, 0.05, 0.03, 0.30, 0.14, 0.06},  // forest
    {0.04, 0.08, 0.05, 0.42, 0.20, 0.09},  // crop
    {0.05, 0.09, 0.07, 0.33, 0.24, 0.13},  // grass
    {0.10, 0.13, 0.17, 0.24, 0.32, 0.27},  // bare soil
}};
// Date 2 is another season: vegetation changes its spectrum (a distractor, not change).
constexpr std::array<Spectrum, kCovers> kSeasonal{{
    {1, 1, 1, 1, 1, 1},
    {1.00, 0.95, 1.05, 0.90, 1.00, 1.00},
    {1.20, 1.10, 1.60, 0.75, 1.20, 1.30},
    {1.10, 1.05, 1.30, 0.85, 1.10, 1.15},
    {1, 1, 1, 1, 1, 1},
}};

enum Material { kConcrete, kTile, kMetal, kAsphalt, kMaterials };
constexpr std::array<Spectrum, kMaterials> kMaterialSpectra{{
    {0.24, 0.26, 0.27, 0.29, 0.32, 0.30},  // concrete roof
    {0.09, 0.11, 0.28, 0.33, 0.36, 0.30},  // red tile roof
    {0.36, 0.38, 0.39, 0.40, 0.38, 0.35},  // metal roof
    {0.11, 0.12, 0.13, 0.15, 0.17, 0.16},  // asphalt road
}};

// Band b beyond the six anchors: a fixed variation of one of them.
double band_factor(int b) {
    return b < kAnchors ? 1.0 : 0.9 + 0.2 * unit(mix64(0x5eed0000ULL + b));
}

const char* band_name(int b) {
    static const char* names[kAnchors] = {"blue", "green", "red", "nir", "swir1", "swir2"};
    return b < kAnchors ? names[b] : nullptr;
}

// ---------------------------------------------------------------------------------------
// Objects: buildings (convex quads) and roads (polylines of capsules).

enum class Presence : uint8_t { Both, Appear, Vanish };

struct Pt {
    double x, y;
};

struct Object {
    bool road = false;
    Presence presence = Presence::Both;
    Material material = kConcrete;
    double brightness = 1;               // per-object gain on its material's spectrum
    std::vector<Pt> pts;                 // building: 4 corners in order; road: polyline vertices
    double radius = 0;                   // road half width
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // pixel bounding box, [x0, x1) x [y0, y1)
};

const char* presence_name(Presence p) {
    return p == Presence::Appear ? "appear" : p == Presence::Vanish ? "vanish" : "both";
}

void set_bbox(Object& o) {
    double xmin = 1e300, ymin = 1e300, xmax = -1e300, ymax = -1e300;
    for (const auto& p : o.pts) {
        xmin = std::min(xmin, p.x - o.radius);
        ymin = std::min(ymin, p.y - o.radius);
        xmax = std::max(xmax, p.x + o.radius);
        ymax = std::max(ymax, p.y + o.radius);
    }
    o.x0 = static_cast<int>(std::floor(xmin)) - 1;
    o.y0 = static_cast<int>(std::floor(ymin)) - 1;
    o.x1 = static_cast<int>(std::ceil(xmax)) + 1;
    o.y1 = static_cast<int>(std::ceil(ymax)) + 1;
}

Presence draw_presence(Rng& rng, double p_appear, double p_vanish) {
    const double u = rng.uniform();
    return u < p_appear              ? Presence::Appear
           : u < p_appear + p_vanish ? Presence::Vanish
                                     : Presence::Both;
}

// The scene's objects, generated up front; their number grows with the area. Sorted in
// drawing order: unchanged roads, unchanged buildings, changed roads, changed buildings
// (a changed object is never hidden under an unchanged one, so the label is exact).
template <typename IsWater>
std::vector<Object> make_objects(const SynthOptions& o, const IsWater& is_water) {
    Rng rng(mix64(o.seed ^ 0x0b1ec75ULL));
    const double mpx = static_cast<double>(o.width) * o.height / 1e6;
    const int n_settlements = std::max(1, static_cast<int>(std::lround(mpx * 6)));
    const int n_buildings = std::max(8, static_cast<int>(std::lround(mpx * 750)));
    const int n_roads = std::max(2, static_cast<int>(std::lround(mpx * 12)));
    std::vector<Pt> centres;
    for (int i = 0; i < n_settlements; ++i)
        centres.push_back({rng.uniform(0, o.width), rng.uniform(0, o.height)});

    std::vector<Object> objs;
    for (int i = 0; i < n_roads; ++i) {
        Object r;
        r.road = true;
        r.material = kAsphalt;
        r.presence = draw_presence(rng, 0.25, 0.1);
        r.brightness = rng.uniform(0.9, 1.1);
        r.radius = rng.uniform(2.0, 4.0);
        Pt p{rng.uniform(0, o.width), rng.uniform(0, o.height)};
        double angle = rng.uniform(0, 2 * M_PI);
        const int segments = 3 + static_cast<int>(rng.uniform(0, 5));
        r.pts.push_back(p);
        for (int s = 0; s < segments; ++s) {
            const double len = rng.uniform(80, 260);
            angle += rng.uniform(-0.35, 0.35);
            p = {p.x + len * std::cos(angle), p.y + len * std::sin(angle)};
            r.pts.push_back(p);
        }
        set_bbox(r);
        objs.push_back(std::move(r));
    }
    for (int i = 0; i < n_buildings; ++i) {
        Object b;
        b.presence = draw_presence(rng, 0.15, 0.15);
        const double m = rng.uniform();
        b.material = m < 0.45 ? kConcrete : m < 0.8 ? kTile : kMetal;
        b.brightness = rng.uniform(0.85, 1.15);
        Pt c;
        for (int attempt = 0; attempt < 8; ++attempt) {  // nobody builds on a lake
            if (rng.uniform() < 0.75) {
                const Pt& s =
                    centres[static_cast<size_t>(rng.uniform(0, n_settlements)) % centres.size()];
                c = {s.x + 90 * rng.normal(), s.y + 90 * rng.normal()};
            } else {
                c = {rng.uniform(0, o.width), rng.uniform(0, o.height)};
            }
            if (!is_water(static_cast<int64_t>(std::floor(c.x)),
                          static_cast<int64_t>(std::floor(c.y))))
                break;
        }
        const double hw = rng.uniform(4, 14), hh = rng.uniform(3, 10);
        const double a = rng.uniform() < 0.35 ? rng.uniform(0, M_PI / 2) : 0.0;
        const double ca = std::cos(a), sa = std::sin(a);
        for (auto [u, v] : {std::pair{-hw, -hh}, {hw, -hh}, {hw, hh}, {-hw, hh}})
            b.pts.push_back({c.x + u * ca - v * sa, c.y + u * sa + v * ca});
        set_bbox(b);
        objs.push_back(std::move(b));
    }
    auto rank = [](const Object& x) {
        return (x.presence == Presence::Both ? 0 : 2) + (x.road ? 0 : 1);
    };
    std::stable_sort(objs.begin(), objs.end(),
                     [&](const Object& a, const Object& b) { return rank(a) < rank(b); });
    return objs;
}

// Horizontal span of a convex polygon at height yc: [lo, hi], false when it misses.
bool convex_span(const Pt* p, int n, double yc, double& lo, double& hi) {
    bool hit = false;
    for (int i = 0; i < n; ++i) {
        const Pt& a = p[i];
        const Pt& b = p[(i + 1) % n];
        if ((a.y <= yc && yc < b.y) || (b.y <= yc && yc < a.y)) {
            const double x = a.x + (yc - a.y) * (b.x - a.x) / (b.y - a.y);
            lo = hit ? std::min(lo, x) : x;
            hi = hit ? std::max(hi, x) : x;
            hit = true;
        }
    }
    return hit;
}

// Horizontal span of a capsule (segment a-b widened by r) at height yc. The capsule is
// convex, so its section is the hull of the sections of its two discs and its body.
bool capsule_span(const Pt& a, const Pt& b, double r, double yc, double& lo, double& hi) {
    bool hit = false;
    auto add = [&](double l, double h) {
        lo = hit ? std::min(lo, l) : l;
        hi = hit ? std::max(hi, h) : h;
        hit = true;
    };
    for (const Pt* c : {&a, &b}) {
        const double dy = yc - c->y;
        if (std::abs(dy) <= r) {
            const double dx = std::sqrt(r * r - dy * dy);
            add(c->x - dx, c->x + dx);
        }
    }
    const double len = std::hypot(b.x - a.x, b.y - a.y);
    if (len > 0) {
        const double nx = -(b.y - a.y) / len * r, ny = (b.x - a.x) / len * r;
        const Pt q[4] = {
            {a.x + nx, a.y + ny}, {b.x + nx, b.y + ny}, {b.x - nx, b.y - ny}, {a.x - nx, a.y - ny}};
        double l, h;
        if (convex_span(q, 4, yc, l, h)) add(l, h);
    }
    return hit;
}

// Which objects to paint: those present on date 1, on date 2, or the changed ones.
enum class Layer { Date1, Date2, Changed };

bool in_layer(const Object& o, Layer layer) {
    switch (layer) {
        case Layer::Date1:
            return o.presence != Presence::Appear;
        case Layer::Date2:
            return o.presence != Presence::Vanish;
        case Layer::Changed:
            return o.presence != Presence::Both;
    }
    return false;
}

// Paint the index of the topmost object of `layer` over the world window (wx, wy, w, h)
// into `top` (-1 = background). A pixel belongs to a shape when its centre does.
void paint(const std::vector<Object>& objs, Layer layer, int64_t wx, int64_t wy, int w, int h,
           std::vector<int32_t>& top) {
    top.assign(static_cast<size_t>(w) * h, -1);
    for (size_t i = 0; i < objs.size(); ++i) {
        const Object& o = objs[i];
        if (!in_layer(o, layer)) continue;
        if (o.x1 <= wx || o.x0 >= wx + w || o.y1 <= wy || o.y0 >= wy + h) continue;
        const int64_t r0 = std::max<int64_t>(o.y0, wy), r1 = std::min<int64_t>(o.y1, wy + h);
        for (int64_t row = r0; row < r1; ++row) {
            const double yc = row + 0.5;
            int32_t* dst = top.data() + (row - wy) * w - wx;
            // Pixels whose centre x + 0.5 lies in [lo, hi).
            auto fill = [&](double lo, double hi) {
                const int64_t c0 = std::max<int64_t>(static_cast<int64_t>(std::ceil(lo - 0.5)), wx);
                const int64_t c1 =
                    std::min<int64_t>(static_cast<int64_t>(std::ceil(hi - 0.5)), wx + w);
                for (int64_t c = c0; c < c1; ++c) dst[c] = static_cast<int32_t>(i);
            };
            double lo = 0, hi = 0;
            if (o.road) {
                // Consecutive segments overlap at their round joints; painting each is enough.
                for (size_t s = 0; s + 1 < o.pts.size(); ++s)
                    if (capsule_span(o.pts[s], o.pts[s + 1], o.radius, yc, lo, hi)) fill(lo, hi);
            } else if (convex_span(o.pts.data(), static_cast<int>(o.pts.size()), yc, lo, hi)) {
                fill(lo, hi);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pixel values.

struct Shader {
    int bands = 4;
    bool uint16 = false;
    double scale = 400;  // reflectance -> digital number
    double max_dn = 255;
    uint64_t k_water, k_forest, k_field, k_tex, k_noise;
    std::vector<double> band_f;                 // per band variation factor
    std::array<std::vector<double>, 2> gain;    // per date, per band
    std::array<std::vector<double>, 2> offset;  // per date, per band (reflectance)
    double noise_sigma = 0.005;                 // sensor noise (reflectance)

    Shader(const SynthOptions& o) : bands(o.bands), uint16(o.type == "UInt16") {
        scale = uint16 ? 10000 : 400;
        max_dn = uint16 ? 10000 : 255;
        const uint64_t s = mix64(o.seed);
        k_water = mix64(s + 1);
        k_forest = mix64(s + 2);
        k_field = mix64(s + 3);
        k_tex = mix64(s + 4);
        k_noise = mix64(s + 5);
        Rng rng(mix64(s + 6));
        // Illumination: date 2 is brighter overall, with a small per-band wobble and haze.
        const double g2 = rng.uniform(1.08, 1.2);
        for (int d = 0; d < 2; ++d) {
            gain[d].resize(bands);
            offset[d].resize(bands);
        }
        for (int b = 0; b < bands; ++b) {
            band_f.push_back(band_factor(b));
            gain[0][b] = rng.uniform(0.98, 1.02);
            offset[0][b] = 0;
            gain[1][b] = g2 * rng.uniform(0.97, 1.03);
            offset[1][b] = rng.uniform(0.005, 0.015);
        }
    }

    bool water(int64_t x, int64_t y) const { return fbm(k_water, x, y, 256, 3) < 0.3; }

    Cover cover(int64_t x, int64_t y, double& field_gain, double& tex) const {
        tex = value_noise(k_tex, x, y, 5);
        if (water(x, y)) {
            tex = 1 + 0.03 * (tex - 0.5);
            field_gain = 1;
            return kWater;
        }
        if (fbm(k_forest, x, y, 192, 3) > 0.62) {
            tex = 1 + 0.3 * (value_noise(k_tex + 1, x, y, 3) - 0.5);
            field_gain = 1;
            return kForest;
        }
        // Fields: Voronoi cells of jittered lattice points (straight borders, like parcels).
        constexpr int kCell = 48;
        const int64_t cx = floor_div(x, kCell), cy = floor_div(y, kCell);
        double best = 1e300;
        uint64_t id = 0;
        for (int64_t j = cy - 1; j <= cy + 1; ++j)
            for (int64_t i = cx - 1; i <= cx + 1; ++i) {
                const uint64_t h = hash_xy(k_field, i, j);
                const double px = (i + 0.1 + 0.8 * unit(h)) * kCell;
                const double py = (j + 0.1 + 0.8 * unit(mix64(h))) * kCell;
                const double d = (px - x - 0.5) * (px - x - 0.5) + (py - y - 0.5) * (py - y - 0.5);
                if (d < best) {
                    best = d;
                    id = h;
                }
            }
        const double u = unit(mix64(id + 7));
        field_gain = 0.85 + 0.3 * unit(mix64(id + 8));
        tex = 1 + 0.12 * (tex - 0.5);
        return u < 0.4 ? kCrop : u < 0.7 ? kGrass : kBare;
    }

    // Shade one row of date `date` (0 or 1): world row wy, world columns wx.., object map
    // `top`, nodata where `nodata[x]`; values go to out[b * plane + x].
    template <typename T>
    void row(const std::vector<Object>& objs, int date, int64_t wx, int64_t wy, int w,
             const int32_t* top, const uint8_t* nodata, T* out, size_t plane) const {
        double refl[64];
        for (int x = 0; x < w; ++x) {
            if (nodata[x]) {
                for (int b = 0; b < bands; ++b) out[b * plane + x] = 0;
                continue;
            }
            const int64_t u = wx + x;
            if (top[x] >= 0) {
                const Object& o = objs[top[x]];
                const double t = 1 + 0.06 * (value_noise(k_tex + 2, u, wy, 2) - 0.5);
                const Spectrum& s = kMaterialSpectra[o.material];
                for (int b = 0; b < bands; ++b)
                    refl[b] = s[b % kAnchors] * band_f[b] * o.brightness * t;
            } else {
                double fg, tex;
                const Cover c = cover(u, wy, fg, tex);
                const Spectrum& s = kCoverSpectra[c];
                for (int b = 0; b < bands; ++b) {
                    refl[b] = s[b % kAnchors] * band_f[b] * fg * tex;
                    if (date == 1) refl[b] *= kSeasonal[c][b % kAnchors];
                }
            }
            // Sensor noise is tied to the image pixel (x, y of the date), not the ground.
            for (int b = 0; b < bands; ++b) {
                const uint64_t h = hash_xy(k_noise + static_cast<uint64_t>(date * 64 + b), u, wy);
                const double n = (unit(h) + unit(mix64(h)) - 1) * noise_sigma * 2.449;
                const double v = (refl[b] * gain[date][b] + offset[date][b] + n) * scale;
                out[b * plane + x] =
                    static_cast<T>(std::clamp(std::lround(v), 1L, static_cast<long>(max_dn)));
            }
        }
    }
};

// Run f(row) for rows [0, n) on `threads` workers (rows are independent).
template <typename F>
void parallel_rows(int n, int threads, const F& f) {
    threads = std::max(1, std::min(threads, n));
    if (threads == 1) {
        for (int r = 0; r < n; ++r) f(r);
        return;
    }
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (int r = t; r < n; r += threads) f(r);
        });
    for (auto& th : pool) th.join();
}

template <typename T>
void generate(const SynthOptions& o, GDALDataType type, const Grid& grid, const std::string& dir,
              nlohmann::json& truth, const RunContext& ctx) {
    const int W = o.width, H = o.height, B = o.bands;
    const int threads =
        o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    const Shader shader(o);
    const std::vector<Object> objs =
        make_objects(o, [&](int64_t x, int64_t y) { return shader.water(x, y); });
    const int m = o.misregistration;
    const int corner = o.border > 0 ? std::max(o.border, std::min(W, H) / 8) : 0;

    WriteOptions wo = o.write;
    wo.overwrite = false;  // the folder is new: its files are too
    RasterWriter pre(dir + "/pre.tif", grid, B, type, wo, 0.0);
    RasterWriter post(dir + "/post.tif", grid, B, type, wo, 0.0);
    RasterWriter label(dir + "/label.tif", grid, 1, GDT_Byte, wo, 255.0);
    set_change_colour_table(*label.dataset().GetRasterBand(1));
    label.dataset().GetRasterBand(1)->SetDescription("change");
    for (int b = 0; b < B; ++b) {
        const std::string name = band_name(b) ? band_name(b) : "band" + std::to_string(b + 1);
        pre.dataset().GetRasterBand(b + 1)->SetDescription(name.c_str());
        post.dataset().GetRasterBand(b + 1)->SetDescription(name.c_str());
        // GeoTIFF calls a fourth Byte band alpha by default: QGIS would make the near
        // infrared a transparency. It is data.
        if (b >= 3) {
            pre.dataset().GetRasterBand(b + 1)->SetColorInterpretation(GCI_Undefined);
            post.dataset().GetRasterBand(b + 1)->SetColorInterpretation(GCI_Undefined);
        }
    }

    long long changed = 0, valid = 0;
    std::vector<int32_t> top1, top2, topc;
    std::vector<T> buf1, buf2;
    std::vector<uint8_t> lab;
    const int strips = (H + o.strip_height - 1) / o.strip_height;
    for (int s = 0; s < strips; ++s) {
        const int y0 = s * o.strip_height, h = std::min(o.strip_height, H - y0);
        const size_t plane = static_cast<size_t>(W) * h;
        // Date 2 sees the ground shifted by m pixels: its pixel (x, y) is ground (x+m, y+m).
        paint(objs, Layer::Date1, 0, y0, W, h, top1);
        paint(objs, Layer::Date2, m, y0 + m, W, h, top2);
        paint(objs, Layer::Changed, 0, y0, W, h, topc);
        buf1.resize(plane * B);
        buf2.resize(plane * B);
        lab.resize(plane);
        std::vector<long long> row_changed(h, 0), row_valid(h, 0);
        parallel_rows(h, threads, [&](int r) {
            const int y = y0 + r;
            std::vector<uint8_t> nd1(W), nd2(W);
            for (int x = 0; x < W; ++x) {
                nd1[x] = corner > 0 && (W - 1 - x) + (H - 1 - y) < corner;
                nd2[x] = x < o.border || y < o.border;
            }
            const size_t off = static_cast<size_t>(r) * W;
            shader.row(objs, 0, 0, y, W, top1.data() + off, nd1.data(), buf1.data() + off, plane);
            shader.row(objs, 1, m, y + m, W, top2.data() + off, nd2.data(), buf2.data() + off,
                       plane);
            for (int x = 0; x < W; ++x) {
                uint8_t& l = lab[off + x];
                if (nd1[x] || nd2[x]) {
                    l = 255;
                } else {
                    l = topc[off + x] >= 0 ? 1 : 0;
                    ++row_valid[r];
                    row_changed[r] += l;
                }
            }
        });
        for (int r = 0; r < h; ++r) {
            changed += row_changed[r];
            valid += row_valid[r];
        }
        const Window win{0, y0, W, h};
        pre.write_all(win, buf1.data(), type);
        post.write_all(win, buf2.data(), type);
        label.write(1, win, lab.data(), GDT_Byte);
        ctx.progress(0.98 * (s + 1) / strips, "Synthesizing scene pair");
    }
    pre.commit();
    post.commit();
    label.commit();

    auto changes = nlohmann::json::array();
    int n_appear = 0, n_vanish = 0, n_roads = 0, n_buildings = 0;
    for (size_t i = 0; i < objs.size(); ++i) {
        const Object& ob = objs[i];
        const int x0 = std::max(ob.x0, 0), y0 = std::max(ob.y0, 0);
        const int x1 = std::min(ob.x1, W), y1 = std::min(ob.y1, H);
        if (x0 >= x1 || y0 >= y1) continue;  // outside the scene
        (ob.road ? n_roads : n_buildings)++;
        if (ob.presence == Presence::Both) continue;
        (ob.presence == Presence::Appear ? n_appear : n_vanish)++;
        changes.push_back({{"id", static_cast<int>(i)},
                           {"object", ob.road ? "road" : "building"},
                           {"kind", presence_name(ob.presence)},
                           {"bbox", {x0, y0, x1, y1}}});
    }
    truth["objects"] = {
        {"buildings", n_buildings}, {"roads", n_roads}, {"appear", n_appear}, {"vanish", n_vanish}};
    truth["changed_pixels"] = changed;
    truth["valid_pixels"] = valid;
    truth["car"] = valid > 0 ? static_cast<double>(changed) / valid : 0.0;
    truth["changes"] = std::move(changes);
}

}  // namespace

void validate(const SynthOptions& o) {
    if (o.out.empty()) throw ConfigError("an output folder is needed");
    if (o.width < 16 || o.height < 16 || o.width > 1000000 || o.height > 1000000)
        throw ConfigError("scene size " +
                          quote(std::to_string(o.width) + "x" + std::to_string(o.height)) +
                          " is out of range (16 to 1000000 pixels a side)");
    if (o.bands < 1 || o.bands > 64)
        throw ConfigError("band count " + quote(std::to_string(o.bands)) +
                          " is out of range (1 to 64)");
    if (o.type != "UInt8" && o.type != "Byte" && o.type != "UInt16")
        throw ConfigError("data type " + quote(o.type) + " is not supported (use UInt8 or UInt16)");
    if (!(o.pixel_size > 0) || !std::isfinite(o.pixel_size))
        throw ConfigError("pixel size " + quote(format_number(o.pixel_size)) + " must be positive");
    if (o.border < 0 || 2 * o.border >= std::min(o.width, o.height))
        throw ConfigError("border " + quote(std::to_string(o.border)) +
                          " must be at least 0 and less than half the smaller side");
    if (std::abs(o.misregistration) > 64)
        throw ConfigError("misregistration " + quote(std::to_string(o.misregistration)) +
                          " is out of range (-64 to 64 pixels)");
    if (o.strip_height < 1)
        throw ConfigError("strip height " + quote(std::to_string(o.strip_height)) +
                          " must be positive");
    if (o.epsg <= 0)
        throw ConfigError("EPSG code " + quote(std::to_string(o.epsg)) + " must be positive");
    validate(o.write, "pre.tif");
}

nlohmann::json synthesize_pair(const SynthOptions& options, const RunContext& ctx) {
    const auto start = std::chrono::steady_clock::now();
    ensure_gdal_registered();
    validate(options);
    SynthOptions o = options;
    if (o.type == "Byte") o.type = "UInt8";
    const GDALDataType type = o.type == "UInt16" ? GDT_UInt16 : GDT_Byte;

    Grid grid;
    grid.width = o.width;
    grid.height = o.height;
    grid.geotransform = {500000.0, o.pixel_size, 0.0, 5000000.0, 0.0, -o.pixel_size};
    grid.has_geotransform = true;
    grid.crs_wkt = wkt_of_epsg(o.epsg);

    AtomicPath folder(o.out, o.write.overwrite);
    std::error_code ec;
    fs::create_directory(folder.temp(), ec);
    if (ec) throw IoError("cannot create folder " + quote(folder.temp()) + ": " + ec.message());
    ctx.info("Synthesizing a " + std::to_string(o.width) + "x" + std::to_string(o.height) +
             " pair, " + std::to_string(o.bands) + " bands " + o.type + ", seed " +
             std::to_string(o.seed));

    nlohmann::json truth;
    truth["generator"] = std::string("cd-synth (cdkit) ") + kVersion;
    truth["seed"] = o.seed;
    truth["options"] = {{"width", o.width},           {"height", o.height},
                        {"bands", o.bands},           {"type", o.type},
                        {"pixel_size", o.pixel_size}, {"epsg", o.epsg},
                        {"border", o.border},         {"misregistration", o.misregistration}};
    truth["files"] = {{"pre", "pre.tif"}, {"post", "post.tif"}, {"label", "label.tif"}};
    truth["nodata"] = {{"pre", 0}, {"post", 0}, {"label", 255}};
    truth["bbox_convention"] =
        "date-1 pixel coordinates [xmin, ymin, xmax, ymax), clipped to the scene";
    if (type == GDT_UInt16)
        generate<uint16_t>(o, type, grid, folder.temp(), truth, ctx);
    else
        generate<uint8_t>(o, type, grid, folder.temp(), truth, ctx);
    write_text_file(folder.temp() + "/truth.json", truth.dump(2) + "\n");
    folder.commit();
    ctx.progress(1.0, "Synthesizing scene pair");

    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return {{"out", folder.final_path()},
            {"files", {"pre.tif", "post.tif", "label.tif", "truth.json"}},
            {"width", o.width},
            {"height", o.height},
            {"bands", o.bands},
            {"type", o.type},
            {"seed", o.seed},
            {"changes", truth["changes"].size()},
            {"changed_pixels", truth["changed_pixels"]},
            {"valid_pixels", truth["valid_pixels"]},
            {"car", truth["car"]},
            {"seconds", seconds}};
}

}  // namespace cdk::geo
