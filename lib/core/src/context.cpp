#include "cdk/core/context.hpp"

#include <algorithm>

#include "cdk/core/error.hpp"

namespace cdk {

RunContext::RunContext(LogFn log, ProgressFn progress)
    : log_(std::move(log)), progress_(std::move(progress)) {}

void RunContext::log(LogLevel level, const std::string& message) const {
    if (log_) log_(level, message);
}

void RunContext::progress(double done, const std::string& message) const {
    if (!progress_) return;
    if (!progress_(std::clamp(done, 0.0, 1.0), message)) throw Cancelled();
}

RunContext RunContext::scaled(double begin, double end) const {
    if (!progress_) return RunContext(log_, {});
    auto parent = progress_;
    return RunContext(log_, [parent, begin, end](double done, const std::string& msg) {
        return parent(begin + (end - begin) * done, msg);
    });
}

}  // namespace cdk
