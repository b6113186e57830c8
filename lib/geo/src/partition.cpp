#include "cdk/geo/partition.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <unordered_set>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/version.hpp"

namespace fs = std::filesystem;

namespace cdk::geo {

namespace {

constexpr int kHistogramBins = 20;

std::string join_numbers(const std::vector<double>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + format_number(v[i]);
    return s;
}

// splitmix64: decorrelates the per-partition streams drawn from one user seed.
std::uint64_t mix(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

// Uniform in [0, bound) without modulo bias; std::uniform_int_distribution's algorithm is
// implementation-defined, this one is not.
std::uint64_t draw_below(std::mt19937_64& g, std::uint64_t bound) {
    const std::uint64_t reject_below = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
        const std::uint64_t r = g();
        if (r >= reject_below) return r % bound;
    }
}

// Validation tiles of a partition of n tiles: round(f * n), at least one when there are
// two or more tiles, and never all of them (a teacher needs training tiles).
std::size_t val_count(std::size_t n, double f) {
    if (n < 2 || f <= 0) return 0;
    const auto v = static_cast<std::size_t>(std::llround(f * static_cast<double>(n)));
    return std::clamp<std::size_t>(v, 1, n - 1);
}

bool is_rewritable(const std::string& cell) {
    return !cell.empty() && !fs::path(cell).is_absolute() && cell.rfind("/vsi", 0) != 0;
}

std::string range_text(double lo, double hi, bool first) {
    return std::string(first ? "[" : "(") + format_number(lo) + ", " + format_number(hi) + "]";
}

std::string fixed(double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

std::string pad(std::string s, size_t width, bool right = false) {
    if (s.size() >= width) return s;
    return right ? std::string(width - s.size(), ' ') + s : s + std::string(width - s.size(), ' ');
}

void write_csv(const std::string& path, const std::string& shown_name,
               const std::vector<std::string>& header,
               const std::vector<std::vector<std::string>>& rows,
               const std::vector<std::size_t>& which) {
    std::ofstream f(path, std::ios::binary);
    if (!f) throw IoError("cannot create " + quote(shown_name));
    f << csv_line(header) << '\n';
    for (auto i : which) f << csv_line(rows[i]) << '\n';
    f.close();
    if (!f) throw IoError("cannot write " + quote(shown_name));
}

struct Rect {
    double x0, y0, x1, y1;
};

// Area of the union of a few rectangles, by coordinate compression.
double union_area(const std::vector<Rect>& rects) {
    std::vector<double> xs, ys;
    for (const auto& r : rects) {
        xs.insert(xs.end(), {r.x0, r.x1});
        ys.insert(ys.end(), {r.y0, r.y1});
    }
    for (auto* v : {&xs, &ys}) {
        std::sort(v->begin(), v->end());
        v->erase(std::unique(v->begin(), v->end()), v->end());
    }
    double area = 0;
    for (std::size_t i = 0; i + 1 < xs.size(); ++i)
        for (std::size_t j = 0; j + 1 < ys.size(); ++j) {
            const double cx = (xs[i] + xs[i + 1]) / 2, cy = (ys[j] + ys[j + 1]) / 2;
            for (const auto& r : rects)
                if (cx > r.x0 && cx < r.x1 && cy > r.y0 && cy < r.y1) {
                    area += (xs[i + 1] - xs[i]) * (ys[j + 1] - ys[j]);
                    break;
                }
        }
    return area;
}

// Each row's rectangle in its scene's pixel grid (scene, x, y, width, height); false when a
// column is missing, a value is not a number or a size is not positive.
bool tile_rects(const CsvTable& t, std::vector<Rect>& rect, std::vector<std::string>& scene) {
    const int c_scene = t.column("scene");
    const int c_num[4] = {t.column("x"), t.column("y"), t.column("width"), t.column("height")};
    if (c_scene < 0 || std::find(std::begin(c_num), std::end(c_num), -1) != std::end(c_num))
        return false;
    rect.resize(t.rows.size());
    scene.resize(t.rows.size());
    for (std::size_t i = 0; i < t.rows.size(); ++i) {
        double v[4];
        for (int k = 0; k < 4; ++k)
            if (!parse_number(trim(t.rows[i][c_num[k]]), v[k])) return false;
        if (!(v[2] > 0 && v[3] > 0)) return false;
        rect[i] = {v[0], v[1], v[0] + v[2], v[1] + v[3]};
        scene[i] = t.rows[i][c_scene];
    }
    return true;
}

// Tiles of a scene sorted by left edge, to find those meeting a rectangle without a scan.
struct SceneIndex {
    std::vector<std::size_t> by_x;
    double widest = 0;
};

std::map<std::string, SceneIndex> index_by_scene(const std::vector<Rect>& rect,
                                                 const std::vector<std::string>& scene,
                                                 const std::vector<std::size_t>& rows) {
    std::map<std::string, SceneIndex> index;
    for (std::size_t i : rows) {
        auto& s = index[scene[i]];
        s.by_x.push_back(i);
        s.widest = std::max(s.widest, rect[i].x1 - rect[i].x0);
    }
    for (auto& [name, s] : index)
        std::sort(s.by_x.begin(), s.by_x.end(),
                  [&](std::size_t a, std::size_t b) { return rect[a].x0 < rect[b].x0; });
    return index;
}

// The parts of the indexed tiles of `name` that overlap `t` (positive area), each clipped
// to `t`; stops after the first when `first_only`.
std::vector<Rect> overlaps(const std::map<std::string, SceneIndex>& index, const std::string& name,
                           const std::vector<Rect>& rect, const Rect& t, bool first_only = false) {
    std::vector<Rect> clipped;
    const auto it = index.find(name);
    if (it == index.end()) return clipped;
    const auto& s = it->second;
    // Only tiles whose left edge lies in (t.x0 - widest, t.x1) can meet t.
    auto j = std::partition_point(s.by_x.begin(), s.by_x.end(),
                                  [&](std::size_t k) { return rect[k].x0 <= t.x0 - s.widest; });
    for (; j != s.by_x.end() && rect[*j].x0 < t.x1; ++j) {
        const Rect& r = rect[*j];
        const Rect c{std::max(r.x0, t.x0), std::max(r.y0, t.y0), std::min(r.x1, t.x1),
                     std::min(r.y1, t.y1)};
        if (c.x0 < c.x1 && c.y0 < c.y1) {
            clipped.push_back(c);
            if (first_only) break;
        }
    }
    return clipped;
}

// The overlap count and covered share of validation tiles `val_rows` (indices into
// rect/scene) against training tiles `train_rows` of the same scene.
nlohmann::json overlap_of(const std::vector<Rect>& rect, const std::vector<std::string>& scene,
                          const std::vector<std::size_t>& train_rows,
                          const std::vector<std::size_t>& val_rows) {
    const auto train = index_by_scene(rect, scene, train_rows);
    std::size_t overlapping = 0;
    double val_area = 0, covered = 0;
    for (std::size_t i : val_rows) {
        const Rect& v = rect[i];
        val_area += (v.x1 - v.x0) * (v.y1 - v.y0);
        const auto clipped = overlaps(train, scene[i], rect, v);
        if (clipped.empty()) continue;
        ++overlapping;
        covered += union_area(clipped);
    }
    return {{"tiles", overlapping},
            {"val_tiles", val_rows.size()},
            {"pixel_fraction",
             val_rows.empty() ? nlohmann::json(nullptr) : nlohmann::json(covered / val_area)}};
}

// How much the validation rows of one manifest (their rectangles and scenes from
// tile_rects) overlap its training rows (cd-tile's --overlap makes neighbours share pixels,
// so a drawn validation tile is mostly training pixels). Tiles left out of every file
// (`left_out`) are neither.
nlohmann::json val_overlap(const std::vector<Rect>& rect, const std::vector<std::string>& scene,
                           const std::vector<char>& is_val, const std::vector<char>& left_out) {
    std::vector<std::size_t> train_rows, val_rows;
    for (std::size_t i = 0; i < rect.size(); ++i)
        if (!left_out[i]) (is_val[i] ? val_rows : train_rows).push_back(i);
    return overlap_of(rect, scene, train_rows, val_rows);
}

// The tiles that are not validation tiles but overlap one of their scene.
std::vector<char> bordering(const std::vector<Rect>& rect, const std::vector<std::string>& scene,
                            const std::vector<char>& is_val) {
    std::vector<std::size_t> val_rows;
    for (std::size_t i = 0; i < rect.size(); ++i)
        if (is_val[i]) val_rows.push_back(i);
    const auto val = index_by_scene(rect, scene, val_rows);
    std::vector<char> out(rect.size(), 0);
    for (std::size_t i = 0; i < rect.size(); ++i)
        out[i] = !is_val[i] && !overlaps(val, scene[i], rect, rect[i], true).empty();
    return out;
}

std::string join_names(const std::vector<std::string>& names, std::size_t at_most) {
    std::string s;
    for (std::size_t i = 0; i < names.size() && i < at_most; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > at_most) s += ", … (" + std::to_string(names.size()) + " in all)";
    return s;
}

}  // namespace

nlohmann::json tile_overlap(const CsvTable& train, const CsvTable& val) {
    std::vector<Rect> rect, val_rect;
    std::vector<std::string> scene, val_scene;
    if (!tile_rects(train, rect, scene) || !tile_rects(val, val_rect, val_scene)) return nullptr;
    std::vector<std::size_t> train_rows(rect.size()), val_rows(val_rect.size());
    for (std::size_t i = 0; i < train_rows.size(); ++i) train_rows[i] = i;
    for (std::size_t i = 0; i < val_rows.size(); ++i) val_rows[i] = rect.size() + i;
    rect.insert(rect.end(), val_rect.begin(), val_rect.end());
    scene.insert(scene.end(), val_scene.begin(), val_scene.end());
    return overlap_of(rect, scene, train_rows, val_rows);
}

std::string overlap_warning(const nlohmann::json& overlap, const std::string& val_name) {
    if (!overlap.is_object() || overlap.value("tiles", std::size_t{0}) == 0) return {};
    return std::to_string(overlap["tiles"].get<std::size_t>()) + " of " +
           std::to_string(overlap["val_tiles"].get<std::size_t>()) + " validation tiles" +
           (val_name.empty() ? "" : " (" + quote(val_name) + ")") +
           " overlap training tiles of their scene (" +
           fixed(100 * overlap["pixel_fraction"].get<double>(), 1) +
           " % of their pixels are training pixels too): validation scores will flatter the "
           "model; cd-partition --val-blocks PX holds out blocks of every scene instead";
}

void validate(const PartitionOptions& o) {
    if (o.manifest.empty())
        throw ConfigError("no tile manifest given (a tiles.csv written by cd-tile)");
    if (o.out.empty()) throw ConfigError("no output folder given");
    if (o.quantiles < 0 || o.quantiles == 1)
        throw ConfigError("quantiles must be 0 (use thresholds) or at least 2, got " +
                          quote(std::to_string(o.quantiles)));
    if (o.quantiles > 0) {
        if (!o.thresholds.empty() && o.thresholds != kPaperThresholds)
            throw ConfigError("thresholds " + quote(join_numbers(o.thresholds)) +
                              " and quantiles are exclusive: give one or the other");
    } else {
        if (o.thresholds.empty()) throw ConfigError("no CAR thresholds given (and no quantiles)");
        for (size_t i = 0; i < o.thresholds.size(); ++i) {
            const double t = o.thresholds[i];
            if (!(t > 0 && t < 1))
                throw ConfigError("CAR threshold " + quote(format_number(t)) + " is not in (0, 1)");
            if (i > 0 && !(t > o.thresholds[i - 1]))
                throw ConfigError("CAR thresholds " + quote(join_numbers(o.thresholds)) +
                                  " are not strictly increasing");
        }
    }
    if (!(o.val_fraction >= 0 && o.val_fraction < 1))
        throw ConfigError("validation fraction " + quote(format_number(o.val_fraction)) +
                          " is not in [0, 1)");
    for (const auto& scene : o.val_scenes)
        if (trim(scene).empty()) throw ConfigError("an empty validation scene name was given");
    if (!o.val_scenes.empty() && o.val_fraction != 0 &&
        o.val_fraction != PartitionOptions{}.val_fraction)
        throw ConfigError("validation scenes " + quote(join_names(o.val_scenes, 20)) +
                          " and validation fraction " + quote(format_number(o.val_fraction)) +
                          " are exclusive: give one or the other");
    if (o.val_block < 0)
        throw ConfigError("validation block size " + quote(std::to_string(o.val_block)) +
                          " is negative");
    if (o.val_block > 0 && !o.val_scenes.empty())
        throw ConfigError("validation blocks and validation scenes " +
                          quote(join_names(o.val_scenes, 20)) + " are exclusive: give one or the other");
    if (o.val_block > 0 && o.val_fraction == 0)
        throw ConfigError("validation blocks of " + std::to_string(o.val_block) +
                          " px need a validation fraction above 0");
}

std::vector<double> quantile_thresholds(std::vector<double> cars, int quantiles,
                                        const RunContext& ctx) {
    if (quantiles < 2)
        throw ConfigError("quantiles must be at least 2, got " + quote(std::to_string(quantiles)));
    std::vector<double> t;
    if (cars.empty()) return t;
    std::sort(cars.begin(), cars.end());
    const std::size_t n = cars.size(), k_count = static_cast<std::size_t>(quantiles);
    std::size_t dropped = 0;
    for (std::size_t k = 1; k < k_count; ++k) {
        // Nearest rank: the last CAR of the k-th of K equal-count groups.
        const double v = cars[(k * n + k_count - 1) / k_count - 1];
        // A repeated threshold would make an empty partition, and so would one at the
        // largest CAR (nothing lies above it).
        if ((!t.empty() && v <= t.back()) || v >= cars.back()) {
            ++dropped;
            continue;
        }
        t.push_back(v);
    }
    if (dropped > 0) {
        const auto zeros = std::count(cars.begin(), cars.end(), 0.0);
        ctx.warn("asked for " + std::to_string(quantiles) + " equal-count CAR partitions, made " +
                 std::to_string(t.size() + 1) + ": " + std::to_string(dropped) +
                 " quantile threshold(s) coincided because many tiles share a CAR (" +
                 std::to_string(zeros) + " of " + std::to_string(n) +
                 " tiles have CAR 0); thresholds kept: " +
                 (t.empty() ? std::string("none") : join_numbers(t)));
    }
    return t;
}

std::vector<std::size_t> seeded_permutation(std::size_t n, std::uint64_t seed) {
    std::vector<std::size_t> p(n);
    for (std::size_t i = 0; i < n; ++i) p[i] = i;
    std::mt19937_64 g(seed);
    for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[draw_below(g, i)]);
    return p;
}

nlohmann::json partition_tiles(const PartitionOptions& o, const RunContext& ctx) {
    validate(o);
    // Refuses an existing folder before any work; creates nothing until written to.
    AtomicPath out(o.out, o.overwrite);

    const CsvTable table = read_csv(o.manifest);
    const int c_id = table.require_column("id", o.manifest);
    const int c_car = table.require_column("car", o.manifest);
    const int c_path[3] = {table.require_column("a", o.manifest),
                           table.require_column("b", o.manifest),
                           table.require_column("label", o.manifest)};
    const int c_old_partition = table.column("partition");
    const std::size_t n = table.rows.size();
    if (n == 0) throw ConfigError("manifest " + quote(o.manifest) + " lists no tiles");

    std::vector<double> car(n);
    std::unordered_set<std::string> ids;
    // A tile with only an image-level label (tiles.csv `changed`, no pixel label) is placed by
    // its bit: CAR 0 when unchanged, 1 when changed (the first and the last partition), so
    // the validation draw is stratified by it.
    const int c_changed = table.column("changed");
    long long image_level = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const auto& row = table.rows[i];
        const std::string& id = row[c_id];
        if (!ids.insert(id).second)
            throw ConfigError("manifest " + quote(o.manifest) + " lists tile " + quote(id) +
                              " twice");
        const std::string cell = trim(row[c_car]);
        const std::string bit = c_changed >= 0 ? trim(row[size_t(c_changed)]) : std::string();
        if (cell.empty() && (bit == "0" || bit == "1")) {
            car[i] = bit == "1" ? 1.0 : 0.0;
            ++image_level;
            continue;
        }
        if (cell.empty())
            throw ConfigError(
                "tile " + quote(id) + " of manifest " + quote(o.manifest) +
                " has no CAR and no image-level label (run cd-tile with a label or --tile-labels)");
        if (!parse_car(cell, car[i]))
            throw ConfigError("tile " + quote(id) + " of manifest " + quote(o.manifest) +
                              " has CAR " + quote(cell) + ", not a number in [0, 1]");
    }

