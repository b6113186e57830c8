#include <catch2/catch.hpp>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cdk/core/csv.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/nn/bundle.hpp"
#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::exists;
using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {

// A 128x96 synthetic scene in TMP/scene, tiled into TMP/tiles and partitioned into TMP/parts
// (a quarter for validation, `more` cd-partition options); returns its cd-synth settings.
cdk::test::SynthScene partitioned_scene(const TempDir& tmp, const std::vector<std::string>& more) {
    cdk::test::SynthScene ss;
    ss.width = 128;
    ss.height = 96;
    ss.seed = 3;
    ss.border = false;
    cdk::test::tile_scene(cdk::test::synth_scene(tmp / "scene", ss), tmp / "tiles");
    std::vector<std::string> args = {tmp / "tiles/tiles.csv", "--out", tmp / "parts", "--val-fraction", "0.25",
                                     "--quiet"};
    args.insert(args.end(), more.begin(), more.end());
    REQUIRE(run_tool("cd-partition", args).rc == 0);
    return ss;
}

}  // namespace

TEST_CASE("cd-distill --help and --version", "[cli][distill]") {
    auto h = run_tool("cd-distill", {"--help"});
    CHECK(h.rc == 0);
    for (const char* flag : {"--method", "--teachers", "--thresholds", "--student-init", "--kd-weight",
                             "--kd-temperature", "--kd-kl-weight", "--train", "--val", "--out", "--resume"})
        CHECK(h.out.find(flag) != std::string::npos);
    auto v = run_tool("cd-distill", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cd-distill (cdkit)") != std::string::npos);
}

TEST_CASE("the O-P/MTKD recipe through the programs: origin, teachers, student, inference", "[cli][distill]") {
    TempDir tmp;
    partitioned_scene(tmp, {"--quantiles", "2"});
    const std::string scene = tmp / "scene";
    auto train = [&](const std::string& manifest, const std::string& out, const std::vector<std::string>& more) {
        std::vector<std::string> args = {"--train", manifest, "--val", tmp / "parts/val.csv", "--arch",
                                         "fc-siam-diff", "--width", "4", "--epochs", "1", "--out", out,
                                         "--device", "cpu", "--threads", "1", "--quiet"};
        args.insert(args.end(), more.begin(), more.end());
        auto r = run_tool("cd-train-teacher", args);
        INFO(r.err);
        REQUIRE(r.rc == 0);
    };
    train(tmp / "parts/origin.csv", tmp / "origin.cdm", {});
    train(tmp / "parts/small.csv", tmp / "small.cdm", {"--init", tmp / "origin.cdm"});
    train(tmp / "parts/large.csv", tmp / "large.cdm", {"--init", tmp / "origin.cdm"});

    const std::string student = tmp / "student.cdm";
    auto r = run_tool("cd-distill", {"--method", "mtkd", "--train", tmp / "parts/origin.csv", "--val",
                                     tmp / "parts/val.csv", "--student-init", tmp / "origin.cdm", "--teachers",
                                     "small=" + (tmp / "small.cdm") + ",large=" + (tmp / "large.cdm"), "--out",
                                     student, "--epochs", "2", "--kd-weight", "0.5", "--device", "cpu", "--threads",
                                     "1", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["complete"] == true);
    CHECK(j["distillation"]["kd_weight"] == 0.5);
    const auto h = cdk::nn::read_bundle_header(student);
    CHECK(h["model"]["arch"] == "fc-siam-diff");  // the origin's
    CHECK(h["distillation"]["teachers"][1]["name"] == "large");
    CHECK(h["distillation"]["thresholds"].size() == 1);  // from the teachers' quantile partition

    // The student is a normal bundle: cd-infer runs it alone.
    r = run_tool("cd-infer", {"--model", student, "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                              tmp / "change.tif", "--quiet"});
    INFO(r.err);
    CHECK(r.rc == 0);
    CHECK(exists(tmp / "change.tif"));

    // Bad input: one clear line, exit 1, no output.
    r = run_tool("cd-distill", {"--method", "kd-msi", "--train", tmp / "parts/origin.csv", "--student-init",
                                tmp / "origin.cdm", "--teachers", "small=" + (tmp / "small.cdm") + ",large=" +
                                (tmp / "large.cdm"), "--out", tmp / "x.cdm", "--quiet"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("kd-msi-cam") != std::string::npos);  // kd-msi trains its own model, not the origin's
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(exists(tmp / "x.cdm"));
    r = run_tool("cd-distill", {"--train", tmp / "parts/origin.csv", "--student-init", tmp / "origin.cdm",
                                "--teachers", "small=" + (tmp / "missing.cdm") + ",large=" + (tmp / "large.cdm"),
                                "--out", tmp / "x.cdm", "--quiet"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("missing.cdm") != std::string::npos);
    CHECK_FALSE(exists(tmp / "x.cdm"));
}

TEST_CASE("the HiCD chain through the programs: clean teacher, HiCD student, degraded scene, map, score",
          "[cli][distill][hicd]") {
    TempDir tmp;
    cdk::test::SynthScene ss = partitioned_scene(tmp, {});
    const std::vector<std::string> common = {"--train", tmp / "parts/origin.csv", "--val", tmp / "parts/val.csv",
                                             "--epochs", "1", "--device", "cpu", "--threads", "1", "--quiet"};
    auto run = [&](const std::string& tool, std::vector<std::string> args) {
        args.insert(args.end(), common.begin(), common.end());
        auto r = run_tool(tool, args);
        INFO(tool << ": " << r.err);
        REQUIRE(r.rc == 0);
        return nlohmann::json::parse(r.out);
    };
    run("cd-train-teacher", {"--arch", "fc-siam-diff", "--width", "4", "--out", tmp / "teacher.cdm"});
    const auto s = run("cd-distill", {"--method", "hicd", "--teacher", tmp / "teacher.cdm", "--student-init",
                                      tmp / "teacher.cdm", "--degrade", "res=2,noise=4", "--hicd-pool", "8", "--out",
                                      tmp / "student.cdm"});
    CHECK(s["distillation"]["method"] == "hicd");
    // A held-out scene whose date 2 is degraded the same way, mapped by the student alone.
    ss.seed = 8;
    const std::string other = cdk::test::synth_scene(tmp / "other", ss);
    REQUIRE(run_tool("cd-degrade", {"--in", other + "/post.tif", "--out", tmp / "post_deg.tif", "--degrade",
                                    "res=2,noise=4", "--seed", "1", "--quiet"})
                .rc == 0);
    auto r = run_tool("cd-infer", {"--model", tmp / "student.cdm", "--pre", other + "/pre.tif", "--post",
                                   tmp / "post_deg.tif", "--out", tmp / "change.tif", "--threads", "1", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    r = run_tool("cd-eval", {"--pred", tmp / "change.tif", "--ref", other + "/label.tif", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["pooled"].contains("change"));

    // HiCD without a degradation, or without a teacher, is refused in one line.
    r = run_tool("cd-distill", {"--method", "hicd", "--teacher", tmp / "teacher.cdm", "--train",
                                tmp / "parts/origin.csv", "--out", tmp / "x.cdm", "--quiet"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("--degrade") != std::string::npos);
    CHECK_FALSE(exists(tmp / "x.cdm"));
    r = run_tool("cd-distill", {"--method", "hicd", "--degrade", "res=2", "--train", tmp / "parts/origin.csv",
                                "--out", tmp / "x.cdm", "--quiet"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("--teacher") != std::string::npos);
}

TEST_CASE("the KD-MSI chain through the programs: bits by hand, KD-MSI, MSI map, pseudo-masks, second stage",
          "[cli][distill][kdmsi]") {
    TempDir tmp;
    cdk::test::SynthScene ss;
    ss.width = 128;
    ss.height = 96;
    ss.seed = 3;
    ss.border = false;
    const std::string scene = cdk::test::synth_scene(tmp / "scene", ss);
    auto ok = [&](const std::string& tool, const std::vector<std::string>& args) {
        auto r = run_tool(tool, args);
        INFO(tool << ": " << r.err);
        REQUIRE(r.rc == 0);
        return nlohmann::json::parse(r.out);
    };
    // The bits from a labelled tiling, then the scene tiled without its label.
    ok("cd-tile", {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--label", scene + "/label.tif",
                   "--tile-size", "32", "--out", tmp / "labelled", "--quiet"});
    const auto lab = cdk::read_csv(tmp / "labelled/tiles.csv");
    std::string bits = "id,changed\n";
    for (const auto& r : lab.rows) bits += r[0] + "," + r[size_t(lab.column("changed"))] + "\n";
    cdk::write_text_file(tmp / "bits.csv", bits);
    const auto t = ok("cd-tile", {"--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--tile-labels",
                                  tmp / "bits.csv", "--tile-size", "32", "--out", tmp / "tiles", "--quiet"});
    CHECK(t["labelled_tiles"] == 0);
    CHECK(t["image_labelled_tiles"] == lab.rows.size());
    ok("cd-partition", {tmp / "tiles/tiles.csv", "--out", tmp / "parts", "--val-fraction", "0.25", "--quiet"});
    const std::vector<std::string> fast = {"--epochs", "1", "--device", "cpu", "--threads", "1", "--quiet"};
    auto with = [&](std::vector<std::string> args) {
        args.insert(args.end(), fast.begin(), fast.end());
        return args;
    };
    const auto k = ok("cd-distill", with({"--method", "kd-msi", "--train", tmp / "parts/origin.csv", "--val",
                                          tmp / "parts/val.csv", "--width", "4", "--model-option", "stages=3",
                                          "--out", tmp / "k.cdm"}));
    CHECK(k["distillation"]["method"] == "kd-msi");
    CHECK(k["metrics"]["image"]["tiles"].get<int>() > 0);
    // The scene mapped with MSI; the teacher's CAM with --msi-branch teacher.
    const auto m = ok("cd-infer", {"--model", tmp / "k.cdm", "--pre", scene + "/pre.tif", "--post",
                                   scene + "/post.tif", "--out", tmp / "b.tif", "--threads", "1", "--quiet"});
    CHECK(m["op"]["mode"] == "msi");
    CHECK(m["op"]["branch"] == "student");
    const auto a = ok("cd-infer", {"--model", tmp / "k.cdm", "--msi-branch", "teacher", "--msi-scales", "1,2",
                                   "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                                   tmp / "a.tif", "--threads", "1", "--quiet"});
    CHECK(a["op"]["branch"] == "teacher");
    CHECK(a["op"]["scales"].size() == 2);
    // Pseudo-masks, a second-stage model on them, its map scored.
    const auto p = ok("cd-infer", {"--model", tmp / "k.cdm", "--tiles", tmp / "parts/origin.csv", "--out",
                                   tmp / "pseudo", "--threads", "1", "--quiet"});
    CHECK(p["count"].get<int>() > 0);
    ok("cd-train-teacher", with({"--train", tmp / "pseudo/tiles.csv", "--arch", "fc-siam-diff", "--width", "4",
                                 "--out", tmp / "seg.cdm"}));
    ok("cd-infer", {"--model", tmp / "seg.cdm", "--pre", scene + "/pre.tif", "--post", scene + "/post.tif", "--out",
                    tmp / "c.tif", "--threads", "1", "--quiet"});
    const auto e = ok("cd-eval", {"--pred", tmp / "c.tif", "--ref", scene + "/label.tif", "--quiet"});
    CHECK(e["pooled"].contains("change"));
    auto r = run_tool("cd-infer", {"--model", tmp / "seg.cdm", "--msi-branch", "teacher", "--pre", scene + "/pre.tif",
                               "--post", scene + "/post.tif", "--out", tmp / "x.tif", "--quiet"});
    CHECK(r.rc == 1);  // MSI options on an ordinary bundle: refused, not ignored
    CHECK(r.err.find("KD-MSI bundles") != std::string::npos);
    CHECK_FALSE(exists(tmp / "x.tif"));
    // The sweep on the labelled tiles prints a table and writes nothing.
    r = run_tool("cd-infer", {"--model", tmp / "k.cdm", "--tiles", tmp / "labelled/tiles.csv", "--tau-sweep",
                                   "--threads", "1"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(r.err.find("tau") != std::string::npos);
    CHECK(nlohmann::json::parse(r.out)["sweep"].size() == 19);
    // Bad input: one line, exit 1, nothing written.
    r = run_tool("cd-distill", {"--method", "kd-msi", "--train", tmp / "parts/origin.csv", "--crop", "16", "--out",
                                tmp / "x.cdm", "--quiet"});
    CHECK(r.rc == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(exists(tmp / "x.cdm"));
    r = run_tool("cd-infer", {"--model", tmp / "k.cdm", "--tiles", tmp / "parts/origin.csv", "--quiet"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("--out") != std::string::npos);
    r = run_tool("cd-infer", {"--model", tmp / "k.cdm", "--pre", scene + "/pre.tif", "--post", scene + "/post.tif",
                              "--tau-sweep", "--quiet"});
    CHECK(r.rc == 1);
}
