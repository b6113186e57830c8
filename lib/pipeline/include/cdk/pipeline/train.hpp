#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "cdk/core/context.hpp"
#include "cdk/nn/losses.hpp"
#include "cdk/nn/models.hpp"
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
    nlohmann::json header_extra = nlohmann::json::object();  ///< merged into the bundle header (distillation records its teachers)
};

/// Cross-option checks.
void validate(const TrainOptions& options);

/// An extra loss term added to the task loss at every step (distillation plugs in here).
using ExtraLoss = std::function<torch::Tensor(const Batch& batch, const nn::ChangeOutput& out)>;

/// Train a model; validate every epoch, keep the best bundle by change-class F1 at OUT,
/// write one JSON line per epoch to OUT.log.jsonl and a checkpoint OUT.ckpt for --resume.
/// Returns the JSON summary (best epoch, metrics, seconds, samples/s).
nlohmann::json train_model(const TrainOptions& options, const RunContext& ctx = {},
                           const ExtraLoss& extra = {});

}  // namespace cdk::pipeline
