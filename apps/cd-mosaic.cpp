// cd-mosaic: many change rasters (masks or probabilities) into one raster over their union.
#include <CLI/CLI.hpp>

#include "cdk/geo/mosaic.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Mosaic change masks (or change probabilities) of many scenes into one raster covering "
        "their union, in one CRS; overlaps resolved by a rule (max: change wins)",
        "cd-mosaic"};
    cdk::geo::MosaicOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-mosaic maps/*.tif --out mosaic.tif -of COG");
    app.add_option("inputs", opt.inputs, "Change masks (UInt8 0/1/255) or probabilities (Float32), one kind")
        ->required();
    app.add_option("-o,--out", opt.out, "Output mosaic (GeoTIFF or COG)")->required();
    app.add_option("--crs", opt.crs, "Target CRS (EPSG:32633, WKT, PROJ string); default: the first input's");
    app.add_option("--resolution", opt.resolution, "Target pixel size in the CRS's units; 0 = the first input's")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--rule", opt.rule,
                   "Where inputs overlap: max (change wins, highest probability), first or last input given")
        ->capture_default_str()
        ->check(CLI::IsMember({"max", "first", "last"}));
    app.add_option("--polygons", opt.polygons, "Also write the mosaic's change regions (GeoPackage)");
    std::string min_area = "5px";
    cdk::apps::add_min_area_flag(app, min_area);
    cdk::apps::add_write_flags(app, opt.write, "Output format", "Replace existing outputs");
    CDK_PARSE(app, argc, argv);

    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        cdk::apps::parse_min_area(min_area, opt.min_area_m2, opt.min_pixels);
        auto summary = cdk::geo::mosaic(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
