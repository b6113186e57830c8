#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/geo/scene.hpp"

namespace cdk::geo {

/// Running statistics of one band: count, mean, standard deviation, min, max and the
/// 2 % / 98 % percentiles. Exact (a full histogram) for 8- and 16-bit integer data,
/// estimated from a fixed-seed reservoir sample of 200 000 values otherwise.
class BandStatistics {
public:
    /// Statistics for values of `type`.
    explicit BandStatistics(GDALDataType type = GDT_Float64);
    /// Add one value.
    void add(double v);
    /// Merge another accumulator of the same type.
    void merge(const BandStatistics& o);
    /// Number of values added.
    long long count() const { return count_; }
    /// Mean (0 when empty).
    double mean() const;
    /// Population standard deviation (0 when empty).
    double stddev() const;
    /// Percentile p in [0, 100].
    double percentile(double p) const;
    /// {count, mean, std, min, max, p2, p98}; nulls when empty.
    nlohmann::json to_json() const;

private:
    void moments(long double& sum, long double& sumsq, double& mn, double& mx) const;
    friend void accumulate_block(std::vector<BandStatistics>&, const Block&, const Window&, const uint8_t*);
    GDALDataType type_;
    bool exact_;
    int offset_ = 0;                 // histogram index of value 0 (Int16)
    std::vector<uint64_t> hist_;
    std::vector<double> sample_;
    std::mt19937_64 rng_{12345};
    long long count_ = 0;
    long double sum_ = 0, sumsq_ = 0;
    double min_ = 0, max_ = 0;
};

/// Add the valid pixels of sub-window `sub` (relative to the block) of every band of
/// `block` to `stats` (one per band). `valid` is sub-sized, 1 = use the pixel.
void accumulate_block(std::vector<BandStatistics>& stats, const Block& block, const Window& sub,
                      const uint8_t* valid);

/// Statistics of both dates of a scene pair over the pixels valid in both, one accumulator
/// per band: what per-scene standardisation uses. cd-tile records them per scene in
/// dataset.json; cd-infer computes them before it maps a scene with such a model.
struct PairStatistics {
    std::vector<BandStatistics> pre, post;
    /// Empty accumulators for `bands` bands of `type`.
    PairStatistics(int bands = 0, GDALDataType type = GDT_Float64);
    /// Add the rows [row_from, row_to) (scene rows) of blocks `a` and `b`, which cover the
    /// same window of the pair's two dates, over the pixels valid in both.
    void add_rows(const Block& a, const Block& b, int row_from, int row_to);
    /// {"pre": [...], "post": [...]}: BandStatistics::to_json per band.
    nlohmann::json to_json() const;
};

/// One pass over a whole pair, strip by strip (bounded memory).
PairStatistics pair_statistics(const ScenePair& pair, const RunContext& ctx = {});

}  // namespace cdk::geo
