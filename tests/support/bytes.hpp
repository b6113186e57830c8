#pragma once
// Whole files as bytes, and a model bundle's header rewritten in place: shared by the
// bundle unit tests and the program tests (header-only: cdk_nn_tests links no support).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

namespace cdk::test {

/// A whole file's bytes ("" when it cannot be read).
inline std::string read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

/// Replace a file's bytes.
inline void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Rewrite a bundle's header as documented in docs/formats.md (magic, LE length, JSON,
/// weights). The checksum goes (an edited header no longer matches it): the bundle reads
/// as one from before checksums, so that a test gets the error it looks for.
inline void edit_header(const std::string& path, const std::function<void(nlohmann::json&)>& edit) {
    const std::string bytes = read_all(path);
    uint64_t len = 0;
    for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(bytes[8 + size_t(i)]);
    auto header = nlohmann::json::parse(bytes.substr(16, len));
    header.erase("checksum");
    edit(header);
    const std::string text = header.dump();
    std::string out = bytes.substr(0, 8);
    for (size_t i = 0; i < 8; ++i) out += static_cast<char>((uint64_t(text.size()) >> (8 * i)) & 0xff);
    out += text + bytes.substr(16 + len);
    write_all(path, out);
}

}  // namespace cdk::test
