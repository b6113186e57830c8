#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "cdk/nn/models.hpp"
#include "cdk/nn/teachers.hpp"

namespace cdk::nn {

/// What cd-infer's streaming mapper asks of a mapping mode: the change probability of a
/// batch of windows. The mapper reads, normalises, batches, stitches and writes; a mode
/// (one model, flip TTA, Origin-Partition, and later multiscale inference) is one class.
class WindowPredictor {
public:
    virtual ~WindowPredictor() = default;
    /// Change probability of each window: `pre`, `post` [N, C, H, W] normalised, on the
    /// models' device (channels-last where the models are); `valid` [N, H, W] bool on the
    /// CPU, true where both dates hold data. Returns [N, H, W] float32 on the CPU, contiguous.
    virtual torch::Tensor predict(const torch::Tensor& pre, const torch::Tensor& post, const torch::Tensor& valid) = 0;
    /// Memory of the model's work on one window, relative to one forward pass at the window's
    /// size (a scale-2 pass needs 4); the mapper sizes its batches and read-ahead with it.
    virtual double memory_factor() const { return 1.0; }
    /// Whether the probability of a pixel depends only on its neighbourhood, not on the
    /// window it is computed in (then the mapper may choose larger windows).
    virtual bool local() const = 0;
    /// Called before each scene: per-scene counts start again.
    virtual void begin_scene() {}
    /// What the scene summary records of the mode since begin_scene() (null: nothing).
    virtual nlohmann::json summary() const { return nullptr; }
};

/// One model: the softmax of its change class, under bfloat16 autocast when asked.
class ModelPredictor : public WindowPredictor {
public:
    /// `model` in evaluation mode on `device`.
    ModelPredictor(ChangeModel model, const torch::Device& device, bool amp);
    torch::Tensor predict(const torch::Tensor& pre, const torch::Tensor& post, const torch::Tensor& valid) override;
    bool local() const override { return model_->local(); }

private:
    ChangeModel model_;
    torch::Device device_;
    bool amp_;
};

/// Flip test-time augmentation: the mean of the inner mode's probabilities on the window,
/// its horizontal mirror and its vertical mirror (each mirrored back): three passes.
class FlipTtaPredictor : public WindowPredictor {
public:
    /// Average `inner` over the flips.
    explicit FlipTtaPredictor(std::unique_ptr<WindowPredictor> inner);
    torch::Tensor predict(const torch::Tensor& pre, const torch::Tensor& post, const torch::Tensor& valid) override;
    double memory_factor() const override { return inner_->memory_factor(); }
    bool local() const override { return inner_->local(); }

private:
    std::unique_ptr<WindowPredictor> inner_;
};

/// Origin-Partition two-pass inference (JL1-CD paper): the origin's change probability
/// gives each window's CAR over its valid pixels (share of probability >= `threshold`);
/// the teacher whose CAR range holds it predicts the window.
class OriginPartitionPredictor : public WindowPredictor {
public:
    /// `teachers[i]` predicts for CAR partition i of `set` (names and thresholds from it).
    OriginPartitionPredictor(std::unique_ptr<WindowPredictor> origin,
                             std::vector<std::unique_ptr<WindowPredictor>> teachers, const TeacherSet& set,
                             double threshold);
    torch::Tensor predict(const torch::Tensor& pre, const torch::Tensor& post, const torch::Tensor& valid) override;
    bool local() const override { return false; }  // the window's CAR picks the teacher
    void begin_scene() override;
    /// {"thresholds": [...], "windows": {teacher: windows routed to it}}.
    nlohmann::json summary() const override;

private:
    std::unique_ptr<WindowPredictor> origin_;
    std::vector<std::unique_ptr<WindowPredictor>> teachers_;
    std::vector<std::string> names_;
    std::vector<double> thresholds_;
    double threshold_;
    std::vector<int64_t> routed_;
};

}  // namespace cdk::nn
