#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "cdk/core/context.hpp"
#include "cdk/geo/raster.hpp"

namespace cdk::apps {

/// Flags every program shares.
struct CommonFlags {
    bool quiet = false;    ///< no progress, no info lines: only warnings and errors
    bool verbose = false;  ///< debug lines too
    bool debug = false;    ///< let exceptions escape (for a debugger / core dump)
    int threads = 0;       ///< worker threads, 0 = all cores
    /// The options that lower the memory a run needs, named when it runs out ("--ram or
    /// --batch-size"); set by each program.
    std::string memory_options;
};

/// Add --quiet --verbose --debug --threads --version to a program.
void add_common_flags(CLI::App& app, CommonFlags& flags);

/// Add --of (GTiff or COG), --co KEY=VALUE (repeatable) and --overwrite, as in
/// gdal_translate; `format_help` and `overwrite_help` name what they apply to.
void add_write_flags(CLI::App& app, geo::WriteOptions& options, const std::string& format_help = "Output format",
                     const std::string& overwrite_help = "Replace existing outputs");

/// Run the program body with a context that logs and draws progress on stderr.
/// Catches once: 0 on success, 1 on any error (one line on stderr), 130 on interrupt.
int run_guarded(const CommonFlags& flags, const std::function<void(const RunContext&)>& body);

/// Print a JSON text on stdout (the only thing programs write there).
void print_result(const std::string& json_text);

}  // namespace cdk::apps
