#include "common.hpp"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <gdal.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <new>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/version.hpp"

namespace cdk::apps {

namespace {

constexpr long long kDefaultGdalCacheBytes = 32LL << 20;

volatile std::sig_atomic_t g_interrupted = 0;
void on_signal(int) { g_interrupted = 1; }

// glibc hands every freed block above its trim threshold back to the system, and serves
// large blocks by mmap: a forward pass's activations (megabytes each, freed after every
// layer) then cost fresh zeroed pages, window after window, step after step. Keeping
// freed memory for reuse made cd-infer 14 % faster (FC-Siam-diff, 4096² scene: 26.1-26.4 s
// -> 22.2-22.7 s) and cd-train-teacher 8 % (72 -> 77 samples/s) for 5 % more peak memory;
// each setting alone gained nothing (the trim threshold alone fixes the mmap threshold
// at its 128 KiB default: 38 s). Blocks above 32 MiB (glibc's ceiling) still use mmap.
// The heap is trimmed once more than 256 MiB lies free at its top: with no trimming at
// all, peak memory grew 1.18-1.25x for a 4x larger scene (cd-infer, 4096² -> 8192²),
// with 256 MiB 1.08-1.11x at the same speed (64 MiB: 1.05x, but 6 % slower).
// A user's own GLIBC_TUNABLES or MALLOC_*_ settings win.
void tune_allocator() {
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    if ((tunables && std::strstr(tunables, "malloc")) || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
        std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TOP_PAD_"))
        return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

// GDAL-style progress on stderr: "0...10...20..." without carriage returns when stderr is
// not a terminal; a bar with an ETA that redraws in place when it is.
class TerminalProgress {
public:
    explicit TerminalProgress(bool tty) : tty_(tty), start_(Clock::now()) {}

    bool update(double done, const std::string& message) {
        std::lock_guard<std::mutex> lock(mu_);
        if (g_interrupted) return false;
        if (done >= 1.0 && last_done_ >= 1.0 && (message.empty() || message == message_)) return true;
        if (done < last_done_) {  // a new task started
            finish_line();
            reset();
        }
        last_done_ = done;
        if (!message.empty() && message != message_) {
            if (started_) finish_line();
            message_ = message;
            reset();
        }
        if (tty_) draw_bar(done);
        else draw_dots(done);
        return true;
    }

    void finish_line() {
        if (started_ && !finished_) std::fputc('\n', stderr);
        started_ = false;
        finished_ = true;
    }

private:
    using Clock = std::chrono::steady_clock;

    void reset() {
        next_tick_ = 0;
        started_ = false;
        finished_ = false;
        start_ = Clock::now();
    }

    void begin() {
        if (started_) return;
        started_ = true;
        finished_ = false;
        if (!message_.empty() && !tty_) std::fprintf(stderr, "%s: ", message_.c_str());
    }

    void draw_dots(double done) {
        begin();
        const int target = static_cast<int>(std::floor(done * 40 + 1e-9));  // 2.5 % steps
        while (next_tick_ <= target && next_tick_ <= 40) {
            if (next_tick_ % 4 == 0) std::fprintf(stderr, "%d", next_tick_ * 10 / 4);
            else std::fputc('.', stderr);
            ++next_tick_;
        }
        if (done >= 1.0 && !finished_) {
            std::fprintf(stderr, " - done in %.1f s.\n", seconds());
            finished_ = true;
            started_ = false;
        }
        std::fflush(stderr);
    }

    void draw_bar(double done) {
        begin();
        const double s = seconds();
        auto now = Clock::now();
        if (done < 1.0 && now - last_draw_ < std::chrono::milliseconds(100)) return;
        last_draw_ = now;
        const int width = 30, fill = static_cast<int>(done * width);
        std::string bar(fill, '#');
        bar.resize(width, '-');
        char eta[32] = "";
        if (done > 0.01 && done < 1.0) std::snprintf(eta, sizeof eta, " ETA %.0f s", s / done * (1 - done));
        std::fprintf(stderr, "\r%s [%s] %3.0f%%%s   ", message_.c_str(), bar.c_str(), done * 100, eta);
        if (done >= 1.0 && !finished_) {
            std::fprintf(stderr, " done in %.1f s.\n", s);
            finished_ = true;
            started_ = false;
        }
        std::fflush(stderr);
    }

    double seconds() const {
        return std::chrono::duration<double>(Clock::now() - start_).count();
    }

    std::mutex mu_;
    bool tty_;
    Clock::time_point start_, last_draw_{};
    std::string message_;
    double last_done_ = 0;
    int next_tick_ = 0;
    bool started_ = false, finished_ = false;
};

LogLevel g_min_level = LogLevel::Info;
TerminalProgress* g_progress = nullptr;

void write_log(LogLevel level, const std::string& message) {
    if (level < g_min_level) return;
    if (g_progress) g_progress->finish_line();
    const char* prefix = level == LogLevel::Error     ? "ERROR: "
                         : level == LogLevel::Warning ? "Warning: "
                         : level == LogLevel::Debug   ? "debug: "
                                                      : "";
    std::fprintf(stderr, "%s%s\n", prefix, message.c_str());
    std::fflush(stderr);
}

// GDAL failures become exceptions carrying CPLGetLastErrorMsg(); here only warnings and
// debug messages are shown, routed through the program's logger.
// GDAL's warnings are shown at debug level (--verbose): a damaged input draws several
// before the error that names it, and a failure is one line. What the user asked for and
// GDAL would only warn about (an unknown --co) is checked and refused up front.
std::string g_memory_options;  // CommonFlags::memory_options of the running program

// The one line for running out of memory: what failed, and the options that lower it.
std::string out_of_memory_line(const std::string& detail) {
    return "out of memory (" + detail + ")" +
           (g_memory_options.empty() ? std::string() : "; " + g_memory_options + " lower what a run needs");
}

void CPL_STDCALL gdal_error_handler(CPLErr cls, CPLErrorNum, const char* msg) {
    // GDAL aborts after a fatal error, which it raises when an allocation fails (CPLMalloc,
    // any thread): say so in the one line, and exit 1 rather than die by SIGABRT. Temporary
    // files stay behind; the next run of the same outputs removes them (docs/reliability.md).
    if (cls == CE_Fatal) {
        write_log(LogLevel::Error, out_of_memory_line("GDAL: " + std::string(msg)));
        std::_Exit(1);
    }
    if (cls == CE_Warning) write_log(LogLevel::Debug, std::string("GDAL: ") + msg);
    else if (cls == CE_Debug) write_log(LogLevel::Debug, std::string("GDAL: ") + msg);
}

// An error's message for the one line a program prints: its first line (LibTorch appends
// a backtrace of many lines to its own); running out of memory says so, with the options
// that lower it.
std::string error_line(const std::exception& e) {
    std::string m = e.what();
    if (const auto nl = m.find('\n'); nl != std::string::npos) m.erase(nl);
    while (!m.empty() && (m.back() == ' ' || m.back() == '\r')) m.pop_back();
    const bool oom = dynamic_cast<const std::bad_alloc*>(&e) || m.find("can't allocate memory") != std::string::npos ||
                     m.find("out of memory") != std::string::npos;
    return oom ? out_of_memory_line(m) : m;
}

std::string g_command_line;
std::string g_program;  // the program's file name, from argv[0]
std::string g_summary_path;  // CommonFlags::summary of the running program

// A word of a command line as a POSIX shell reads it back.
std::string shell_quoted(const std::string& word) {
    if (!word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                                "-_./=:,+%@") == std::string::npos)
        return word;
    std::string q = "'";
    for (char c : word) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

bool is_area_key(const std::string& key) {
    return key.find("area") != std::string::npos ||
           (key.size() >= 3 && key.compare(key.size() - 3, 3, "_m2") == 0);
}

void round_numbers(nlohmann::json& j, bool area) {
    if (j.is_object()) {
        for (auto it = j.begin(); it != j.end(); ++it) round_numbers(it.value(), area || is_area_key(it.key()));
    } else if (j.is_array()) {
        for (auto& v : j) round_numbers(v, area);
    } else if (j.is_number_float()) {
        const double v = j.get<double>();
        if (!std::isfinite(v) || v == 0) return;
        if (area) {
            if (std::abs(v) < 9e15) j = static_cast<long long>(std::llround(v));  // whole square metres
            return;
        }
        const double scale = std::pow(10.0, 5 - static_cast<int>(std::floor(std::log10(std::abs(v)))));
        const double r = std::round(v * scale) / scale;
        // Printed as the shortest text that reads back: 0.123457, not 0.12345700000000001.
        double back = 0;
        j = parse_number(format_number(r), back) ? back : r;
    }
}

}  // namespace

int parse_command_line(CLI::App& app, int argc, char** argv) {
    std::vector<std::string> args;
    g_command_line.clear();
    for (int i = 0; i < argc; ++i) g_command_line += (i ? " " : "") + shell_quoted(argv[i]);
    g_program = argc > 0 ? std::string(argv[0]).substr(std::string(argv[0]).rfind('/') + 1) : app.get_name();
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-of" || a == "-co" || a == "-ot") {
            args.push_back("-" + a);
        } else if (a == "--config") {
            // GDAL's --config KEY VALUE, or KEY=VALUE as GDAL 3.9 accepts it.
            std::string key, value;
            const std::string k = i + 1 < argc ? argv[i + 1] : "";
            if (const auto eq = k.find('='); eq != std::string::npos && eq > 0) {
                key = k.substr(0, eq);
                value = k.substr(eq + 1);
                i += 1;
            } else if (i + 2 < argc && !k.empty()) {
                key = k;
                value = argv[i + 2];
                i += 2;
            } else {
                std::fprintf(stderr, "ERROR: --config needs KEY VALUE (a GDAL configuration option, e.g. "
                                     "--config GDAL_CACHEMAX 64)\n");
                return 2;
            }
            CPLSetConfigOption(key.c_str(), value.c_str());
        } else {
            args.push_back(a);
        }
    }
    std::reverse(args.begin(), args.end());  // CLI11 takes the arguments last first
    try {
        app.parse(args);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    return -1;
}

void set_footer(CLI::App& app, const std::string& example) {
    const std::string name = app.get_name();
    app.footer("Example:\n  " + example +
               "\n\nExit status: 0 done, 1 error (one line on stderr), 2 usage error, 130 interrupted."
               "\nJSON result on stdout, log and progress on stderr. GDAL spellings work too: -of, -co, "
               "--config KEY VALUE.\nManual: man " +
               name + " (installed), or docs/" + name + ".md in the source tree.");
}

void add_common_flags(CLI::App& app, CommonFlags& flags) {
    app.set_version_flag("--version", std::string(app.get_name()) + " (cdkit) " + kVersion);
    app.add_flag("-q,--quiet", flags.quiet, "Print only warnings and errors on stderr");
    app.add_flag("-v,--verbose", flags.verbose, "Print debug messages on stderr");
    app.add_flag("--debug", flags.debug, "Let errors escape as exceptions (for debugging)");
    app.add_option("--threads", flags.threads, "Worker threads (0 = all cores)")
        ->check(CLI::Range(0, 1024));
    app.add_option("--summary", flags.summary,
                   "Also write the JSON result into this file (for batch logs that mix stdout and stderr)");
}

void add_write_flags(CLI::App& app, geo::WriteOptions& options, const std::string& format_help,
                     const std::string& overwrite_help) {
    app.add_option("--of", options.format,
                   format_help + ": GTiff, COG or PNG (default: from the extension, .tif GTiff, .png PNG; a "
                                 "GeoTIFF is tiled and DEFLATE-compressed unless --co says otherwise)")
        ->check(CLI::IsMember({"GTiff", "COG", "PNG"}));
    app.add_option("--co", options.creation_options, "Creation option KEY=VALUE (repeatable; also -co)");
    app.add_flag("--overwrite", options.overwrite, overwrite_help);
}

void add_min_area_flag(CLI::App& app, std::string& text) {
    app.add_option("--min-area", text,
                   "Leave out change regions smaller than this: square metres (500) or pixels (5px); 0 keeps every "
                   "region. The default leaves out regions of 1-4 pixels, mostly speckle")
        ->capture_default_str();
}

void parse_min_area(const std::string& text, double& m2, int& pixels) {
    m2 = 0;
    pixels = 0;
    const std::string t = trim(text);
    if (t.size() > 2 && t.compare(t.size() - 2, 2, "px") == 0) {
        double v = 0;
        if (!parse_number(t.substr(0, t.size() - 2), v) || v < 0 || v != std::floor(v) || v > 1e9)
            throw ConfigError("--min-area " + quote(text) + ": a pixel count is a whole number >= 0, e.g. 5px");
        pixels = static_cast<int>(v);
        return;
    }
    if (!parse_number(t, m2) || !(m2 >= 0) || !std::isfinite(m2))
        throw ConfigError("--min-area " + quote(text) + " is neither square metres (500) nor pixels (5px)");
}

void add_quicklook_flags(CLI::App& app, geo::QuicklookOptions& options) {
    app.add_option("--quicklook", options.out,
                   "Also draw a quick-look PNG: date 2 with the changes in red and nodata as a grey checker");
    app.add_option("--quicklook-size", options.max_size, "Longest side of the quick look in pixels")
        ->capture_default_str()
        ->check(CLI::Range(16, 16384));
    app.add_option("--quicklook-bands", options.bands,
                   "Bands of date 2 shown as red,green,blue (1-based; one band: grey); default: bands named "
                   "red/green/blue or Sentinel-2's B04,B03,B02, else 1,2,3")
        ->delimiter(',');
}

namespace {

// A crash inside a library still says what happened, in one line, before the process dies of
// its signal (exit status 128 + signal, a core dump where enabled). Seen: oneDNN's code
// generator segfaults when an allocation fails under an address-space limit (ulimit -v).
char g_crash_line[512];
size_t g_crash_len = 0;

void on_crash(int sig) {
    if (g_crash_len) (void)!::write(STDERR_FILENO, g_crash_line, g_crash_len);
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

void install_crash_line(const std::string& memory_options) {
    const std::string line = "ERROR: " + g_program +
                             " crashed inside a library (signal); near a memory limit this is running out of memory" +
                             (memory_options.empty() ? std::string() : " (" + memory_options + " lower what a run needs)") +
                             "\n";
    g_crash_len = std::min(line.size(), sizeof g_crash_line);
    std::memcpy(g_crash_line, line.data(), g_crash_len);
    for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE}) std::signal(sig, on_crash);
}

}  // namespace

int run_guarded(const CommonFlags& flags, const std::function<void(const RunContext&)>& body) {
    g_min_level = flags.quiet ? LogLevel::Warning : flags.verbose ? LogLevel::Debug : LogLevel::Info;
    g_memory_options = flags.memory_options;
    g_summary_path = flags.summary;
    if (!flags.debug) install_crash_line(flags.memory_options);
    if (!g_summary_path.empty()) {
        try {
            check_output_folder(g_summary_path);
        } catch (const std::exception& e) {
            write_log(LogLevel::Error, "--summary: " + error_line(e));
            return 1;
        }
    }
    CPLSetErrorHandler(gdal_error_handler);
    // Where every raster this run writes came from (gdalinfo shows it, QGIS under
    // Properties > Information).
    geo::set_provenance({{"CDK_VERSION", kVersion},
                         {"CDK_COMMAND", g_command_line},
                         {"TIFFTAG_SOFTWARE", "cdkit " + std::string(kVersion) + " (" + g_program + ")"}});
    tune_allocator();
    // Programs stream whole strips, so GDAL's default block cache (5 % of RAM) only grows the
    // resident size: cd-tile on an 8192x8192 pair ran in 4.0 s / 303 MB with 128 MiB of
    // cache, 3.0-3.6 s / 180-198 MB with 16-32 MiB. A user's GDAL_CACHEMAX still wins.
    geo::set_block_cache(kDefaultGdalCacheBytes);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    TerminalProgress bar(::isatty(STDERR_FILENO));
    g_progress = &bar;
    ProgressFn progress;
    if (!flags.quiet)
        progress = [&bar](double done, const std::string& msg) { return bar.update(done, msg); };
    else
        progress = [](double, const std::string&) { return !g_interrupted; };
    RunContext ctx(write_log, progress);

    auto finish = [&](int code) {
        bar.finish_line();
        g_progress = nullptr;
        return code;
    };
    if (flags.debug) {
        body(ctx);
        return finish(0);
    }
    try {
        body(ctx);
    } catch (const Cancelled&) {
        write_log(LogLevel::Error, "interrupted");
        return finish(130);
    } catch (const std::exception& e) {
        bar.finish_line();
        write_log(LogLevel::Error, error_line(e));
        return finish(1);
    }
    // An interrupt that came after the work was complete (every output written) changes
    // nothing: the run succeeded.
    return finish(0);
}

nlohmann::json rounded(const nlohmann::json& result) {
    nlohmann::json j = result;
    round_numbers(j, false);
    return j;
}

void print_result(const nlohmann::json& result) {
    const std::string json_text = rounded(result).dump(2);
    if (!g_summary_path.empty()) write_text_file(g_summary_path, json_text + "\n", true);
    std::fwrite(json_text.data(), 1, json_text.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

}  // namespace cdk::apps
