// cd-degrade: a lower-quality copy of a raster (HiCD's degraded date).
#include <CLI/CLI.hpp>

#include <string>

#include "cdk/geo/degrade.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Write a degraded copy of a raster: haze, blur, lower resolution, noise and JPEG "
        "compression, in that order, or a random mix; same grid, data type and nodata",
        "cd-degrade"};
    cdk::geo::DegradeOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-degrade --in post.tif --out post_res4.tif --degrade res=4 --seed 1");
    app.add_option("-i,--in", opt.in, "Input raster (Byte, UInt16 or Int16)")->required();
    app.add_option("-o,--out", opt.out, "Output raster (GeoTIFF or COG)")->required();
    app.add_option("--degrade", opt.spec,
                   "Operations, e.g. blur=1.5,noise=10,jpeg=40 (res=F, blur=S|SXxSY@ANGLE, "
                   "noise=S|P%, jpeg=Q, haze=T[:A]) or random")
        ->required();
    app.add_option("--seed", opt.seed, "Seed of the noise field and of the random mix")->capture_default_str();
    app.add_option("--block", opt.block, "Window edge in pixels (memory; the result does not depend on it)")
        ->capture_default_str()
        ->check(CLI::Range(16, 16384));
    cdk::apps::add_write_flags(app, opt.write, "Output format", "Replace an existing output");
    CDK_PARSE(app, argc, argv);

    common.memory_options = "--block";
    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        auto summary = cdk::geo::degrade_raster(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
