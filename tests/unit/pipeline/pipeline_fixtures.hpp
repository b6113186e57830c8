#pragma once
// Tiny tile sets for the pipeline tests: a scene pair whose change is trivially learnable
// (date 2 = date 1 + 100 inside changed squares, identical elsewhere), cut by cd-tile's
// library function into 32x32 tiles.

#include <cstdint>
#include <string>

#include "cdk/geo/tile.hpp"
#include "cdk/nn/bundle.hpp"
#include "cdk/pipeline/train.hpp"
#include "support/support.hpp"

namespace cdk::test {

/// Whether pixel (x, y) of the fixture scene changed: a few squares of different sizes,
/// so tiles have different CARs (some none).
inline bool fixture_changed(int x, int y, int variant = 0) {
    const int cx = (x + 7 * variant) % 32, cy = (y + 5 * variant) % 32;
    const int tile = (x / 32) + 4 * (y / 32);
    const int side = 4 + 3 * ((tile + variant) % 5);  // 4 .. 16 pixels
    return (tile + variant) % 4 != 3 && cx >= 6 && cx < 6 + side && cy >= 8 && cy < 8 + side;
}

/// Pixel value of date 1: textured noise in 20 .. 120.
inline double fixture_pre(int band, int x, int y) {
    uint32_t h = uint32_t(x) * 73856093u ^ uint32_t(y) * 19349663u ^ uint32_t(band + 1) * 83492791u;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    return 20 + double(h % 101);
}

/// Write pre.tif, post.tif, label.tif (width x height, `bands` bands, Byte) into DIR/scene
/// and cut them into DIR/<name>/ with 32x32 tiles; returns the tiles.csv path. With
/// `nodata_corner`, date 2 has nodata 0 in its top-left 8x8 pixels.
inline std::string make_fixture_tiles(const TempDir& tmp, const std::string& name, int width = 128,
                                      int height = 64, int bands = 3, int variant = 0,
                                      bool nodata_corner = false) {
    const std::string scene = tmp / (name + "_scene");
    run_shell("mkdir -p '" + scene + "'");
    RasterSpec spec;
    spec.width = width;
    spec.height = height;
    spec.bands = bands;
    RasterSpec post_spec = spec;
    if (nodata_corner) post_spec.nodata = 0;
    // cd-tile writes both dates' tiles with date 1's nodata value.
    make_raster(scene + "/pre.tif", post_spec, fixture_pre);
    make_raster(scene + "/post.tif", post_spec, [&](int b, int x, int y) {
        if (nodata_corner && x < 8 && y < 8) return 0.0;
        return fixture_pre(b, x, y) + (fixture_changed(x, y, variant) ? 100.0 : 0.0);
    });
    RasterSpec label_spec = spec;
    label_spec.bands = 1;
    make_raster(scene + "/label.tif", label_spec,
                [&](int, int x, int y) { return fixture_changed(x, y, variant) ? 1.0 : 0.0; });
    geo::TileOptions t;
    t.pre = scene + "/pre.tif";
    t.post = scene + "/post.tif";
    t.label = scene + "/label.tif";
    t.scene_name = name;
    t.out = tmp / name;
    t.tile_size = 32;
    t.min_valid = 0.01;
    geo::tile_scenes(t);
    return tmp / (name + "/tiles.csv");
}

/// Whether two models hold bit-identical parameters and buffers.
inline bool same_weights(nn::ChangeModelImpl& ma, nn::ChangeModelImpl& mb) {
    auto pa = ma.named_parameters(), pb = mb.named_parameters();
    if (pa.size() != pb.size()) return false;
    for (const auto& p : pa)
        if (!p.value().equal(pb[p.key()])) return false;
    auto ba = ma.named_buffers(), bb = mb.named_buffers();
    for (const auto& p : ba)
        if (!p.value().equal(bb[p.key()])) return false;
    return true;
}

/// Whether two bundles hold bit-identical weights.
inline bool same_weights(const std::string& a, const std::string& b) {
    return same_weights(*nn::load_bundle(a).model, *nn::load_bundle(b).model);
}

/// A tiny, fast training configuration: width-4 fc-siam-diff, 2 epochs, CPU, one thread.
inline pipeline::TrainOptions tiny_train_options(const std::string& train, const std::string& val,
                                                 const std::string& out) {
    pipeline::TrainOptions o;
    o.train = train;
    o.val = val;
    o.out = out;
    o.model.arch = "fc-siam-diff";
    o.model.width = 4;
    o.epochs = 2;
    o.batch_size = 4;
    o.lr = 1e-2;
    o.schedule = "constant";
    o.device = "cpu";
    o.threads = 1;
    o.workers = 1;
    o.seed = 3;
    return o;
}

}  // namespace cdk::test