    const std::vector<double> thresholds =
        o.quantiles > 0 ? quantile_thresholds(car, o.quantiles, ctx) : o.thresholds;
    const auto names = partition_names(thresholds.size());
    const std::size_t parts = names.size();

    std::vector<std::vector<std::size_t>> members(parts);
    for (std::size_t i = 0; i < n; ++i) members[partition_of(car[i], thresholds)].push_back(i);

    std::vector<char> is_val(n, 0);
    std::vector<char> left_out(n, 0);  // training tiles that overlap validation blocks
    // Where each tile lies in its scene; false when the manifest lacks scene, x, y, width or
    // height, or one is not a number (no blocks then, and no overlap report).
    std::vector<Rect> rect;
    std::vector<std::string> scene;
    const bool placed = tile_rects(table, rect, scene);
    const bool by_scene = !o.val_scenes.empty();
    if (by_scene) {
        // Whole scenes held out: no validation pixel is a training pixel too.
        const int c_scene = table.require_column("scene", o.manifest);
        std::set<std::string> present;
        for (const auto& row : table.rows) present.insert(row[c_scene]);
        const std::set<std::string> wanted(o.val_scenes.begin(), o.val_scenes.end());
        for (const auto& name : wanted)
            if (!present.count(name))
                throw ConfigError("validation scene " + quote(name) + " is not in manifest " +
                                  quote(o.manifest) + " (its scenes: " +
                                  join_names({present.begin(), present.end()}, 20) + ")");
        for (std::size_t i = 0; i < n; ++i) is_val[i] = wanted.count(table.rows[i][c_scene]);
        if (std::count(is_val.begin(), is_val.end(), 1) == static_cast<long>(n))
            throw ConfigError("validation scenes " + quote(join_names(o.val_scenes, 20)) +
                              " hold every tile of manifest " + quote(o.manifest) +
                              ": nothing is left to train on");
    } else if (o.val_block > 0) {
        // Whole blocks of every scene, about val_fraction of its tiles; the training tiles
        // that overlap them are left out below.
        if (!placed)
            throw ConfigError("validation blocks need the scene, x, y, width and height columns "
                              "of manifest " + quote(o.manifest) +
                              " (numbers, as cd-tile writes them)");
        const double side = o.val_block;
        std::map<std::string, std::map<std::pair<long long, long long>, std::vector<std::size_t>>>
            blocks;  // scene -> block (column, row) -> tiles, all in a fixed order
        for (std::size_t i = 0; i < n; ++i) {
            const auto bx = static_cast<long long>(std::floor((rect[i].x0 + rect[i].x1) / 2 / side));
            const auto by = static_cast<long long>(std::floor((rect[i].y0 + rect[i].y1) / 2 / side));
            blocks[scene[i]][{bx, by}].push_back(i);
        }
        std::uint64_t scene_index = 0;
        std::vector<std::string> unvalidated;
        for (const auto& [name, in_scene] : blocks) {
            std::vector<const std::vector<std::size_t>*> list;
            std::size_t scene_tiles = 0;
            for (const auto& [key, tiles] : in_scene) {
                list.push_back(&tiles);
                scene_tiles += tiles.size();
            }
            const std::size_t target = val_count(scene_tiles, o.val_fraction);
            const auto perm = seeded_permutation(list.size(), mix(o.seed ^ mix(~scene_index++)));
            std::size_t taken = 0;
            for (const std::size_t j : perm) {
                const std::size_t b = list[j]->size();
                if (taken >= target) break;
                // A block that overshoots the target by more than it is short is skipped, as
                // is one that would leave the scene nothing to train on.
                if (taken + b > target && taken + b - target > target - taken) continue;
                if (taken + b >= scene_tiles) continue;
                for (const std::size_t i : *list[j]) is_val[i] = 1;
                taken += b;
            }
            if (target > 0 && taken == 0) unvalidated.push_back(name);
        }
        if (!unvalidated.empty())
            ctx.warn("no block of " + std::to_string(o.val_block) + " px fits the validation share of " +
                     std::to_string(unvalidated.size()) + " scene(s) (" + join_names(unvalidated, 5) +
                     "): they have no validation tiles; smaller blocks would give them some");
        left_out = bordering(rect, scene, is_val);
    } else {
        // Drawn per partition so that every CAR range is represented in validation.
        for (std::size_t k = 0; k < parts; ++k) {
            const auto& m = members[k];
            const std::size_t n_val = val_count(m.size(), o.val_fraction);
            const auto perm = seeded_permutation(m.size(), mix(o.seed ^ mix(k)));
            for (std::size_t j = 0; j < n_val; ++j) is_val[m[perm[j]]] = 1;
        }
    }

