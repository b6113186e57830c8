#include "common/train_flags.hpp"

#include <algorithm>
#include <string>

#include <nlohmann/json.hpp>

#include "cdk/core/error.hpp"
#include "cdk/nn/models.hpp"

namespace cdk::apps {

namespace {

std::string known_architectures() {
    std::string known;
    for (const auto& n : nn::model_names()) known += (known.empty() ? "" : ", ") + n;
    return known;
}

// VALUE of --model-option KEY=VALUE as JSON: a JSON literal (true, false, a number) as
// such, anything else as a string.
nlohmann::json option_value(const std::string& v) {
    auto j = nlohmann::json::parse(v, nullptr, false);
    return j.is_boolean() || j.is_number() ? j : nlohmann::json(v);
}

}  // namespace

void add_train_flags(CLI::App& app, pipeline::TrainOptions& options, TrainFlags& flags,
                     const std::string& init_flag) {
    const std::string known = known_architectures();

    app.add_option("--train", options.train, "Training manifest (tiles.csv or a cd-partition CSV)")->required();
    app.add_option("--val", options.val, "Validation manifest (e.g. cd-partition's val.csv); none = keep the last epoch");
    app.add_option("--arch", options.model.arch, "Architecture: " + known);
    app.add_option("-o,--out", options.out, "Output model bundle (.cdm)")->required();
    app.add_option("--width", options.model.width, "Base channel count of the architecture")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    app.add_option("--epochs", options.epochs, "Passes over the training set")
        ->capture_default_str()
        ->check(CLI::Range(1, 100000));
    app.add_option("--batch-size", options.batch_size, "Samples per step")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    app.add_option("--lr", options.lr, "Peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--weight-decay", options.weight_decay, "Decoupled weight decay (AdamW) or L2 (Adam, SGD)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--optimizer", options.optimizer, "Optimiser")
        ->capture_default_str()
        ->check(CLI::IsMember({"adamw", "adam", "sgd"}));
    app.add_option("--schedule", options.schedule, "Learning-rate schedule after the warm-up (poly: power 0.9; exp: x0.95 per epoch)")
        ->capture_default_str()
        ->check(CLI::IsMember({"constant", "poly", "cosine", "exp"}));
    app.add_option("--warmup-steps", options.warmup_steps, "Linear warm-up steps")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--ema", options.ema,
                   "Keep an exponential moving average of the weights with this decay per step (e.g. 0.999) and "
                   "validate and save it instead of the latest weights; 0 = off")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 0.999999));
    app.add_option("--crop", options.augment.crop, "Random crop of this size for training, 0 = whole tiles")
        ->capture_default_str()
        ->check(CLI::Range(0, 65536));
    app.add_option("--degrade", options.degrade,
                   "Degrade one date of every training and validation sample, e.g. res=4, blur=1.5,noise=10,jpeg=40 "
                   "or random (docs/cd-degrade.md); validation tiles get the same degradation every epoch");
    app.add_option("--degrade-date", options.degrade_date, "The date --degrade degrades: 2, 1 or any (drawn per sample)")
        ->capture_default_str()
        ->check(CLI::IsMember({"1", "2", "any"}));
    app.add_flag("--no-augment", flags.no_augment, "No flips, rotations or date swaps (a --crop stays random)");
    app.add_flag("--no-date-swap", flags.no_date_swap,
                 "Flips and rotations but no date swaps: keep date 1 first, for changes with a direction");
    app.add_option("--dice-weight", options.loss.dice_weight, "Weight of the Dice term added to cross-entropy")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--class-weights", options.loss.class_weights,
                   "Cross-entropy weights of no change and change, e.g. 1,5")
        ->delimiter(',')
        ->expected(2)
        ->check(CLI::NonNegativeNumber);
    app.add_option("--scene-norm", options.scene_norm,
                   "Standardise each date of each scene by its own statistics first: none, image (one mean and "
                   "deviation over all bands, as Daudt et al. 2018 on OSCD) or band (per band); default: the --init "
                   "bundle's, else none. Recorded in the bundle; cd-infer applies it")
        ->check(CLI::IsMember({"none", "image", "band"}));
    app.add_option("--model-option", flags.model_options,
                   "Family-specific model option KEY=VALUE, repeatable (docs/models.md), e.g. blocks=3 for resnet-fpn")
        ->take_all()
        ->allow_extra_args(false);
    app.add_option(init_flag, options.init, "Start from this bundle's weights (same architecture and band count)");
    app.add_option("--device", options.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
    app.add_option("--workers", options.workers, "Data-loading threads")
        ->capture_default_str()
        ->check(CLI::Range(0, 256));
    app.add_flag("--amp", options.amp, "Mixed precision (bfloat16 autocast): CUDA, or a CPU with AVX-512");
    app.add_option("--memory-format", options.memory_format,
                   "CPU tensor layout: auto (channels-last from width 16, measured faster), channels-last, contiguous")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "channels-last", "contiguous"}));
    app.add_option("--seed", options.seed, "Seed of weights, shuffling and augmentation")->capture_default_str();
    app.add_flag("--resume", options.resume, "Continue from OUT.ckpt after an interruption (a finished run is skipped)");
    app.add_flag("--overwrite", options.overwrite, "Replace an existing output bundle");
    app.add_option("--save-last", options.save_last,
                   "Also write the latest epoch's model to this bundle after every epoch (the best one goes to --out)");
    app.add_option("--max-steps", options.max_steps, "Stop after this many steps in all, resumable (0 = no limit)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
}

void finish_train_flags(pipeline::TrainOptions& options, const TrainFlags& flags, const CommonFlags& common) {
    if (flags.no_augment) options.augment.flips = options.augment.rot90 = options.augment.swap_dates = false;
    if (flags.no_date_swap) options.augment.swap_dates = false;
    for (const auto& kv : flags.model_options) {
        const auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
            throw ConfigError("--model-option " + quote(kv) + " is not KEY=VALUE");
        options.model.extra[kv.substr(0, eq)] = option_value(kv.substr(eq + 1));
    }
    options.threads = common.threads;
}

}  // namespace cdk::apps
