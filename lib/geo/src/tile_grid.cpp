#include "cdk/geo/tile_grid.hpp"

#include <algorithm>
#include <string>

#include "cdk/core/error.hpp"

namespace cdk::geo {

std::vector<int> tile_offsets(int size, int tile, int overlap) {
    if (tile < 1) throw ConfigError("tile size must be at least 1, got " + std::to_string(tile));
    if (overlap < 0 || overlap >= tile)
        throw ConfigError("overlap must be in [0, tile size), got " + std::to_string(overlap) +
                          " for tile size " + std::to_string(tile));
    if (size <= 0) return {};
    if (size <= tile) return {0};
    const int stride = tile - overlap;
    std::vector<int> out;
    for (int x = 0; x + tile < size; x += stride) out.push_back(x);
    if (out.empty() || out.back() != size - tile) out.push_back(size - tile);
    return out;
}

std::vector<Window> tile_windows(int width, int height, int tile, int overlap) {
    std::vector<Window> out;
    const auto xs = tile_offsets(width, tile, overlap);
    const auto ys = tile_offsets(height, tile, overlap);
    for (int y : ys)
        for (int x : xs) out.push_back({x, y, std::min(tile, width), std::min(tile, height)});
    return out;
}

}  // namespace cdk::geo
