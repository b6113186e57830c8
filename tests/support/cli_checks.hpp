#pragma once
// Checks and fixtures shared by the program (CLI) tests.

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "support/support.hpp"

namespace cdk::test {

/// A run that failed as every cdkit program must: exit 1, nothing on stdout, exactly one
/// line on stderr, starting with "ERROR: " and naming every culprit.
inline void check_one_error_line(const CommandResult& r, const std::vector<std::string>& culprits) {
    INFO("stderr: " << r.err);
    CHECK(r.rc == 1);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("ERROR: ", 0) == 0);
    for (const auto& c : culprits) CHECK(r.err.find(c) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

/// The same with one culprit.
inline void check_one_error_line(const CommandResult& r, const std::string& culprit) {
    check_one_error_line(r, std::vector<std::string>{culprit});
}

/// A synthetic scene pair made by cd-synth for a program test.
struct SynthScene {
    int width = 96;       ///< columns
    int height = 64;      ///< rows
    int bands = 3;        ///< bands per date
    int seed = 2;         ///< cd-synth's seed
    bool border = true;   ///< keep cd-synth's default nodata border (else --border 0)
};

/// Run cd-synth into `dir` (pre.tif, post.tif, label.tif); the test stops if it fails.
inline std::string synth_scene(const std::string& dir, const SynthScene& s = {}) {
    std::vector<std::string> args = {"--out", dir, "--width", std::to_string(s.width), "--height",
                                     std::to_string(s.height), "--bands", std::to_string(s.bands), "--seed",
                                     std::to_string(s.seed), "--quiet"};
    if (!s.border) args.insert(args.end(), {"--border", "0"});
    const auto r = run_tool("cd-synth", args);
    INFO(r.err);
    REQUIRE(r.rc == 0);
    return dir;
}

/// Run cd-tile on the labelled scene in `scene` (32 px tiles) into `dir`; returns its tiles.csv.
inline std::string tile_scene(const std::string& scene, const std::string& dir) {
    const auto r = run_tool("cd-tile", {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--label",
                                        scene + "/label.tif", "--tile-size", "32", "--out", dir, "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    return dir + "/tiles.csv";
}

/// Write `script` into `dir` and run it with Debian's /usr/bin/python3 and `args`
/// (`env` is put before the command, e.g. "QT_QPA_PLATFORM=offscreen").
inline CommandResult run_python(const std::string& dir, const std::string& script,
                                const std::vector<std::string>& args, const std::string& env = "") {
    const std::string path = dir + "/script.py";
    {
        std::ofstream f(path);
        f << script;
    }
    std::string cmd = (env.empty() ? "" : env + " ") + "/usr/bin/python3 '" + path + "'";
    for (const auto& a : args) cmd += " '" + a + "'";
    return run_shell(cmd);
}

/// `n` float32 values from a raw file written by numpy's tofile; the test stops if short.
inline std::vector<float> read_f32(const std::string& path, size_t n) {
    std::vector<float> v(n);
    std::ifstream f(path, std::ios::binary);
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(float)));
    REQUIRE(f.gcount() == std::streamsize(n * sizeof(float)));
    return v;
}

}  // namespace cdk::test
