#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace cdk::pipeline {

/// Training curves as an SVG picture, drawn from the epoch lines of a training log
/// (OUT.log.jsonl): on the left the training loss (and the validation loss) per epoch, on
/// the right the validation score (change-class F1 at the threshold in use, and at the
/// best threshold when the log has one), the best epoch marked. `title` heads the picture.
/// Lines without an "epoch" are skipped; an empty log gives a picture that says so.
std::string training_curves_svg(const std::vector<nlohmann::json>& epochs, const std::string& title);

/// Read OUT.log.jsonl and write its curves to `svg_path` (atomically).
void write_training_curves(const std::string& log_path, const std::string& svg_path, const std::string& title);

}  // namespace cdk::pipeline
