#include "cdk/geo/stats.hpp"

#include <algorithm>
#include <cmath>

namespace cdk::geo {

namespace {
constexpr size_t kReservoir = 200000;
}

BandStatistics::BandStatistics(GDALDataType type) : type_(type) {
    exact_ = type == GDT_Byte || type == GDT_UInt16 || type == GDT_Int16;
    if (exact_) {
        hist_.assign(type == GDT_Byte ? 256 : 65536, 0);
        offset_ = type == GDT_Int16 ? 32768 : 0;
    }
}

void BandStatistics::add(double v) {
    ++count_;
    if (exact_) {  // moments and extremes come from the histogram when asked for
        ++hist_[static_cast<size_t>(static_cast<long long>(v) + offset_)];
        return;
    }
    if (count_ == 1) min_ = max_ = v;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
    sum_ += v;
    sumsq_ += static_cast<long double>(v) * v;
    if (sample_.size() < kReservoir) {
        sample_.push_back(v);
    } else {
        const uint64_t j = rng_() % static_cast<uint64_t>(count_);
        if (j < kReservoir) sample_[j] = v;
    }
}

void BandStatistics::merge(const BandStatistics& o) {
    if (o.count_ == 0) return;
    if (exact_ && o.exact_ && hist_.size() == o.hist_.size()) {
        for (size_t i = 0; i < hist_.size(); ++i) hist_[i] += o.hist_[i];
        count_ += o.count_;
        return;
    }
    for (double v : o.sample_) add(v);
}

void BandStatistics::moments(long double& sum, long double& sumsq, double& mn, double& mx) const {
    if (!exact_) {
        sum = sum_;
        sumsq = sumsq_;
        mn = min_;
        mx = max_;
        return;
    }
    sum = sumsq = 0;
    bool first = true;
    for (size_t i = 0; i < hist_.size(); ++i) {
        if (!hist_[i]) continue;
        const double v = static_cast<double>(static_cast<long long>(i) - offset_);
        if (first) mn = v;
        first = false;
        mx = v;
        sum += static_cast<long double>(v) * hist_[i];
        sumsq += static_cast<long double>(v) * v * hist_[i];
    }
}

double BandStatistics::mean() const {
    if (!count_) return 0.0;
    long double sum, sumsq;
    double mn, mx;
    moments(sum, sumsq, mn, mx);
    return static_cast<double>(sum / count_);
}

double BandStatistics::stddev() const {
    if (!count_) return 0.0;
    long double sum, sumsq;
    double mn, mx;
    moments(sum, sumsq, mn, mx);
    const long double m = sum / count_;
    const long double var = sumsq / count_ - m * m;
    return var > 0 ? std::sqrt(static_cast<double>(var)) : 0.0;
}

double BandStatistics::percentile(double p) const {
    if (!count_) return 0.0;
    if (exact_) {
        // Nearest-rank percentile from the histogram.
        const auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * count_));
        uint64_t seen = 0;
        for (size_t i = 0; i < hist_.size(); ++i) {
            seen += hist_[i];
            if (seen >= std::max<uint64_t>(rank, 1)) return static_cast<double>(static_cast<long long>(i) - offset_);
        }
        return static_cast<double>(static_cast<long long>(hist_.size()) - 1 - offset_);
    }
    std::vector<double> s = sample_;
    if (s.empty()) return 0.0;
    const size_t k = std::min(s.size() - 1, static_cast<size_t>(std::ceil(p / 100.0 * s.size())) - (p > 0 ? 1 : 0));
    std::nth_element(s.begin(), s.begin() + k, s.end());
    return s[k];
}

nlohmann::json BandStatistics::to_json() const {
    if (!count_)
        return {{"count", 0}, {"mean", nullptr}, {"std", nullptr}, {"min", nullptr},
                {"max", nullptr}, {"p2", nullptr}, {"p98", nullptr}};
    long double sum, sumsq;
    double mn = 0, mx = 0;
    moments(sum, sumsq, mn, mx);
    return {{"count", count_}, {"mean", mean()}, {"std", stddev()}, {"min", mn},
            {"max", mx},       {"p2", percentile(2)}, {"p98", percentile(98)}};
}

