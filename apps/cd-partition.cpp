// cd-partition: split a tile manifest by change-area ratio (Origin-Partition) with a
// seeded per-partition train/validation split.
#include <CLI/CLI.hpp>

#include "cdk/geo/partition.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Split a tile manifest (tiles.csv from cd-tile) by change-area ratio (CAR) into "
        "Origin-Partition subsets, with a seeded train/validation split drawn per partition",
        "cd-partition"};
    cdk::geo::PartitionOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-partition tiles/tiles.csv --out parts --quantiles 3 --val-blocks 256");
    app.add_option("manifest", opt.manifest,
                   "Tile manifest tiles.csv written by cd-tile (needs CARs)")
        ->required();
    app.add_option("-o,--out", opt.out, "Output folder (must not exist unless --overwrite)")
        ->required();
    auto* thresholds =
        app.add_option("--thresholds", opt.thresholds,
                       "CAR upper bounds of the partitions, strictly increasing in (0, 1); "
                       "car <= t goes to the lower partition")
            ->delimiter(',')
            ->capture_default_str()
            ->check(CLI::Range(0.0, 1.0));
    app.add_option("--quantiles", opt.quantiles, "K equal-count partitions instead of thresholds")
        ->check(CLI::Range(2, 1000))
        ->excludes(thresholds);
    auto* val_fraction = app.add_option("--val-fraction", opt.val_fraction,
                                        "Share of each partition kept for validation, in [0, 1)")
                             ->capture_default_str()
                             ->check(CLI::Range(0.0, 1.0));
    auto* val_scenes = app.add_option("--val-scenes", opt.val_scenes,
                   "Hold out these scenes (the manifest's scene column), all their tiles, for "
                   "validation instead of drawing tiles: with overlapping tiles a drawn "
                   "validation tile is mostly training pixels")
        ->delimiter(',')
        ->excludes(val_fraction);
    app.add_option("--val-blocks", opt.val_block,
                   "Hold out square blocks of PX pixels of every scene, about --val-fraction of "
                   "each scene's tiles, for validation, and leave out the training tiles that "
                   "overlap them: every scene validated on, no pixel in both sets")
        ->type_name("PX")
        ->check(CLI::Range(1, 1 << 30))
        ->excludes(val_scenes);
    app.add_option("--seed", opt.seed, "Seed of the train/validation draw")->capture_default_str();
    app.add_flag("--overwrite", opt.overwrite, "Replace an existing output folder");
    CDK_PARSE(app, argc, argv);

    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        if (opt.quantiles > 0) opt.thresholds.clear();
        auto summary = cdk::geo::partition_tiles(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
