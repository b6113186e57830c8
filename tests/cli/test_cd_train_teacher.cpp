#include <catch2/catch.hpp>

#include <cmath>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cdk/core/csv.hpp"
#include "cdk/nn/bundle.hpp"
#include "support/cli_checks.hpp"
#include "support/support.hpp"

using cdk::test::exists;
using cdk::test::check_one_error_line;
using cdk::test::run_tool;
using cdk::test::TempDir;

namespace {

// A tiny synthetic tile set made with the programs themselves: cd-synth, then cd-tile.
std::string synthetic_tiles(const TempDir& tmp, int bands = 3, const std::string& name = "tiles") {
    cdk::test::SynthScene s;
    s.bands = bands;
    s.border = false;
    return cdk::test::tile_scene(cdk::test::synth_scene(tmp / (name + "_scene"), s), tmp / name);
}

std::vector<std::string> tiny_args(const std::string& train, const std::string& out, int epochs = 2) {
    return {"--train",  train, "--val",      train, "--arch",       "fc-siam-diff", "--width",
            "4",        "--out", out,        "--epochs", std::to_string(epochs), "--batch-size",
            "4",        "--device", "cpu",   "--threads", "1",        "--workers",    "1",
            "--crop",   "24",    "--quiet"};
}

}  // namespace

TEST_CASE("cd-train-teacher --help and --version", "[cli][train]") {
    auto h = run_tool("cd-train-teacher", {"--help"});
    CHECK(h.rc == 0);
    for (const char* flag : {"--train", "--val", "--arch", "--out", "--epochs", "--optimizer", "--schedule",
                             "--init", "--device", "--resume", "--max-steps", "--class-weights"})
        CHECK(h.out.find(flag) != std::string::npos);
    CHECK(h.out.find("fc-siam-diff") != std::string::npos);  // known architectures listed
    auto v = run_tool("cd-train-teacher", {"--version"});
    CHECK(v.rc == 0);
    CHECK(v.out.find("cd-train-teacher (cdkit)") != std::string::npos);
}

