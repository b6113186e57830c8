// cd-train-teacher: train a change-detection model on a tile manifest (the origin model,
// one teacher per Origin-Partition subset, or any supervised model) into a model bundle.
#include <CLI/CLI.hpp>

#include <algorithm>

#include "cdk/core/error.hpp"
#include "cdk/nn/models.hpp"
#include "cdk/pipeline/train.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Train a change-detection model on a tile manifest (tiles.csv from cd-tile or a "
        "cd-partition manifest) into a self-describing model bundle (.cdm), validating every "
        "epoch and keeping the best model by change-class F1",
        "cd-train-teacher"};
    cdk::pipeline::TrainOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    bool no_augment = false;

    const auto names = cdk::nn::model_names();
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;

    app.add_option("--train", opt.train, "Training manifest (tiles.csv or a cd-partition CSV)")->required();
    app.add_option("--val", opt.val, "Validation manifest (e.g. cd-partition's val.csv); none = keep the last epoch");
    app.add_option("--arch", opt.model.arch, "Architecture: " + known)->required();
    app.add_option("-o,--out", opt.out, "Output model bundle (.cdm)")->required();
    app.add_option("--width", opt.model.width, "Base channel count of the architecture")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    app.add_option("--epochs", opt.epochs, "Passes over the training set")
        ->capture_default_str()
        ->check(CLI::Range(1, 100000));
    app.add_option("--batch-size", opt.batch_size, "Samples per step")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    app.add_option("--lr", opt.lr, "Peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--weight-decay", opt.weight_decay, "Decoupled weight decay (AdamW) or L2 (SGD)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--optimizer", opt.optimizer, "Optimiser")
        ->capture_default_str()
        ->check(CLI::IsMember({"adamw", "sgd"}));
    app.add_option("--schedule", opt.schedule, "Learning-rate schedule after the warm-up (poly: power 0.9)")
        ->capture_default_str()
        ->check(CLI::IsMember({"constant", "poly", "cosine"}));
    app.add_option("--warmup-steps", opt.warmup_steps, "Linear warm-up steps")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--crop", opt.augment.crop, "Random crop of this size for training, 0 = whole tiles")
        ->capture_default_str()
        ->check(CLI::Range(0, 65536));
    app.add_flag("--no-augment", no_augment, "No flips, rotations or date swaps (a --crop stays random)");
    app.add_option("--dice-weight", opt.loss.dice_weight, "Weight of the Dice term added to cross-entropy")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--class-weights", opt.loss.class_weights,
                   "Cross-entropy weights of no change and change, e.g. 1,5")
        ->delimiter(',')
        ->expected(2)
        ->check(CLI::NonNegativeNumber);
    app.add_option("--init", opt.init, "Start from this bundle's weights (same architecture and band count)");
    app.add_option("--device", opt.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
    app.add_option("--workers", opt.workers, "Data-loading threads")
        ->capture_default_str()
        ->check(CLI::Range(0, 256));
    app.add_flag("--amp", opt.amp, "Mixed precision on CUDA (bfloat16 autocast)");
    app.add_option("--memory-format", opt.memory_format,
                   "CPU tensor layout: auto (channels-last from width 16, measured faster), channels-last, contiguous")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "channels-last", "contiguous"}));
    app.add_option("--seed", opt.seed, "Seed of weights, shuffling and augmentation")->capture_default_str();
    app.add_flag("--resume", opt.resume, "Continue from OUT.ckpt after an interruption (a finished run is skipped)");
    app.add_flag("--overwrite", opt.overwrite, "Replace an existing output bundle");
    app.add_option("--max-steps", opt.max_steps, "Stop after this many steps in all, resumable (0 = no limit)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    CLI11_PARSE(app, argc, argv);

    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        if (std::find(names.begin(), names.end(), opt.model.arch) == names.end())
            throw cdk::ConfigError("unknown architecture " + cdk::quote(opt.model.arch) + " (known: " + known + ")");
        if (no_augment) opt.augment.flips = opt.augment.rot90 = opt.augment.swap_dates = false;
        opt.threads = common.threads;
        auto summary = cdk::pipeline::train_model(opt, ctx);
        cdk::apps::print_result(summary.dump(2));
    });
}