    // Tile paths move from the manifest's folder to the output folder.
    const fs::path manifest_dir = fs::path(o.manifest).parent_path().empty()
                                      ? fs::path(".")
                                      : fs::path(o.manifest).parent_path();
    const fs::path final_out = fs::absolute(fs::path(out.final_path())).lexically_normal();
    const fs::path out_real = resolved_path(final_out.parent_path().string()) / final_out.filename();
    check_not_input(final_out.string(), {{"manifest", o.manifest}});

    std::vector<std::string> header;
    for (std::size_t c = 0; c < table.header.size(); ++c)
        if (static_cast<int>(c) != c_old_partition) header.push_back(table.header[c]);
    header.push_back("partition");
    if (c_old_partition >= 0)
        ctx.info("the manifest's own 'partition' column is replaced by the new partitions");

    std::vector<std::vector<std::string>> rows(n);
    std::vector<NamedInput> tiles;  // --overwrite replaces the output folder: none may lie in it
    for (std::size_t i = 0; i < n; ++i) {
        auto row = table.rows[i];
        for (int c : c_path) {
            if (!is_rewritable(row[c])) continue;
            const fs::path tile = resolve_path(row[c], manifest_dir.string());
            if (o.overwrite) tiles.push_back({"tile file", tile.string()});
            row[c] = resolved_path(tile.string()).lexically_relative(out_real).generic_string();
        }
        if (c_old_partition >= 0) row.erase(row.begin() + c_old_partition);
        row.push_back(names[partition_of(car[i], thresholds)]);
        rows[i] = std::move(row);
    }
    check_not_input(final_out.string(), tiles);

