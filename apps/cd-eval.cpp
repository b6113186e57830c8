// cd-eval: precision, recall, F1, IoU, OA and kappa of change masks against references.
#include <CLI/CLI.hpp>

#include "cdk/geo/metrics.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Compare predicted change masks with reference masks (0 = no change, nodata = unknown, "
        "anything else = change) and print per-scene and pooled metrics as JSON",
        "cd-eval"};
    cdk::geo::EvalOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-eval --pred change.tif --ref label.tif");
    auto* pred = app.add_option("--pred", opt.pred,
                                "Predicted change mask of one scene (single-band raster)");
    auto* ref = app.add_option("--ref", opt.ref, "Reference change mask on the prediction's grid");
    auto* pairs = app.add_option("--pairs", opt.pairs,
                                 "CSV of many scenes: scene,pred,ref (paths relative to the CSV)");
    auto* name = app.add_option("--scene-name", opt.scene_name,
                                "Name of the scene given with --pred/--ref "
                                "(default: the reference's file stem)");
    app.add_option("--pred-nodata", opt.pred_nodata,
                   "Nodata value of the predictions (overrides the files')");
    app.add_option("--ref-nodata", opt.ref_nodata,
                   "Nodata value of the references (overrides the files')");
    app.add_option("--strip-rows", opt.strip_rows,
                   "Rows read at a time (0 = about a million pixels)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    pred->needs(ref);
    ref->needs(pred);
    pairs->excludes(pred)->excludes(ref);
    name->needs(pred);
    CDK_PARSE(app, argc, argv);
    if (opt.pred.empty() && opt.pairs.empty()) {
        app.exit(CLI::RequiredError("--pred/--ref or --pairs"));
        return 2;
    }

    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        auto summary = cdk::geo::evaluate(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
