#pragma once
// What infer.cpp and infer_tiles.cpp share: a loaded model and its mapping mode.

#include <memory>
#include <string>

#include "cdk/nn/bundle.hpp"
#include "cdk/nn/kdmsi.hpp"
#include "cdk/nn/predictor.hpp"
#include "cdk/pipeline/infer.hpp"
#include "cdk/pipeline/teachers.hpp"
#include "cdk/pipeline/tile_dataset.hpp"

namespace cdk::pipeline {

// A bundle loaded once for every scene of a run (with its teachers in O-P mode), and the
// window predictor of the mapping mode around it.
struct LoadedModel {
    nn::Bundle bundle;
    Normalization norm;
    torch::Device device;
    std::string path;     // what --model (or --op-origin) named
    TeacherSet teachers;  // O-P mode: one per CAR partition, in CAR order
    bool nhwc = false;    // models and inputs channels-last
    double threshold = 0.5;  // on the change probability: --threshold, or the bundle's
    std::unique_ptr<nn::WindowPredictor> predictor;  // the mapping mode
    bool strict = false;  // change where probability > threshold (KD-MSI), else >=
    std::string threshold_source = "given";  // given | model (the bundle's validation) | default
};


/// The model (or O-P origin and teachers) of the options, in the memory format it runs
/// fastest in, with the threshold and the predictor of the mapping mode.
LoadedModel load_model(const InferOptions& o, const RunContext& ctx);

/// KD-MSI's multiscale inference options from cd-infer's (checked).
nn::MsiOptions msi_options(const InferOptions& o);

}  // namespace cdk::pipeline