    // Outputs, rows in manifest order.
    std::error_code ec;
    fs::create_directory(out.temp(), ec);
    if (ec) throw IoError("cannot create output folder " + quote(out.temp()) + ": " + ec.message());
    const auto write = [&](const std::string& file, const std::vector<std::size_t>& which) {
        write_csv(out.temp() + "/" + file, (fs::path(o.out) / file).string(), header, rows, which);
    };
    std::vector<std::size_t> train_all, val_all;
    for (std::size_t i = 0; i < n; ++i)
        if (!left_out[i]) (is_val[i] ? val_all : train_all).push_back(i);
    const std::size_t n_left_out = n - train_all.size() - val_all.size();
    if (train_all.empty() && o.val_block > 0)
        throw ConfigError("validation blocks of " + std::to_string(o.val_block) + " px and the " +
                          std::to_string(n_left_out) + " tiles beside them leave no training tile in manifest " +
                          quote(o.manifest) + ": choose smaller blocks or a smaller validation fraction");
    write("origin.csv", train_all);
    write("val.csv", val_all);

    nlohmann::json jparts = nlohmann::json::array();
    std::vector<std::string> table_lines;
    std::size_t name_w = 9, range_w = 9;
    std::vector<std::string> range_texts(parts);
    for (std::size_t k = 0; k < parts; ++k) {
        const double lo = k == 0 ? 0.0 : thresholds[k - 1];
        const double hi = k < thresholds.size() ? thresholds[k] : 1.0;
        range_texts[k] = range_text(lo, hi, k == 0);
        name_w = std::max(name_w, names[k].size());
        range_w = std::max(range_w, range_texts[k].size());
    }
    table_lines.push_back(pad("partition", name_w) + "  " + pad("CAR range", range_w) + "  " +
                          pad("train", 7, true) + "  " + pad("val", 6, true) + "  " +
                          pad("mean CAR", 8, true));
    for (std::size_t k = 0; k < parts; ++k) {
        std::vector<std::size_t> train;
        std::size_t n_val = 0, n_out = 0;
        double sum = 0;
        for (auto i : members[k]) {
            sum += car[i];
            if (is_val[i])
                ++n_val;
            else if (left_out[i])
                ++n_out;
            else
                train.push_back(i);
        }
        const std::string file = names[k] + ".csv";
        write(file, train);
        const double lo = k == 0 ? 0.0 : thresholds[k - 1];
        const double hi = k < thresholds.size() ? thresholds[k] : 1.0;
        const bool empty = members[k].empty();
        const double mean = empty ? 0.0 : sum / static_cast<double>(members[k].size());
        // (image-level manifests fill only the first and last partition: no news)
        if (empty) {
            if (image_level < static_cast<long long>(n))
                ctx.warn("partition " + quote(names[k]) + " (CAR " + range_texts[k] +
                         ") has no tiles; its file holds only the header");
        } else if (train.empty())
            ctx.warn("partition " + quote(names[k]) + " (CAR " + range_texts[k] +
                     ") has no training tiles: " +
                     (by_scene ? "all " + std::to_string(n_val) + " of its tiles are in the validation scenes"
                               : std::to_string(n_val) + " of its tiles are in validation blocks, " +
                                     std::to_string(n_out) + " overlap them"));
        jparts.push_back({{"name", names[k]},
                          {"index", k},
                          {"file", file},
                          {"car_range", {lo, hi}},
                          {"car_range_text", range_texts[k]},
                          {"tiles", members[k].size()},
                          {"train", train.size()},
                          {"val", n_val},
                          {"left_out", n_out},
                          {"mean_car", empty ? nlohmann::json(nullptr) : nlohmann::json(mean)}});
        table_lines.push_back(pad(names[k], name_w) + "  " + pad(range_texts[k], range_w) + "  " +
                              pad(std::to_string(train.size()), 7, true) + "  " +
                              pad(std::to_string(n_val), 6, true) + "  " +
                              pad(empty ? "-" : fixed(mean, 4), 8, true));
    }
    double sum_all = 0;
    for (double c : car) sum_all += c;
    table_lines.push_back(pad("total", name_w) + "  " + pad("", range_w) + "  " +
                          pad(std::to_string(train_all.size()), 7, true) + "  " +
                          pad(std::to_string(val_all.size()), 6, true) + "  " +
                          pad(fixed(sum_all / static_cast<double>(n), 4), 8, true));

