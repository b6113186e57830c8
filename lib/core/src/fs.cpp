#include "cdk/core/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "cdk/core/error.hpp"

namespace fs = std::filesystem;

namespace cdk {

namespace {

std::string host_name() {
    char host[256] = "";
    if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) return "host";
    std::string h(host);
    for (char& c : h)
        if (c == '/' || c == '-') c = '_';  // '-' separates the fields of a temporary's name
    return h;
}

const std::string& this_host() {
    static const std::string h = host_name();
    return h;
}

// ".NAME.part-HOST-PID-COUNTER-RANDOM": the host and process that write it, so a later run
// can tell a temporary whose writer died (kill -9, power loss) from one being written.
std::string temp_name_for(const fs::path& final_path) {
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    auto name = "." + final_path.filename().string() + ".part-" + this_host() + "-" +
                std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
                std::to_string(rd() % 100000);
    return (final_path.parent_path() / name).string();
}

// Whether process `pid` of this host may still be writing. A zombie counts as dead: a
// process killed with SIGKILL keeps its pid until its parent reaps it, and in a container
// whose init does not reap orphans it keeps it for ever (kill(pid, 0) still succeeds).
bool writer_alive(pid_t pid) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (std::getline(stat, line)) {
        const auto close = line.rfind(')');  // "pid (name) S ...": the name may hold spaces
        if (close != std::string::npos && close + 2 < line.size()) {
            const char state = line[close + 2];
            if (state == 'Z' || state == 'X') return false;
        }
    }
    return true;  // alive, or not ours to judge (EPERM)
}

// Temporaries that a dead process of this host left in `folder`, by the output name they
// were for. Each folder is listed once per process (a tile folder holds thousands of files).
// Another host's temporaries are never touched: on a shared file system (a Slurm cluster)
// their writer may be running.
std::vector<std::pair<std::string, fs::path>> stale_parts_in(const fs::path& folder) {
    std::vector<std::pair<std::string, fs::path>> stale;
    std::error_code ec;
    const std::string mark = ".part-" + this_host() + "-";
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string f = it->path().filename().string();
        const size_t at = f.rfind(mark);
        if (f.empty() || f[0] != '.' || at == std::string::npos || at < 1) continue;
        const long pid = std::strtol(f.c_str() + at + mark.size(), nullptr, 10);
        if (pid <= 0 || pid == ::getpid()) continue;
        if (writer_alive(pid_t(pid))) continue;
        stale.emplace_back(f.substr(1, at - 1), it->path());
    }
    return stale;
}

