#include "cdk/core/car.hpp"

#include "cdk/core/fs.hpp"

namespace cdk {

int partition_of(double car, const std::vector<double>& thresholds) {
    for (size_t k = 0; k < thresholds.size(); ++k)
        if (car <= thresholds[k]) return static_cast<int>(k);
    return static_cast<int>(thresholds.size());
}

std::vector<std::string> partition_names(std::size_t threshold_count) {
    if (threshold_count == 1) return {"small", "large"};
    if (threshold_count == 2) return {"small", "medium", "large"};
    std::vector<std::string> names;
    for (size_t k = 0; k <= threshold_count; ++k) names.push_back("p" + std::to_string(k + 1));
    return names;
}

bool parse_car(const std::string& cell, double& car) {
    double v = 0;
    if (!parse_number(trim(cell), v) || !(v >= 0 && v <= 1)) return false;
    car = v;
    return true;
}

}  // namespace cdk
