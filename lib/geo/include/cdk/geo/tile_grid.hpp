#pragma once

#include <vector>

#include "cdk/geo/raster.hpp"

namespace cdk::geo {

/// Offsets of tiles along one axis of `size` pixels: tiles of `tile` pixels every
/// `tile - overlap` pixels; the last tile is shifted inwards so that it stays full size
/// and ends at the edge. A scene smaller than one tile gives one tile at 0 (the caller
/// clips its size). Throws ConfigError when overlap >= tile or tile < 1.
std::vector<int> tile_offsets(int size, int tile, int overlap);

/// All tile windows of a width x height scene, row by row.
std::vector<Window> tile_windows(int width, int height, int tile, int overlap);

}  // namespace cdk::geo
