#include <catch2/catch.hpp>

#include "cdk/core/error.hpp"
#include "cdk/geo/tile_grid.hpp"

using cdk::geo::tile_offsets;

TEST_CASE("tile offsets: exact fit, edge shifted inwards, overlap", "[geo][tiles]") {
    CHECK(tile_offsets(512, 256, 0) == std::vector<int>{0, 256});
    // 600 = 256 + 256 + 88: the last tile is shifted to end at the edge, full size.
    CHECK(tile_offsets(600, 256, 0) == std::vector<int>{0, 256, 344});
    // stride 192 with overlap 64
    CHECK(tile_offsets(512, 256, 64) == std::vector<int>{0, 192, 256});
    CHECK(tile_offsets(640, 256, 64) == std::vector<int>{0, 192, 384});
    CHECK(tile_offsets(257, 256, 0) == std::vector<int>{0, 1});
}

TEST_CASE("tile offsets: scenes no larger than a tile give one tile", "[geo][tiles]") {
    CHECK(tile_offsets(256, 256, 0) == std::vector<int>{0});
    CHECK(tile_offsets(100, 256, 0) == std::vector<int>{0});
    CHECK(tile_offsets(1, 256, 10) == std::vector<int>{0});
    CHECK(tile_offsets(0, 256, 0).empty());
}

TEST_CASE("tile offsets cover every pixel and stay inside", "[geo][tiles]") {
    for (int size : {300, 777, 1024, 4099})
        for (int tile : {64, 256})
            for (int overlap : {0, 16, 63}) {
                auto xs = tile_offsets(size, tile, overlap);
                std::vector<int> covered(size, 0);
                for (int x : xs) {
                    REQUIRE(x >= 0);
                    REQUIRE(x + tile <= size);
                    for (int i = x; i < x + tile; ++i) covered[i] = 1;
                }
                CHECK(std::count(covered.begin(), covered.end(), 1) == size);
                CHECK(std::is_sorted(xs.begin(), xs.end()));
            }
}

TEST_CASE("tile offsets reject bad overlap", "[geo][tiles]") {
    CHECK_THROWS_AS(tile_offsets(100, 16, 16), cdk::ConfigError);
    CHECK_THROWS_AS(tile_offsets(100, 16, -1), cdk::ConfigError);
    CHECK_THROWS_AS(tile_offsets(100, 0, 0), cdk::ConfigError);
}

TEST_CASE("tile windows of a tiny scene are clipped to it", "[geo][tiles]") {
    auto w = cdk::geo::tile_windows(20, 10, 16, 0);
    REQUIRE(w.size() == 2);
    CHECK(w[0] == cdk::geo::Window{0, 0, 16, 10});
    CHECK(w[1] == cdk::geo::Window{4, 0, 16, 10});
}
