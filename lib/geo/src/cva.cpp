#include "cdk/geo/cva.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"

namespace cdk::geo {

namespace {

constexpr int kHistogramBins = 4096;

// One band of a block as floats.
void band_to_float(const Block& blk, int b, std::vector<float>& out) {
    const size_t n = static_cast<size_t>(blk.window.pixels());
    out.resize(n);
    GDALCopyWords64(blk.data.data() + static_cast<size_t>(b) * n * blk.value_bytes(), blk.type,
                    blk.value_bytes(), out.data(), GDT_Float32, sizeof(float),
                    static_cast<GPtrDiff_t>(n));
}

// Both dates of a strip, as float planes band by band, and their joint validity.
struct StripData {
    std::vector<std::vector<float>> pre, post;
    std::vector<uint8_t> valid;
};

void read_strip(const ScenePair& pair, const Window& w, StripData& s) {
    const Block a = pair.pre.read(w);
    const Block b = pair.post.read(w);
    const int bands = a.bands;
    s.pre.resize(bands);
    s.post.resize(bands);
    for (int k = 0; k < bands; ++k) {
        band_to_float(a, k, s.pre[k]);
        band_to_float(b, k, s.post[k]);
    }
    s.valid.resize(a.valid.size());
    for (size_t i = 0; i < a.valid.size(); ++i) s.valid[i] = a.valid[i] && b.valid[i];
}

}  // namespace

void validate(const CvaOptions& o) {
    if (o.pre.empty() || o.post.empty())
        throw ConfigError("both dates are needed (--pre and --post)");
    if (o.out.empty()) throw ConfigError("an output raster is needed (--out)");
    if (o.threshold && (!std::isfinite(*o.threshold) || *o.threshold < 0))
        throw ConfigError("threshold " + quote(format_number(*o.threshold)) +
                          " must be a number >= 0");
    if (o.block_rows < 1)
        throw ConfigError("block rows " + quote(std::to_string(o.block_rows)) +
                          " must be positive");
    if (o.sample_limit < 1000)
        throw ConfigError("sample limit " + quote(std::to_string(o.sample_limit)) +
                          " must be at least 1000");
    validate_resampling(o.pair.resampling);
    validate(o.write, o.out);
    if (!o.quicklook.out.empty()) check_quicklook_path(o.quicklook.out, o.out);
}

size_t otsu_threshold(const std::vector<double>& h) {
    double total = 0, sum_all = 0;
    for (size_t i = 0; i < h.size(); ++i) {
        total += h[i];
        sum_all += i * h[i];
    }
    if (total <= 0) return 0;
    double w_b = 0, sum_b = 0, best = -1;
    size_t first = 0, last = 0;
    for (size_t k = 1; k < h.size(); ++k) {
        w_b += h[k - 1];
        sum_b += (k - 1) * h[k - 1];
        const double w_f = total - w_b;
        if (w_b <= 0 || w_f <= 0) continue;
        const double d = sum_b / w_b - (sum_all - sum_b) / w_f;
        const double between = w_b * w_f * d * d;
        if (between > best * (1 + 1e-12)) {
            best = between;
            first = last = k;
        } else if (between >= best * (1 - 1e-12)) {
            last = k;
        }
    }
    // Empty bins between two modes give a plateau: cut in its middle, not at its start.
    return best < 0 ? 0 : (first + last) / 2;
}

nlohmann::json change_vector_analysis(const CvaOptions& o, const RunContext& ctx) {
    const auto start = std::chrono::steady_clock::now();
    ensure_gdal_registered();
    validate(o);
    const SceneSpec pre = SceneSpec::parse(o.pre), post = SceneSpec::parse(o.post);
    std::vector<NamedInput> inputs;
    for (const auto& f : pre.files) inputs.push_back({"--pre", f});
    for (const auto& f : post.files) inputs.push_back({"--post", f});
    check_not_input(o.out, inputs);
    check_not_input(style_path_for(o.out), inputs);
    if (!o.quicklook.out.empty()) {
        check_not_input(o.quicklook.out, inputs);
        AtomicPath(o.quicklook.out, o.write.overwrite);  // refused now rather than after the work
    }
    ScenePair pair = open_pair(pre, post, "", o.pair, ctx);
    if (!o.quicklook.out.empty()) quicklook_bands(pair.post, o.quicklook.bands);
    const Grid& grid = pair.grid();
    const int W = grid.width, H = grid.height, B = pair.pre.band_count();

    RasterWriter out(o.out, grid, 1, GDT_Byte, o.write, 255.0);
    set_change_colour_table(*out.dataset().GetRasterBand(1));
    out.dataset().GetRasterBand(1)->SetDescription("change");

    // Pass 1: per-band moments of each date over pixels valid on both dates, and a regular
    // grid of pixels kept for the threshold (the magnitudes need the moments first).
    std::vector<long double> s1(B, 0), q1(B, 0), s2(B, 0), q2(B, 0);
    long long n_valid = 0;
    const bool automatic = !o.threshold;
    const int stride = std::max(
        1, static_cast<int>(std::ceil(std::sqrt(static_cast<double>(W) * H / o.sample_limit))));
    std::vector<float> sample;  // per sampled pixel: B values of date 1, then B of date 2
    StripData strip;
    const int strips = (H + o.block_rows - 1) / o.block_rows;
    const RunContext pass1 = ctx.scaled(0.0, 0.5), pass2 = ctx.scaled(0.5, 1.0);
    for (int s = 0; s < strips; ++s) {
        const Window w{0, s * o.block_rows, W, std::min(o.block_rows, H - s * o.block_rows)};
        read_strip(pair, w, strip);
        for (int b = 0; b < B; ++b) {
            long double a1 = 0, a2 = 0, b1 = 0, b2 = 0;
            const float* p = strip.pre[b].data();
            const float* q = strip.post[b].data();
            for (size_t i = 0; i < strip.valid.size(); ++i) {
                if (!strip.valid[i]) continue;
                a1 += p[i];
                b1 += static_cast<double>(p[i]) * p[i];
                a2 += q[i];
                b2 += static_cast<double>(q[i]) * q[i];
            }
            s1[b] += a1;
            q1[b] += b1;
            s2[b] += a2;
            q2[b] += b2;
        }
        for (uint8_t v : strip.valid) n_valid += v;
        if (automatic) {
            for (int r = 0; r < w.height; ++r) {
                if ((w.y + r) % stride != 0) continue;
                for (int c = 0; c < W; c += stride) {
                    const size_t i = static_cast<size_t>(r) * W + c;
                    if (!strip.valid[i]) continue;
                    for (int b = 0; b < B; ++b) sample.push_back(strip.pre[b][i]);
                    for (int b = 0; b < B; ++b) sample.push_back(strip.post[b][i]);
                }
            }
        }
        pass1.progress(static_cast<double>(s + 1) / strips, "Change vector analysis");
    }
    if (n_valid == 0)
        throw ConfigError("the pair " + quote(o.pre) + " / " + quote(o.post) +
                          " has no pixel valid on both dates");

    std::vector<double> m1(B), sd1(B), m2(B), sd2(B);
    auto moments = [&](long double sum, long double sumsq, double& m, double& sd) {
        m = static_cast<double>(sum / n_valid);
        const double var = static_cast<double>(sumsq / n_valid) - m * m;
        sd = var > 1e-12 ? std::sqrt(var) : 1.0;  // a constant band carries no change signal
    };
    for (int b = 0; b < B; ++b) {
        moments(s1[b], q1[b], m1[b], sd1[b]);
        moments(s2[b], q2[b], m2[b], sd2[b]);
    }
    auto magnitude = [&](auto pre_value, auto post_value) {
        double sum = 0;
        for (int b = 0; b < B; ++b) {
            const double d = (post_value(b) - m2[b]) / sd2[b] - (pre_value(b) - m1[b]) / sd1[b];
            sum += d * d;
        }
        return std::sqrt(sum);
    };

    double threshold = o.threshold.value_or(0);
    if (automatic) {
        const size_t n = sample.size() / (2 * B);
        std::vector<double> mags(n);
        double max_mag = 0;
        for (size_t i = 0; i < n; ++i) {
            const float* v = sample.data() + i * 2 * B;
            mags[i] = magnitude([&](int b) { return v[b]; }, [&](int b) { return v[B + b]; });
            max_mag = std::max(max_mag, mags[i]);
        }
        std::vector<float>().swap(sample);
        std::vector<double> hist(kHistogramBins, 0);
        const double width = max_mag > 0 ? max_mag / kHistogramBins : 1;
        for (double mg : mags)
            hist[std::min<size_t>(static_cast<size_t>(mg / width), kHistogramBins - 1)] += 1;
        threshold = otsu_threshold(hist) * width;
        ctx.debug("Otsu threshold " + format_number(threshold) + " from " + std::to_string(n) +
                  " pixels (stride " + std::to_string(stride) + ")");
    }

    // Pass 2: the mask.
    long long changed = 0;
    std::vector<uint8_t> mask;
    for (int s = 0; s < strips; ++s) {
        const Window w{0, s * o.block_rows, W, std::min(o.block_rows, H - s * o.block_rows)};
        read_strip(pair, w, strip);
        mask.assign(strip.valid.size(), 255);
        for (size_t i = 0; i < mask.size(); ++i) {
            if (!strip.valid[i]) continue;
            const double mg = magnitude([&](int b) { return strip.pre[b][i]; },
                                        [&](int b) { return strip.post[b][i]; });
            mask[i] = mg > threshold ? 1 : 0;
            changed += mask[i];
        }
        out.write(1, w, mask.data(), GDT_Byte);
        pass2.progress(static_cast<double>(s + 1) / strips, "Change vector analysis");
    }
    // The mask is published last, after its quick look and style.
    nlohmann::json quicklook = nullptr;
    const std::string mask_file = out.close();
    if (!o.quicklook.out.empty()) {
        QuicklookOptions q = o.quicklook;
        q.overwrite = o.write.overwrite;
        quicklook = write_quicklook(pair.post, mask_file, q, ctx);
    }
    try {
        write_change_style(o.out);
        out.commit();
    } catch (...) {
        if (!o.quicklook.out.empty()) std::remove(o.quicklook.out.c_str());
        throw;
    }

    const double area = pixel_area_m2(grid);
    auto stats = [&](const std::vector<double>& m, const std::vector<double>& sd) {
        return nlohmann::json{{"mean", m}, {"std", sd}};
    };
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return {{"pre", o.pre},
            {"post", o.post},
            {"out", o.out},
            {"style", style_path_for(o.out)},
            {"quicklook", quicklook},
            {"width", W},
            {"height", H},
            {"bands", B},
            {"threshold", threshold},
            {"threshold_method", automatic ? "otsu" : "fixed"},
            {"changed_pixels", changed},
            {"valid_pixels", n_valid},
            {"changed_area_m2", changed * area},
            {"car", static_cast<double>(changed) / n_valid},
            {"statistics", {{"pre", stats(m1, sd1)}, {"post", stats(m2, sd2)}}},
            {"seconds", seconds}};
}

}  // namespace cdk::geo
