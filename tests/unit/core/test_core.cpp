#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "cdk/core/context.hpp"
#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/shard.hpp"
#include "support/support.hpp"

using cdk::test::TempDir;

TEST_CASE("CSV round trip with quoting", "[core]") {
    TempDir tmp;
    const std::string p = tmp / "t.csv";
    {
        std::ofstream f(p);
        f << "a,b,c\n" << cdk::csv_line({"1", "x,y", "say \"hi\""}) << "\r\n\n" << "2,,z\n";
    }
    auto t = cdk::read_csv(p);
    REQUIRE(t.header == std::vector<std::string>{"a", "b", "c"});
    REQUIRE(t.rows.size() == 2);
    CHECK(t.rows[0][1] == "x,y");
    CHECK(t.rows[0][2] == "say \"hi\"");
    CHECK(t.rows[1][1].empty());
    CHECK(t.column("c") == 2);
    CHECK(t.column("d") == -1);
    CHECK_THROWS_WITH(t.require_column("d", p), Catch::Contains("no column 'd'"));
}

TEST_CASE("CSV with a ragged row names the row", "[core]") {
    TempDir tmp;
    std::ofstream(tmp / "bad.csv") << "a,b\n1,2\n3\n";
    CHECK_THROWS_WITH(cdk::read_csv(tmp / "bad.csv"), Catch::Contains("row 3"));
    CHECK_THROWS_AS(cdk::read_csv(tmp / "missing.csv"), cdk::IoError);
}

TEST_CASE("AtomicPath: nothing at the final name until commit, temp removed on failure", "[core]") {
    TempDir tmp;
    const std::string final_path = tmp / "out.txt";
    {
        cdk::AtomicPath a(final_path, false);
        std::ofstream(a.temp()) << "partial";
        CHECK_FALSE(cdk::test::exists(final_path));
    }  // destroyed without commit
    CHECK(cdk::test::list_dir(tmp.path()).empty());
    {
        cdk::AtomicPath a(final_path, false);
        std::ofstream(a.temp()) << "done";
        a.commit();
    }
    CHECK(cdk::test::exists(final_path));
    CHECK_THROWS_AS(cdk::AtomicPath(final_path, false), cdk::ConfigError);
    CHECK_THROWS_WITH(cdk::AtomicPath(tmp / "nope/x.txt", false), Catch::Contains("does not exist"));
    // Replacing a folder.
    std::filesystem::create_directory(tmp / "dir");
    std::ofstream(tmp / "dir/old") << "old";
    {
        cdk::AtomicPath a(tmp / "dir", true);
        std::filesystem::create_directory(a.temp());
        std::ofstream(a.temp() + "/new") << "new";
        a.commit();
    }
    CHECK(cdk::test::list_dir(tmp / "dir") == std::vector<std::string>{"new"});
    CHECK(cdk::test::list_dir(tmp.path()).size() == 2);  // dir and out.txt, no leftovers
}

