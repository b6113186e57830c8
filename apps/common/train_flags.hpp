#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "cdk/pipeline/train.hpp"
#include "common/common.hpp"

namespace cdk::apps {

/// What the training flags set besides TrainOptions itself.
struct TrainFlags {
    bool no_augment = false;    ///< --no-augment
    bool no_date_swap = false;  ///< --no-date-swap
    std::vector<std::string> model_options;  ///< --model-option KEY=VALUE, repeatable
};

/// Add the flags every training program shares (cd-train-teacher, cd-distill): manifests,
/// output, architecture, schedule, optimiser, augmentation, loss, device, resume ...
/// `--arch` is added but not required; the start-from-a-bundle flag is named `init_flag`.
void add_train_flags(CLI::App& app, pipeline::TrainOptions& options, TrainFlags& flags,
                     const std::string& init_flag = "--init");

/// After parsing: apply --no-augment, --no-date-swap, --model-option and --threads. Every
/// cross-option rule is the library's validate() (pipeline::validate(TrainOptions)).
void finish_train_flags(pipeline::TrainOptions& options, const TrainFlags& flags, const CommonFlags& common);

}  // namespace cdk::apps