TEST_CASE("cd-train-teacher trains a bundle end to end, stops and resumes", "[cli][train]") {
    TempDir tmp;
    const auto tiles = synthetic_tiles(tmp);
    const std::string out = tmp / "m.cdm";

    const std::string last = tmp / "m.last.cdm";
    auto args = tiny_args(tiles, out, 3);
    args.insert(args.end(), {"--max-steps", "2", "--save-last", last});  // 6 tiles, batches of 4: 2 steps per epoch
    auto r = run_tool("cd-train-teacher", args);
    INFO(r.err);
    REQUIRE(r.rc == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["complete"] == false);
    CHECK(j["epochs_completed"] == 1);
    CHECK(exists(out + ".ckpt"));
    // --save-last holds the latest full epoch, here the first.
    CHECK(j["last"] == last);
    CHECK(cdk::nn::read_bundle_header(last)["metrics"]["epoch"] == 1);
    CHECK(cdk::nn::read_bundle_header(last)["training"]["complete"] == false);
    // Validating on the training tiles themselves is warned (even with --quiet).
    CHECK(r.err.find("6 of 6 validation tiles") != std::string::npos);
    CHECK(r.err.find("100.0 % of their pixels are training pixels") != std::string::npos);
    CHECK(exists(out + ".log.jsonl"));

    // Continue where it stopped.
    args = tiny_args(tiles, out, 3);
    args.insert(args.end(), {"--resume", "--save-last", last});
    r = run_tool("cd-train-teacher", args);
    INFO(r.err);
    REQUIRE(r.rc == 0);
    j = nlohmann::json::parse(r.out);
    CHECK(j["complete"] == true);
    CHECK(j["epochs_completed"] == 3);
    CHECK_FALSE(exists(out + ".ckpt"));

    const auto bundle = cdk::nn::load_bundle(out);
    const auto& h = bundle.header;
    CHECK(bundle.model->options().arch == "fc-siam-diff");
    CHECK(bundle.model->options().in_bands == 3);
    CHECK(h["bands"].size() == 3);
    CHECK(h["data_type"] == "Byte");
    CHECK(h["tile_size"] == 32);
    CHECK(h["normalization"]["std"].size() == 3);
    CHECK(h["training"]["complete"] == true);
    CHECK(h["training"]["resumed_after_epochs"] == nlohmann::json{1});
    CHECK(h["training"]["train"]["tiles"] == j["train_tiles"]);
    CHECK(h["training"]["val_overlap"]["tiles"] == 6);
    // The last epoch's bundle: a complete, loadable bundle of epoch 3 with that epoch's
    // validation scores (the best bundle's are those of its own epoch).
    const auto last_bundle = cdk::nn::load_bundle(last);
    CHECK(last_bundle.header["metrics"]["epoch"] == 3);
    CHECK(last_bundle.header["training"]["complete"] == true);
    CHECK(last_bundle.header["training"]["epochs_completed"] == 3);
    std::vector<std::string> log_lines;
    std::ifstream log_file(out + ".log.jsonl");
    for (std::string line; std::getline(log_file, line);) log_lines.push_back(line);
    REQUIRE(log_lines.size() == 3);
    CHECK(last_bundle.header["metrics"]["change"]["f1"] ==
          nlohmann::json::parse(log_lines[2])["val"]["change"]["f1"]);
    CHECK(h["metrics"]["epoch"] == h["training"]["best_epoch"]);
    CHECK(h["training"]["val_overlap"]["pixel_fraction"] == 1.0);
    CHECK(h["training"]["augment"]["swap_dates"] == true);  // the default
    CHECK(h["training"]["augment"]["flips"] == true);
    CHECK(h["metrics"]["change"].contains("f1"));
    // The validation-chosen threshold: a grid value whose F1 is at least argmax's.
    const auto& bt = h["metrics"]["best_threshold"];
    REQUIRE(bt.is_object());
    const double t = bt["threshold"].get<double>();
    CHECK(t >= 0.05);
    CHECK(t <= 0.95);
    CHECK(std::abs(t * 20 - std::round(t * 20)) < 1e-9);
    CHECK(bt["f1"].get<double>() >= h["metrics"]["change"]["f1"].get<double>() - 1e-12);
    auto logits = bundle.model->forward(torch::zeros({1, 3, 32, 32}), torch::zeros({1, 3, 32, 32})).logits;
    CHECK(logits.sizes() == torch::IntArrayRef({1, 2, 32, 32}));

    // Stopped inside its first epoch there is no checkpoint yet: --resume starts again
    // (rather than taking the one-step bundle for a finished run).
    const std::string early = tmp / "early.cdm";
    args = tiny_args(tiles, early, 2);
    args.insert(args.end(), {"--max-steps", "1"});
    r = run_tool("cd-train-teacher", args);
    INFO(r.err);
    REQUIRE(r.rc == 0);
    j = nlohmann::json::parse(r.out);
    CHECK(j["complete"] == false);
    CHECK(j["checkpoint"].is_null());
    CHECK_FALSE(exists(early + ".ckpt"));
    args = tiny_args(tiles, early, 2);
    args.insert(args.end(), {"--resume"});
    r = run_tool("cd-train-teacher", args);
    INFO(r.err);
    REQUIRE(r.rc == 0);
    j = nlohmann::json::parse(r.out);
    CHECK_FALSE(j.contains("skipped"));
    CHECK(j["complete"] == true);
    CHECK(j["epochs_completed"] == 2);

    // An existing output is refused without --overwrite, and left as it was.
    const auto before = std::filesystem::last_write_time(out);
    r = run_tool("cd-train-teacher", tiny_args(tiles, out));
    check_one_error_line(r, out);
    CHECK(std::filesystem::last_write_time(out) == before);
}

TEST_CASE("cd-train-teacher --no-date-swap, --model-option and --ema", "[cli][train]") {
    TempDir tmp;
    const auto tiles = synthetic_tiles(tmp);
    const std::string out = tmp / "m.cdm";
    // Validation on the same tiles filed under another scene: no pixel is shared, no warning.
    const std::string other = std::filesystem::path(tiles).parent_path() / "other_scene.csv";
    {
        auto t = cdk::read_csv(tiles);
        const int scene = t.require_column("scene", tiles);
        std::ofstream f(other);
        f << cdk::csv_line(t.header) << '\n';
        for (auto& row : t.rows) {
            row[scene] = "elsewhere";
            f << cdk::csv_line(row) << '\n';
        }
    }
    auto args = tiny_args(tiles, out, 1);
    args[3] = other;  // --val
    args.insert(args.end(), {"--no-date-swap", "--model-option", "shared_dropout=true", "--ema", "0.99"});
    auto r = run_tool("cd-train-teacher", args);
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(r.err.find("overlap training tiles") == std::string::npos);
    const auto bundle = cdk::nn::load_bundle(out);
    const auto& augment = bundle.header["training"]["augment"];
    CHECK(augment["swap_dates"] == false);
    CHECK(augment["flips"] == true);
    CHECK(augment["rot90"] == true);
    CHECK(bundle.model->options().extra == nlohmann::json{{"shared_dropout", true}});
    CHECK(bundle.header["training"]["ema"] == 0.99);
    CHECK(bundle.header["training"]["val_overlap"]["tiles"] == 0);
    CHECK(bundle.header["training"]["val_overlap"]["val_tiles"] == 6);
    // The log scores both the average (val) and the latest weights (val_live).
    std::ifstream log(out + ".log.jsonl");
    std::string first;
    REQUIRE(std::getline(log, first));
    const auto line = nlohmann::json::parse(first);
    CHECK(line["val"]["change"].contains("f1"));
    CHECK(line["val_live"]["change"].contains("f1"));
}