namespace {
template <typename T>
void histogram_typed(const T* band, int stride, const Window& sub, const uint8_t* valid, uint64_t* hist, int offset,
                     long long& count) {
    for (int r = 0; r < sub.height; ++r) {
        const T* row = band + static_cast<size_t>(sub.y + r) * stride + sub.x;
        const uint8_t* vrow = valid + static_cast<size_t>(r) * sub.width;
        for (int c = 0; c < sub.width; ++c) {
            if (!vrow[c]) continue;
            ++hist[static_cast<long long>(row[c]) + offset];
            ++count;
        }
    }
}
}  // namespace

void accumulate_block(std::vector<BandStatistics>& stats, const Block& block, const Window& sub, const uint8_t* valid) {
    const size_t plane = static_cast<size_t>(block.window.pixels());
    for (int b = 0; b < block.bands && b < static_cast<int>(stats.size()); ++b) {
        BandStatistics& s = stats[b];
        const uint8_t* base = block.data.data() + b * plane * block.value_bytes();
        const int stride = block.window.width;
        if (s.exact_ && block.type == s.type_) {
            if (block.type == GDT_Byte)
                histogram_typed(base, stride, sub, valid, s.hist_.data(), 0, s.count_);
            else if (block.type == GDT_UInt16)
                histogram_typed(reinterpret_cast<const uint16_t*>(base), stride, sub, valid, s.hist_.data(), 0, s.count_);
            else
                histogram_typed(reinterpret_cast<const int16_t*>(base), stride, sub, valid, s.hist_.data(), 32768,
                                s.count_);
            continue;
        }
        for (int r = 0; r < sub.height; ++r)
            for (int c = 0; c < sub.width; ++c)
                if (valid[static_cast<size_t>(r) * sub.width + c]) s.add(block.value(b, sub.x + c, sub.y + r));
    }
}

PairStatistics::PairStatistics(int bands, GDALDataType type)
    : pre(static_cast<size_t>(bands), BandStatistics(type)), post(static_cast<size_t>(bands), BandStatistics(type)) {}

void PairStatistics::add_rows(const Block& a, const Block& b, int row_from, int row_to) {
    row_from = std::max(row_from, a.window.y);
    row_to = std::min(row_to, a.window.y + a.window.height);
    if (row_to <= row_from) return;
    const Window sub{0, row_from - a.window.y, a.window.width, row_to - row_from};
    std::vector<uint8_t> valid(static_cast<size_t>(sub.pixels()));
    const size_t first = static_cast<size_t>(sub.y) * sub.width;
    for (size_t i = 0; i < valid.size(); ++i) valid[i] = a.valid[first + i] && b.valid[first + i];
    accumulate_block(pre, a, sub, valid.data());
    accumulate_block(post, b, sub, valid.data());
}

nlohmann::json PairStatistics::to_json() const {
    auto arr = [](const std::vector<BandStatistics>& v) {
        nlohmann::json j = nlohmann::json::array();
        for (const auto& s : v) j.push_back(s.to_json());
        return j;
    };
    return {{"pre", arr(pre)}, {"post", arr(post)}};
}

PairStatistics pair_statistics(const ScenePair& pair, const RunContext& ctx) {
    const Grid& g = pair.grid();
    const int bands = pair.pre.band_count();
    PairStatistics st(bands, pair.pre.data_type());
    // Strips of about 32 MB of both dates' values.
    const int64_t row_bytes = int64_t(g.width) * bands * 2 * (GDALGetDataTypeSizeBytes(pair.pre.data_type()) + 1);
    const int rows = static_cast<int>(std::clamp<int64_t>((int64_t(32) << 20) / std::max<int64_t>(row_bytes, 1), 1, g.height));
    for (int y = 0; y < g.height; y += rows) {
        const Window w{0, y, g.width, std::min(rows, g.height - y)};
        st.add_rows(pair.pre.read(w), pair.post.read(w), w.y, w.y + w.height);
        ctx.progress(double(y + w.height) / g.height, "scene statistics");
    }
    return st;
}

}  // namespace cdk::geo
