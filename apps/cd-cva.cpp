// cd-cva: change vector analysis of a scene pair (classical baseline).
#include <CLI/CLI.hpp>

#include <cmath>
#include <string>

#include "cdk/core/fs.hpp"
#include "cdk/geo/cva.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Change vector analysis: standardise each band of each date, threshold the magnitude of "
        "the "
        "difference vector (Otsu's method by default) and write a UInt8 change mask "
        "(0 no change, 1 change, 255 nodata) on date 1's grid",
        "cd-cva"};
    cdk::geo::CvaOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-cva --pre pre.tif --post post.tif --out change.tif --quicklook change.png");
    std::string threshold = "auto", align = "warp";
    std::optional<double> nodata;
    app.add_option("--pre", opt.pre, "Date 1: a raster, or band files separated by ';'")
        ->required();
    app.add_option("--post", opt.post, "Date 2, same forms as --pre")->required();
    app.add_option("-o,--out", opt.out, "Output change mask (GeoTIFF or COG)")->required();
    app.add_option("--threshold", threshold,
                   "Magnitude threshold in standard deviations, or auto (Otsu)")
        ->capture_default_str()
        ->check([](const std::string& s) -> std::string {
            double v = 0;
            if (s == "auto" || (cdk::parse_number(s, v) && std::isfinite(v) && v >= 0)) return {};
            return "threshold must be 'auto' or a number >= 0, not '" + s + "'";
        });
    app.add_option("--align", align,
                   "Date 2 on another grid: warp it onto date 1's, or refuse (strict)")
        ->capture_default_str()
        ->check(CLI::IsMember({"warp", "strict"}));
    app.add_option("-r,--resampling", opt.pair.resampling,
                   "Resampling for alignment and band stacking")
        ->capture_default_str();
    app.add_option("--nodata", nodata, "Nodata value of both dates (overrides the files')");
    app.add_option("--block-rows", opt.block_rows, "Rows read at a time")
        ->capture_default_str()
        ->check(CLI::Range(1, 65536));
    cdk::apps::add_quicklook_flags(app, opt.quicklook);
    cdk::apps::add_write_flags(app, opt.write, "Output format", "Replace an existing output");
    CDK_PARSE(app, argc, argv);

    common.memory_options = "--block-rows";
    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        double value = 0;
        if (threshold != "auto" && cdk::parse_number(threshold, value)) opt.threshold = value;  // checked above
        opt.pair.align = cdk::geo::parse_align_mode(align);
        opt.pair.nodata = nodata;
        auto summary = cdk::geo::change_vector_analysis(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
