#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "cdk/core/context.hpp"
#include "cdk/geo/quicklook.hpp"
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
    std::string summary;   ///< --summary FILE: the JSON result written there too
};

/// Parse the command line, also as GDAL users type it: `-of`, `-co` and `-ot` are read as
/// `--of`, `--co` and `--ot`, and `--config KEY VALUE` (or `KEY=VALUE`) sets a GDAL
/// configuration option (CPLSetConfigOption) before any GDAL call. Returns -1 when the
/// program goes on, else its exit code: 0 after --help or --version, 2 for a usage error
/// (CLI11's own codes are 105-114; POSIX tools use 2). Records the command line for
/// the provenance every output carries.
int parse_command_line(CLI::App& app, int argc, char** argv);

/// Parse, or return from main() with the exit code parse_command_line() chose.
#define CDK_PARSE(app, argc, argv)                                                   \
    do {                                                                              \
        if (const int cdk_rc_ = ::cdk::apps::parse_command_line(app, argc, argv); cdk_rc_ >= 0) \
            return cdk_rc_;                                                           \
    } while (0)

/// End --help with an example, the exit codes and where the program's page is:
/// "man PROGRAM" once installed, docs/PROGRAM.md in the source tree.
void set_footer(CLI::App& app, const std::string& example);

/// Add --quiet --verbose --debug --threads --summary --version to a program.
void add_common_flags(CLI::App& app, CommonFlags& flags);

/// Add --of (GTiff or COG), --co KEY=VALUE (repeatable) and --overwrite, as in
/// gdal_translate; `format_help` and `overwrite_help` name what they apply to.
void add_write_flags(CLI::App& app, geo::WriteOptions& options, const std::string& format_help = "Output format",
                     const std::string& overwrite_help = "Replace existing outputs");

/// Add --min-area: square metres ("500") or pixels ("5px"); the default "5px" leaves out
/// regions of 1 to 4 pixels, mostly speckle. Parsed into `m2` / `pixels` by
/// parse_min_area() once the command line is read.
void add_min_area_flag(CLI::App& app, std::string& text);

/// "500" -> 500 m², "5px" -> 5 pixels, "0" -> keep every region; ConfigError otherwise.
void parse_min_area(const std::string& text, double& m2, int& pixels);

/// Add --quicklook FILE.png, --quicklook-size and --quicklook-bands.
void add_quicklook_flags(CLI::App& app, geo::QuicklookOptions& options);

/// Run the program body with a context that logs and draws progress on stderr.
/// Catches once: 0 on success, 1 on any error (one line on stderr), 130 on interrupt.
int run_guarded(const CommonFlags& flags, const std::function<void(const RunContext&)>& body);

/// Round a result's numbers to what they mean: areas (a key holding "area" or ending in
/// "_m2") to the square metre, other fractional numbers to 6 significant digits.
nlohmann::json rounded(const nlohmann::json& result);

/// Print a result on stdout as JSON (the only thing programs write there), rounded(), and
/// write it to the --summary file too when one was given (atomically).
void print_result(const nlohmann::json& result);

}  // namespace cdk::apps
