#include "cdk/core/fs.hpp"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "cdk/core/error.hpp"

namespace fs = std::filesystem;

namespace cdk {

namespace {
std::string temp_name_for(const fs::path& final_path) {
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    auto name = "." + final_path.filename().string() + ".part-" + std::to_string(::getpid()) +
                "-" + std::to_string(counter++) + "-" + std::to_string(rd() % 100000);
    return (final_path.parent_path() / name).string();
}
}  // namespace

AtomicPath::AtomicPath(std::string final_path, bool overwrite)
    : final_(std::move(final_path)), overwrite_(overwrite) {
    fs::path p(final_);
    if (p.filename().empty()) p = p.parent_path();  // "out/" -> "out"
    final_ = p.string();
    fs::path parent = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    std::error_code ec;
    if (!fs::is_directory(parent, ec))
        throw IoError("output folder " + quote(parent.string()) + " does not exist (for " +
                      quote(final_) + ")");
    if (fs::exists(p, ec) && !overwrite_)
        throw ConfigError("output " + quote(final_) + " exists (use --overwrite to replace it)");
    if (p.parent_path().empty()) p = fs::path(".") / p;
    temp_ = temp_name_for(p);
}

AtomicPath::~AtomicPath() {
    if (committed_) return;
    std::error_code ec;
    fs::remove_all(temp_, ec);
}

void AtomicPath::commit() {
    std::error_code ec;
    if (!fs::exists(temp_, ec)) throw IoError("nothing was written for " + quote(final_));
    if (fs::exists(final_, ec)) {
        if (!overwrite_)
            throw ConfigError("output " + quote(final_) +
                              " appeared while this run was writing it (use --overwrite)");
        if (fs::is_directory(final_, ec) && !fs::is_symlink(final_, ec)) {
            // A folder cannot be replaced by rename(2): move the old one aside first.
            std::string old = temp_name_for(fs::path(final_)) + ".old";
            fs::rename(final_, old, ec);
            if (ec) throw IoError("cannot replace " + quote(final_) + ": " + ec.message());
            fs::rename(temp_, final_, ec);
            if (ec) {
                std::error_code ec2;
                fs::rename(old, final_, ec2);
                throw IoError("cannot rename " + quote(temp_) + " to " + quote(final_) + ": " +
                              ec.message());
            }
            fs::remove_all(old, ec);
            committed_ = true;
            return;
        }
    }
    fs::rename(temp_, final_, ec);
    if (ec)
        throw IoError("cannot rename " + quote(temp_) + " to " + quote(final_) + ": " +
                      ec.message());
    committed_ = true;
}

void write_text_file(const std::string& path, const std::string& text, bool overwrite) {
    AtomicPath out(path, overwrite);
    {
        std::ofstream f(out.temp(), std::ios::binary);
        if (!f) throw IoError("cannot create " + quote(out.temp()));
        f << text;
        f.flush();
        if (!f) throw IoError("cannot write " + quote(path));
    }
    out.commit();
}

std::string relative_path(const std::string& path, const std::string& base) {
    std::error_code ec;
    auto rel = fs::relative(fs::absolute(path), fs::absolute(base), ec);
    if (ec || rel.empty()) return fs::absolute(path).generic_string();
    return rel.generic_string();
}

std::string resolve_path(const std::string& path, const std::string& base) {
    if (path.empty()) return path;
    fs::path p(path);
    if (p.is_absolute() || path.rfind("/vsi", 0) == 0) return path;
    return (fs::path(base) / p).lexically_normal().string();
}

std::string format_number(double v) {
    char buf[64];
    for (int prec = 6; prec <= 17; ++prec) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    return buf;
}

std::string trim(const std::string& text) {
    const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
    size_t b = 0, e = text.size();
    while (b < e && space(text[b])) ++b;
    while (e > b && space(text[e - 1])) --e;
    return text.substr(b, e - b);
}

bool parse_number(const std::string& text, double& v) {
    const char* first = text.data();
    const char* last = first + text.size();
    if (first != last && *first == '+') ++first;
    auto [p, ec] = std::from_chars(first, last, v);
    return ec == std::errc() && p == last && first != last;
}

}  // namespace cdk
