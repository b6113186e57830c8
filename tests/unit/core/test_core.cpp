#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "cdk/core/context.hpp"
#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
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

TEST_CASE("format_number reads back exactly", "[core]") {
    for (double v : {0.0, 0.05, 0.2, 1.0 / 3.0, 1e-12, 12345.678})
        CHECK(std::strtod(cdk::format_number(v).c_str(), nullptr) == v);
    CHECK(cdk::format_number(0.05) == "0.05");
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