TEST_CASE("cd-train-teacher rejects bad inputs with one line", "[cli][train]") {
    TempDir tmp;
    const auto tiles = synthetic_tiles(tmp);
    const std::string out = tmp / "m.cdm";

    auto r = run_tool("cd-train-teacher", tiny_args(tmp / "missing.csv", out));
    check_one_error_line(r, "missing.csv");
    CHECK_FALSE(exists(out));

    auto args = tiny_args(tiles, out);
    args[5] = "no-such-net";
    r = run_tool("cd-train-teacher", args);
    check_one_error_line(r, "no-such-net");
    CHECK(r.err.find("fc-siam-diff") != std::string::npos);  // lists the known ones
    CHECK_FALSE(exists(out));

    // A bundle of 3 bands cannot start a 4-band training.
    args = tiny_args(tiles, out, 1);
    REQUIRE(run_tool("cd-train-teacher", args).rc == 0);
    const auto four = synthetic_tiles(tmp, 4, "four");
    args = tiny_args(four, tmp / "four.cdm");
    args.insert(args.end(), {"--init", out});
    r = run_tool("cd-train-teacher", args);
    check_one_error_line(r, out);
    CHECK(r.err.find("four/tiles.csv") != std::string::npos);
    CHECK_FALSE(exists(tmp / "four.cdm"));
    CHECK_FALSE(exists(tmp / "four.cdm.log.jsonl"));

    // Model options: an unknown key names itself and the known ones, a malformed one itself.
    args = tiny_args(tiles, tmp / "y.cdm");
    args.insert(args.end(), {"--model-option", "depth=5"});
    r = run_tool("cd-train-teacher", args);
    check_one_error_line(r, "'depth'");
    CHECK(r.err.find("shared_dropout") != std::string::npos);
    CHECK_FALSE(exists(tmp / "y.cdm"));
    args = tiny_args(tiles, tmp / "y.cdm");
    args.insert(args.end(), {"--model-option", "shared_dropout"});
    r = run_tool("cd-train-teacher", args);
    check_one_error_line(r, "'shared_dropout' is not KEY=VALUE");
    CHECK_FALSE(exists(tmp / "y.cdm"));

    // Usage errors are CLI11's.
    r = run_tool("cd-train-teacher", {"--train", tiles, "--arch", "fc-ef"});
    CHECK(r.rc != 0);
    CHECK(r.rc != 1);
    args = tiny_args(tiles, tmp / "x.cdm");
    args.insert(args.end(), {"--optimizer", "lamb"});
    r = run_tool("cd-train-teacher", args);
    CHECK(r.rc != 0);
    CHECK_FALSE(exists(tmp / "x.cdm"));
    args = tiny_args(tiles, tmp / "x.cdm");
    args.insert(args.end(), {"--ema", "1"});
    r = run_tool("cd-train-teacher", args);
    CHECK(r.rc != 0);
    CHECK(r.err.find("--ema") != std::string::npos);
    CHECK_FALSE(exists(tmp / "x.cdm"));

    // --save-last may not be the output itself, nor replace a file without --overwrite, and
    // its folder must exist: all before any training. {--save-last value, culprit named}
    const std::vector<std::pair<std::string, std::string>> bad_last = {
        {tmp / "x.cdm", "--save-last"}, {out, out}, {tmp / "no-dir/last.cdm", "no-dir"}};
    for (const auto& [last, culprit] : bad_last) {
        args = tiny_args(tiles, tmp / "x.cdm");
        args.insert(args.end(), {"--save-last", last});
        check_one_error_line(run_tool("cd-train-teacher", args), culprit);
        CHECK_FALSE(exists(tmp / "x.cdm"));
    }
}
