// cd-tile: cut co-registered scene pairs into tiles with a manifest (tiles.csv, dataset.json).
#include <CLI/CLI.hpp>

#include "cdk/geo/tile.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{"Cut scene pairs into georeferenced tiles, compute each tile's change-area ratio (CAR), "
                 "and write tiles.csv and dataset.json",
                 "cd-tile"};
    cdk::geo::TileOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-tile --pre pre.tif --post post.tif --label label.tif --out tiles --tile-size 256");
    std::string align = "warp", bands;
    std::optional<double> nodata;
    app.add_option("--pre", opt.pre, "Date 1: a raster, band files separated by ';', or a folder with --band-pattern");
    app.add_option("--post", opt.post, "Date 2, same forms as --pre");
    app.add_option("--label", opt.label, "Change label on date 1's grid (0 = no change, nonzero = change)");
    app.add_option("--scene-name", opt.scene_name, "Name of the scene given with --pre/--post")->capture_default_str();
    app.add_option("--pairs", opt.pairs, "CSV of many scenes: scene,pre,post[,label] (paths relative to the CSV)");
    app.add_option("--folder", opt.folder, "Folder dataset with A/ B/ [label/] and matching file names");
    app.add_option("-o,--out", opt.out, "Output folder (must not exist unless --overwrite)")->required();
    app.add_option("--band-pattern", opt.band_pattern, "When a date is a folder: one glob per band, in order (B04,B03,B02)");
    app.add_option("--bands", bands, "1-based bands to keep, in order (4,3,2)");
    app.add_option("--tile-size", opt.tile_size, "Tile edge in pixels")->capture_default_str()->check(CLI::Range(8, 8192));
    app.add_option("--overlap", opt.overlap, "Pixels shared by neighbouring tiles")->capture_default_str()->check(CLI::Range(0, 8191));
    app.add_option("--min-valid", opt.min_valid, "Skip tiles with a smaller fraction of valid pixels")->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--min-changed-pixels", opt.min_changed_pixels,
                   "Image-level label (tiles.csv `changed`): a tile is changed when its label has at least this many "
                   "changed valid pixels")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--tile-labels", opt.tile_labels,
                   "CSV id,changed (0/1): image-level labels given by hand, for scenes without label rasters (they win "
                   "over labels derived from --label)");
    app.add_option("--align", align, "Date 2 on another grid: warp it onto date 1's, or refuse (strict)")->capture_default_str()
        ->check(CLI::IsMember({"warp", "strict"}));
    app.add_option("-r,--resampling", opt.pair.resampling, "Resampling for alignment and band stacking")->capture_default_str();
    app.add_option("--nodata", nodata, "Nodata value of both dates (overrides the files')");
    cdk::apps::add_write_flags(app, opt.write, "Tile format", "Replace an existing output folder");
    CDK_PARSE(app, argc, argv);

    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        if (common.threads > 0) opt.threads = common.threads;
        opt.pair.align = cdk::geo::parse_align_mode(align);
        opt.pair.nodata = nodata;
        if (!bands.empty()) opt.bands = cdk::geo::parse_band_list(bands);
        auto summary = cdk::geo::tile_scenes(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
