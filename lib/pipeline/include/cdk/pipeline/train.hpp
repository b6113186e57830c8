#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>

#include "cdk/core/context.hpp"
#include "cdk/nn/losses.hpp"
#include "cdk/nn/models.hpp"
#include "cdk/nn/objective.hpp"
#include "cdk/pipeline/tile_dataset.hpp"

namespace cdk::pipeline {

/// Options of cd-train-teacher (and the shared part of cd-distill).
struct TrainOptions {
    std::string train;                   ///< training manifest
    std::string val;                     ///< validation manifest (empty = no validation)
    std::string out;                     ///< output bundle (.cdm)
    std::string save_last;               ///< also write the latest epoch's weights here (empty = no)
    nn::ModelOptions model;              ///< architecture; in_bands is taken from the data
    std::string init;                    ///< start from this bundle's weights (same architecture)
    std::string scene_norm;              ///< per-scene standardisation: none | image | band; empty = --init's, else none
    int epochs = 20;                     ///< passes over the training set
    int batch_size = 8;                  ///< samples per step
    double lr = 1e-3;                    ///< peak learning rate
    double weight_decay = 1e-4;          ///< decoupled weight decay (AdamW) / L2 (Adam, SGD)
    std::string optimizer = "adamw";     ///< adamw | adam (L2 in the gradient) | sgd
    std::string schedule = "poly";       ///< constant | poly | cosine | exp (x0.95 per epoch)
    int warmup_steps = 0;                ///< linear warm-up steps
    double ema = 0;                      ///< decay of an exponential moving average of the weights
                                         ///< that is validated and kept instead of them; 0 = off
    AugmentOptions augment;              ///< training augmentations
    std::string degrade;                 ///< degrade one date of every training and validation sample (geo::DegradeSpec text); empty = off
    std::string degrade_date = "2";      ///< the date --degrade degrades: 2, 1 or any
    nn::LossOptions loss;                ///< task loss
    std::string device = "auto";         ///< auto | cpu | cuda[:N]
    int threads = 0;                     ///< intra-op threads, 0 = LibTorch's default
    int workers = 2;                     ///< data-loading threads
    bool amp = false;                    ///< mixed precision (bfloat16 autocast): CUDA, or a CPU with AVX-512
    std::string memory_format = "auto";  ///< CPU layout: auto (channels-last from width 16) | channels-last | contiguous
    uint64_t seed = 0;                   ///< weights, shuffling and augmentation
    bool resume = false;                 ///< continue from OUT's checkpoint after an interruption
    bool overwrite = false;              ///< replace an existing OUT
    int max_steps = 0;                   ///< stop after this many steps (0 = no limit; tests)
};

/// Cross-option checks: the architecture is a known one, --model-option goes without a
/// start bundle, schedule, optimiser, augmentation and task-loss values are usable.
void validate(const TrainOptions& options);

/// An extra loss term added to the task loss at every step (experiments and tests).
using nn::ExtraLoss;

/// Builds a method's objective around the model the trainer starts from (new, --init's, or
/// a checkpoint's; on the device, seeded). It must not draw random numbers: whatever it
/// loads (teachers) is loaded before training starts.
using ObjectiveFactory = std::function<std::unique_ptr<nn::Objective>(nn::ChangeModel model)>;

/// The training loop around any objective: validate every epoch, keep the best bundle by
/// change-class F1 at OUT (its header records the objective's describe() as
/// "distillation"), write one JSON line per epoch to OUT.log.jsonl (every loss term named)
/// and a checkpoint OUT.ckpt (with the objective's own state) for --resume. Returns the JSON
/// summary (best epoch, metrics, seconds, samples/s; "distillation": the objective's summary()).
nlohmann::json train_objective(const TrainOptions& options, const ObjectiveFactory& make_objective,
                               const RunContext& ctx = {});

/// Supervised training (cd-train-teacher): train_objective with nn::SupervisedObjective.
nlohmann::json train_model(const TrainOptions& options, const RunContext& ctx = {},
                           const ExtraLoss& extra = {});

}  // namespace cdk::pipeline
