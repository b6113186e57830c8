#pragma once
// Checks shared by the program (CLI) tests.

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "support/support.hpp"

namespace cdk::test {

/// A run that failed as every cdkit program must: exit 1, nothing on stdout, exactly one
/// line on stderr, starting with "ERROR: " and naming every culprit.
inline void check_one_error_line(const CommandResult& r, const std::vector<std::string>& culprits) {
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

}  // namespace cdk::test