// Remove what a dead writer left of output `final_path` (its own temporaries only).
void remove_stale_parts(const fs::path& final_path) {
    static std::mutex mu;
    static std::map<std::string, std::vector<std::pair<std::string, fs::path>>> listed;
    const fs::path folder = final_path.parent_path().empty() ? fs::path(".") : final_path.parent_path();
    std::lock_guard<std::mutex> lock(mu);
    std::error_code ec;
    const std::string key = fs::absolute(folder, ec).lexically_normal().string();
    auto it = listed.find(key);
    if (it == listed.end()) it = listed.emplace(key, stale_parts_in(folder)).first;
    const std::string name = final_path.filename().string();
    for (auto& [output, path] : it->second)
        if (output == name && !path.empty()) {
            fs::remove_all(path, ec);
            path.clear();
        }
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
    remove_stale_parts(p);
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

fs::path resolved_path(const std::string& p) {
    std::error_code ec;
    fs::path abs = fs::absolute(p, ec);
    if (ec) abs = fs::path(p);
    fs::path c = fs::weakly_canonical(abs, ec);
    return ec ? abs.lexically_normal() : c;
}

namespace {

// Whether the resolved path x is the resolved folder f or lies inside it.
bool lies_in_resolved(const fs::path& f, const fs::path& x) {
    auto fi = f.begin(), xi = x.begin();
    for (; fi != f.end() && xi != x.end(); ++fi, ++xi) {
        if (fi->empty()) break;  // a trailing separator
        if (*fi != *xi) return false;
    }
    return fi == f.end() || fi->empty();
}

// A resolved path without a trailing separator ("/a/b/" -> "/a/b"): one spelling per folder.
fs::path resolved_key(const std::string& path) {
    fs::path p = resolved_path(path);
    if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
    return p;
}

bool checked(const std::string& path) { return !path.empty() && path.rfind("/vsi", 0) != 0; }

[[noreturn]] void refuse(const std::string& output, const char* relation, const NamedInput& in) {
    throw ConfigError("output " + quote(output) + " " + relation + " the input " + in.option + " " + quote(in.path) +
                      ": choose another output (inputs are never replaced)");
}

}  // namespace

void check_not_input(const std::string& output, const std::vector<NamedInput>& inputs) {
    check_not_inputs({output}, inputs);
}

void check_not_inputs(const std::vector<std::string>& outputs, const std::vector<NamedInput>& inputs) {
    // Every path is resolved once and the inputs sorted: (outputs + inputs) log inputs, not
    // outputs x inputs (cd-infer --pairs over an archive of band files, cd-partition's tiles).
    struct Resolved {
        fs::path real;
        std::size_t index;  // in `inputs`: the first listed is the one named
    };
    std::vector<Resolved> by_path;
    for (std::size_t i = 0; i < inputs.size(); ++i)
        if (checked(inputs[i].path)) by_path.push_back({resolved_key(inputs[i].path), i});
    if (by_path.empty()) return;
    // Stable: one path listed twice keeps its listed order, so the first listed is found first.
    std::stable_sort(by_path.begin(), by_path.end(), [](const Resolved& a, const Resolved& b) { return a.real < b.real; });
    // Files by device and inode, for another name of one file (a hard link); made when an
    // output exists.
    std::map<std::pair<dev_t, ino_t>, std::size_t> by_inode;
    bool inodes_made = false;
    for (const auto& output : outputs) {
        if (!checked(output)) continue;
        const fs::path out_real = resolved_key(output);
        // The paths that lie in out_real (out_real itself first) are one run of the sorted list.
        auto it = std::lower_bound(by_path.begin(), by_path.end(), out_real,
                                   [](const Resolved& r, const fs::path& p) { return r.real < p; });
        std::size_t same = inputs.size();  // the first listed input that is the output
        if (it != by_path.end() && it->real == out_real) same = it->index;
        struct stat st {};
        if (::stat(output.c_str(), &st) == 0) {
            if (!inodes_made) {
                for (const auto& r : by_path) {
                    struct stat si {};
                    if (::stat(inputs[r.index].path.c_str(), &si) != 0) continue;
                    auto [f, fresh] = by_inode.emplace(std::pair{si.st_dev, si.st_ino}, r.index);
                    if (!fresh) f->second = std::min(f->second, r.index);
                }
                inodes_made = true;
            }
            if (auto f = by_inode.find({st.st_dev, st.st_ino}); f != by_inode.end()) same = std::min(same, f->second);
        }
        std::size_t held = inputs.size();  // the first listed input that lies in the output
        for (; it != by_path.end() && lies_in_resolved(out_real, it->real); ++it) held = std::min(held, it->index);
        // The first listed input of either kind is named, "is" before "holds" for one input.
        if (same < inputs.size() && same <= held) refuse(output, "is", inputs[same]);
        if (held < inputs.size()) refuse(output, "holds", inputs[held]);
    }
}

void check_output_folder(const std::string& path) {
    fs::path p(path);
    if (p.filename().empty()) p = p.parent_path();
    const fs::path parent = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    std::error_code ec;
    if (!fs::is_directory(parent, ec))
        throw IoError("output folder " + quote(parent.string()) + " does not exist (for " + quote(path) + ")");
    if (::access(parent.c_str(), W_OK | X_OK) != 0)
        throw IoError("output folder " + quote(parent.string()) + " is not writable (for " + quote(path) + "): " +
                      std::strerror(errno));
}

void write_file(const std::string& path, const std::string& bytes, const std::string& what,
                const std::string& name) {
    auto fail = [&](int err) {
        return IoError("cannot write " + what + (what.empty() ? "" : " ") + quote(name) + ": " +
                       std::strerror(err));
    };
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw fail(errno);
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = n < 0 ? errno : ENOSPC;
            ::close(fd);
            throw fail(err);
        }
        done += size_t(n);
    }
    if (::close(fd) != 0) throw fail(errno);  // NFS and friends report a full disk here
}

void write_text_file(const std::string& path, const std::string& text, bool overwrite) {
    AtomicPath out(path, overwrite);
    write_file(out.temp(), text, "", path);
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

std::string to_lower(std::string text) {
    for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

bool parse_number(const std::string& text, double& v) {
    const char* first = text.data();
    const char* last = first + text.size();
    if (first != last && *first == '+') ++first;
    auto [p, ec] = std::from_chars(first, last, v);
    return ec == std::errc() && p == last && first != last;
}

}  // namespace cdk