    std::vector<std::size_t> hist(kHistogramBins, 0);
    std::size_t zero = 0;
    for (double c : car) {
        hist[std::min(kHistogramBins - 1, static_cast<int>(std::floor(c * kHistogramBins)))]++;
        if (c == 0.0) ++zero;
    }
    std::vector<double> edges;
    for (int b = 0; b <= kHistogramBins; ++b)
        edges.push_back(static_cast<double>(b) / kHistogramBins);

    if (n_left_out > 0)
        table_lines.push_back(std::to_string(n_left_out) +
                              " tiles overlap validation blocks and are in no file (--val-blocks " +
                              std::to_string(o.val_block) + ")");
    const nlohmann::json overlap =
        placed ? val_overlap(rect, scene, is_val, left_out) : nlohmann::json(nullptr);
    if (const std::string w = overlap_warning(overlap); !w.empty()) ctx.warn(w);

    nlohmann::json summary = {
        {"format", "cdkit-partition/1"},
        {"created_by", std::string("cdkit ") + kVersion},
        {"out", o.out},
        {"manifest", o.manifest},
        {"manifest_from_out", resolved_path(o.manifest).lexically_relative(out_real).generic_string()},
        {"mode", o.quantiles > 0 ? "quantiles" : "thresholds"},
        {"image_level_tiles", image_level},
        {"quantiles", o.quantiles > 0 ? nlohmann::json(o.quantiles) : nlohmann::json(nullptr)},
        {"thresholds", thresholds},
        {"rule", "partition k holds the tiles with thresholds[k-1] < car <= thresholds[k]"},
        {"seed", o.seed},
        {"val_fraction", by_scene ? nlohmann::json(nullptr) : nlohmann::json(o.val_fraction)},
        {"val_scenes", o.val_scenes},
        {"val_block", o.val_block > 0 ? nlohmann::json(o.val_block) : nlohmann::json(nullptr)},
        {"val_overlap", overlap},
        {"partitions", jparts},
        {"totals",
         {{"tiles", n},
          {"train", train_all.size()},
          {"val", val_all.size()},
          {"left_out", n_left_out},
          {"mean_car", sum_all / n}}},
        {"files", {{"origin", "origin.csv"}, {"val", "val.csv"}, {"summary", "summary.json"}}},
        {"car_histogram",
         {{"bins", kHistogramBins},
          {"edges", edges},
          {"counts", hist},
          {"zero", zero},
          {"note",
           "bin i holds edges[i] <= car < edges[i+1], the last bin includes 1; zero counts car == "
           "0 exactly"}}}};
    write_text_file(out.temp() + "/summary.json", summary.dump(2) + "\n");
    out.commit();

    for (const auto& line : table_lines) ctx.info(line);
    return summary;
}

}  // namespace cdk::geo
