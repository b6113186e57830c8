// cd-train-teacher: train a change-detection model on a tile manifest (the origin model,
// one teacher per Origin-Partition subset, or any supervised model) into a model bundle.
#include <CLI/CLI.hpp>

#include "cdk/pipeline/train.hpp"
#include "common/common.hpp"
#include "common/train_flags.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Train a change-detection model on a tile manifest (tiles.csv from cd-tile or a "
        "cd-partition manifest) into a self-describing model bundle (.cdm), validating every "
        "epoch and keeping the best model by change-class F1",
        "cd-train-teacher"};
    cdk::pipeline::TrainOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-train-teacher --train parts/origin.csv --val parts/val.csv --arch fc-siam-diff --epochs 20 --out model.cdm");
    cdk::apps::TrainFlags flags;
    cdk::apps::add_train_flags(app, opt, flags);
    app.get_option("--arch")->required();
    CDK_PARSE(app, argc, argv);

    common.memory_options = "--batch-size or --crop";
    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        cdk::apps::finish_train_flags(opt, flags, common);
        auto summary = cdk::pipeline::train_model(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