TEST_CASE("check_not_input: one file under any name, and a folder holding an input", "[core]") {
    namespace fs = std::filesystem;
    TempDir tmp;
    const std::string in = tmp / "in.tif";
    std::ofstream(in) << "input";
    fs::create_directory(tmp / "dir");
    fs::create_hard_link(in, tmp / "hard.tif");
    fs::create_symlink(in, tmp / "soft.tif");
    const auto check = [&](const std::string& out, const std::vector<cdk::NamedInput>& ins) {
        cdk::check_not_input(out, ins);
    };
    // The same file: by its path, "./"-style detours, a symbolic link, a hard link.
    for (const std::string& out : {in, tmp / "dir/../in.tif", tmp / "soft.tif", tmp / "hard.tif"})
        CHECK_THROWS_WITH(check(out, {{"--pre", in}}),
                          Catch::StartsWith("output '" + out + "' is the input --pre '" + in + "'"));
    // A folder output that holds an input, however deep, and among many inputs.
    std::vector<cdk::NamedInput> many;
    for (int i = 0; i < 50; ++i) many.push_back({"tile file", tmp / ("other/t" + std::to_string(i) + ".tif")});
    many.push_back({"tile file", tmp / "dir/a/b.tif"});
    CHECK_THROWS_WITH(check(tmp / "dir", many), Catch::Contains("holds the input tile file"));
    CHECK_THROWS_WITH(check(tmp.path(), {{"--pre", in}}), Catch::Contains("holds the input --pre"));
    // Not the input, not holding it: a sibling, a folder whose name only starts alike, /vsi paths.
    CHECK_NOTHROW(check(tmp / "out.tif", {{"--pre", in}}));
    CHECK_NOTHROW(check(tmp / "di", {{"tile file", tmp / "dir/a/b.tif"}}));
    CHECK_NOTHROW(check(tmp / "dir", {{"tile file", tmp / "dir2/b.tif"}}));
    CHECK_NOTHROW(check("/vsimem/x.tif", {{"--pre", "/vsimem/x.tif"}}));
    // Many outputs at once: the one that is an input is named, with the first input listed
    // for that file; a folder written with a trailing separator holds what lies in it.
    const std::vector<cdk::NamedInput> two = {{"--post", tmp / "other.tif"}, {"--pre", in}, {"--label", in}};
    CHECK_NOTHROW(cdk::check_not_inputs({tmp / "a.tif", tmp / "b.tif"}, two));
    CHECK_THROWS_WITH(cdk::check_not_inputs({tmp / "a.tif", tmp / "hard.tif", tmp / "b.tif"}, two),
                      Catch::StartsWith("output '" + tmp / "hard.tif" + "' is the input --pre '" + in + "'"));
    CHECK_THROWS_WITH(cdk::check_not_inputs({tmp / "a.tif", tmp / "dir/"}, many),
                      Catch::StartsWith("output '" + tmp / "dir/" + "' holds the input tile file"));
    CHECK_NOTHROW(cdk::check_not_inputs({}, many));
    // The first listed input is named, whether the output is it or holds it.
    CHECK_THROWS_WITH(check(tmp / "dir", {{"--tiles", tmp / "dir/t.csv"}, {"--tiles folder", tmp / "dir"}}),
                      Catch::Contains("holds the input --tiles '"));
    CHECK_THROWS_WITH(check(tmp / "dir", {{"--tiles folder", tmp / "dir"}, {"--tiles", tmp / "dir/t.csv"}}),
                      Catch::Contains("is the input --tiles folder"));
    // The first listed of two names of one file is named, whichever sorts first.
    CHECK_THROWS_WITH(cdk::check_not_inputs({in}, {{"--post", in}, {"--pre", tmp / "hard.tif"}}),
                      Catch::Contains("is the input --post"));
    CHECK_THROWS_WITH(cdk::check_not_inputs({in}, {{"--pre", tmp / "hard.tif"}, {"--post", in}}),
                      Catch::Contains("is the input --pre"));
}

TEST_CASE("format_number reads back exactly", "[core]") {
    for (double v : {0.0, 0.05, 0.2, 1.0 / 3.0, 1e-12, 12345.678})
        CHECK(std::strtod(cdk::format_number(v).c_str(), nullptr) == v);
    CHECK(cdk::format_number(0.05) == "0.05");
}

TEST_CASE("trim drops surrounding whitespace only", "[core]") {
    CHECK(cdk::trim("  0.25\t\r\n") == "0.25");
    CHECK(cdk::trim("a b") == "a b");
    CHECK(cdk::trim(" \t ").empty());
    CHECK(cdk::trim("").empty());
}

TEST_CASE("RunContext scales progress and reports cancellation", "[core]") {
    std::vector<double> seen;
    bool keep = true;
    cdk::RunContext ctx({}, [&](double d, const std::string&) {
        seen.push_back(d);
        return keep;
    });
    ctx.scaled(0.5, 1.0).progress(0.5);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0] == Approx(0.75));
    keep = false;
    CHECK_THROWS_AS(ctx.progress(0.9), cdk::Cancelled);
}

TEST_CASE("shards: I/N, Slurm job arrays, round-robin ownership", "[core]") {
    const auto s = cdk::parse_shard("1/3");
    CHECK(s.index == 1);
    CHECK(s.count == 3);
    CHECK(s.text() == "1/3");
    CHECK_FALSE(s.holds(0));
    CHECK(s.holds(1));
    CHECK(s.holds(4));
    for (const char* bad : {"3/3", "-1/3", "1", "a/b", "1/0", "", "1/3/4"})
        CHECK_THROWS_WITH(cdk::parse_shard(bad), Catch::Contains("must be I/N"));

    // Every job belongs to exactly one shard.
    for (size_t job = 0; job < 10; ++job) {
        int owners = 0;
        for (int i = 0; i < 4; ++i) owners += cdk::Shard{i, 4}.holds(job);
        CHECK(owners == 1);
    }

    std::map<std::string, std::string> env;
    auto getenv = [&](const char* name) -> const char* {
        auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
    };
    CHECK(cdk::resolve_shard("", getenv).count == 1);  // no Slurm: everything
    env = {{"SLURM_ARRAY_TASK_ID", "5"}, {"SLURM_ARRAY_TASK_COUNT", "4"}, {"SLURM_ARRAY_TASK_MIN", "3"}};
    CHECK(cdk::resolve_shard("", getenv).text() == "2/4");  // --array=3-6
    CHECK(cdk::resolve_shard("0/2", getenv).text() == "0/2");  // the flag wins
    env["SLURM_ARRAY_TASK_ID"] = "9";
    CHECK_THROWS_WITH(cdk::resolve_shard("", getenv), Catch::Contains("--shard"));
}
