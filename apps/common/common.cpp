#include "common.hpp"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <gdal.h>
#include <malloc.h>
#include <unistd.h>

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

}  // namespace

void add_common_flags(CLI::App& app, CommonFlags& flags) {
    app.set_version_flag("--version", std::string(app.get_name()) + " (cdkit) " + kVersion);
    app.add_flag("-q,--quiet", flags.quiet, "Print only warnings and errors on stderr");
    app.add_flag("-v,--verbose", flags.verbose, "Print debug messages on stderr");
    app.add_flag("--debug", flags.debug, "Let errors escape as exceptions (for debugging)");
    app.add_option("--threads", flags.threads, "Worker threads (0 = all cores)")
        ->check(CLI::Range(0, 1024));
}

void add_write_flags(CLI::App& app, geo::WriteOptions& options, const std::string& format_help,
                     const std::string& overwrite_help) {
    app.add_option("--of", options.format, format_help + ": GTiff or COG")
        ->capture_default_str()
        ->check(CLI::IsMember({"GTiff", "COG"}));
    app.add_option("--co", options.creation_options, "Creation option KEY=VALUE (repeatable)");
    app.add_flag("--overwrite", options.overwrite, overwrite_help);
}

int run_guarded(const CommonFlags& flags, const std::function<void(const RunContext&)>& body) {
    g_min_level = flags.quiet ? LogLevel::Warning : flags.verbose ? LogLevel::Debug : LogLevel::Info;
    g_memory_options = flags.memory_options;
    CPLSetErrorHandler(gdal_error_handler);
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

void print_result(const std::string& json_text) {
    std::fwrite(json_text.data(), 1, json_text.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

}  // namespace cdk::apps
