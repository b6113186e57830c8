// cd-synth: generate a georeferenced synthetic scene pair with known changes.
#include <CLI/CLI.hpp>

#include "cdk/geo/synth.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Generate a synthetic, georeferenced scene pair (pre.tif, post.tif) with buildings and "
        "roads "
        "that appear or vanish, its change label (label.tif) and truth.json; distractors "
        "(illumination, "
        "season, sensor noise, misregistration, nodata borders) are not change",
        "cd-synth"};
    cdk::geo::SynthOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-synth --out scene --width 1024 --height 1024 --bands 4 --type UInt16 --seed 1");
    app.add_option("-o,--out", opt.out, "Output folder (must not exist unless --overwrite)")
        ->required();
    app.add_option("--width", opt.width, "Columns")
        ->capture_default_str()
        ->check(CLI::Range(16, 1000000));
    app.add_option("--height", opt.height, "Rows")
        ->capture_default_str()
        ->check(CLI::Range(16, 1000000));
    app.add_option("--bands", opt.bands,
                   "Bands per date (blue, green, red, nir, swir1, swir2, ...)")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    app.add_option("--type,--ot", opt.type, "Data type: UInt8 (1..255) or UInt16 (reflectance x 10000)")
        ->capture_default_str()
        ->check(CLI::IsMember({"UInt8", "Byte", "UInt16"}));
    app.add_option("--seed", opt.seed, "Seed: the same seed and options give identical files")
        ->capture_default_str();
    app.add_option("--pixel-size", opt.pixel_size, "Pixel edge in CRS units (metres)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--epsg", opt.epsg, "EPSG code of the CRS; the origin is (500000, 5000000)")
        ->capture_default_str()
        ->check(CLI::Range(1, 999999));
    app.add_option("--border", opt.border,
                   "Nodata border on date 2's left and top edges (0: no nodata at all)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--misregistration", opt.misregistration,
                   "Shift of date 2 in whole pixels (both axes)")
        ->capture_default_str()
        ->check(CLI::Range(-64, 64));
    app.add_option("--strip-height", opt.strip_height,
                   "Rows generated at a time (memory; output is the same)")
        ->capture_default_str()
        ->check(CLI::Range(1, 65536));
    cdk::apps::add_write_flags(app, opt.write, "Raster format", "Replace an existing output folder");
    CDK_PARSE(app, argc, argv);

    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        opt.threads = common.threads;
        auto summary = cdk::geo::synthesize_pair(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
