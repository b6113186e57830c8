#pragma once

// The teacher sets of Origin-Partition live in lib/nn (cdk/nn/teachers.hpp); these names
// keep the pipeline's spelling.
#include "cdk/nn/teachers.hpp"

namespace cdk::pipeline {

using nn::check_threshold_count;
using nn::load_teachers;
using nn::TeacherSet;

}  // namespace cdk::pipeline
