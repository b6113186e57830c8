#include "cdk/geo/tile.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "cdk/core/csv.hpp"
#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/core/version.hpp"
#include "cdk/geo/stats.hpp"
#include "cdk/geo/tile_grid.hpp"

namespace fs = std::filesystem;

namespace cdk::geo {

namespace {

std::string safe_name(const std::string& s) {
    std::string out;
    for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
    return out.empty() ? "scene" : out;
}

bool is_raster_name(const std::string& name) {
    const std::string ext = to_lower(fs::path(name).extension().string());
    static const std::set<std::string> exts = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img", ".bmp"};
    return exts.count(ext) > 0;
}

// Copy the sub-window `sub` (relative to the block) of every band into a tile buffer.
std::vector<uint8_t> extract(const Block& blk, const Window& sub) {
    const int bytes = blk.value_bytes();
    std::vector<uint8_t> out(static_cast<size_t>(sub.pixels()) * blk.bands * bytes);
    const size_t plane = static_cast<size_t>(blk.window.pixels());
    uint8_t* dst = out.data();
    for (int b = 0; b < blk.bands; ++b)
        for (int r = 0; r < sub.height; ++r) {
            const uint8_t* src = blk.data.data() +
                                 (b * plane + static_cast<size_t>(sub.y + r) * blk.window.width + sub.x) * bytes;
            std::memcpy(dst, src, static_cast<size_t>(sub.width) * bytes);
            dst += static_cast<size_t>(sub.width) * bytes;
        }
    return out;
}

nlohmann::json stats_json(const std::vector<BandStatistics>& s, const std::vector<std::string>& names) {
    nlohmann::json arr = nlohmann::json::array();
    for (size_t b = 0; b < s.size(); ++b) {
        auto j = s[b].to_json();
        j["band"] = b + 1;
        j["name"] = b < names.size() ? names[b] : "B" + std::to_string(b + 1);
        arr.push_back(j);
    }
    return arr;
}

}  // namespace

std::vector<PairJob> read_pairs_csv(const std::string& path, const std::string& band_pattern,
                                    const std::vector<int>& bands) {
    CsvTable t = read_csv(path);
    const int c_scene = t.require_column("scene", path);
    const int c_pre = t.require_column("pre", path);
    const int c_post = t.require_column("post", path);
    const int c_label = t.column("label");
    const std::string base = fs::path(path).parent_path().string();
    std::vector<PairJob> jobs;
    for (const auto& row : t.rows) {
        PairJob j;
        j.scene = row[c_scene];
        if (j.scene.empty()) throw ConfigError("pairs file " + quote(path) + " has a row with an empty scene name");
        j.pre = SceneSpec::parse(row[c_pre], band_pattern, base.empty() ? "." : base);
        j.post = SceneSpec::parse(row[c_post], band_pattern, base.empty() ? "." : base);
        j.pre.bands = j.post.bands = bands;
        if (c_label >= 0 && !row[c_label].empty()) j.label = resolve_path(row[c_label], base.empty() ? "." : base);
        jobs.push_back(std::move(j));
    }
    if (jobs.empty()) throw ConfigError("pairs file " + quote(path) + " lists no scene");
    return jobs;
}

std::vector<PairJob> folder_pairs(const std::string& dir, const std::vector<int>& bands) {
    const fs::path a = fs::path(dir) / "A", b = fs::path(dir) / "B", l = fs::path(dir) / "label";
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw IoError("dataset folder " + quote(dir) + " does not exist");
    if (!fs::is_directory(a, ec) || !fs::is_directory(b, ec))
        throw ConfigError("dataset folder " + quote(dir) + " needs A/ and B/ sub-folders (and optionally label/)");
    const bool labelled = fs::is_directory(l, ec);
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(a))
        if (e.is_regular_file() && is_raster_name(e.path().filename().string()))
            names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    if (names.empty()) throw ConfigError("dataset folder " + quote(a.string()) + " holds no image");
    std::vector<PairJob> jobs;
    for (const auto& n : names) {
        PairJob j;
        j.scene = fs::path(n).stem().string();
        j.pre.files = {(a / n).string()};
        if (!fs::exists(b / n)) throw ConfigError("image " + quote((a / n).string()) + " has no date-2 partner " + quote((b / n).string()));
        j.post.files = {(b / n).string()};
        j.pre.bands = j.post.bands = bands;
        if (labelled) {
            if (!fs::exists(l / n)) throw ConfigError("image " + quote((a / n).string()) + " has no label " + quote((l / n).string()));
            j.label = (l / n).string();
        }
        jobs.push_back(std::move(j));
    }
    return jobs;
}

void validate(const TileOptions& o) {
    const int forms = (!o.pre.empty() || !o.post.empty()) + !o.pairs.empty() + !o.folder.empty();
    if (forms != 1) throw ConfigError("give exactly one input: --pre/--post, --pairs or --folder");
    if (!o.pre.empty() != !o.post.empty()) throw ConfigError("--pre and --post go together");
    if (!o.label.empty() && o.pre.empty()) throw ConfigError("--label goes with --pre/--post");
    if (o.out.empty()) throw ConfigError("an output folder (--out) is needed");
    if (o.tile_size < 8) throw ConfigError("tile size must be at least 8, got " + std::to_string(o.tile_size));
    if (o.overlap < 0 || o.overlap >= o.tile_size)
        throw ConfigError("overlap must be in [0, tile size), got " + std::to_string(o.overlap));
    if (o.min_changed_pixels < 1)
        throw ConfigError("--min-changed-pixels must be at least 1, got " + std::to_string(o.min_changed_pixels));
    if (!o.tile_labels.empty() && !fs::is_regular_file(o.tile_labels))
        throw IoError("tile labels " + quote(o.tile_labels) + " do not exist");
    if (!(o.min_valid >= 0 && o.min_valid <= 1))
        throw ConfigError("minimum valid fraction must be in [0, 1], got " + format_number(o.min_valid));
    validate_resampling(o.pair.resampling);
    geo::validate(o.write, "tile.tif");
}

std::vector<PairJob> pair_jobs(const TileOptions& o) {
    if (!o.folder.empty()) return folder_pairs(o.folder, o.bands);
    if (!o.pairs.empty()) return read_pairs_csv(o.pairs, o.band_pattern, o.bands);
    PairJob j;
    j.scene = o.scene_name;
    j.pre = SceneSpec::parse(o.pre, o.band_pattern);
    j.post = SceneSpec::parse(o.post, o.band_pattern);
    j.pre.bands = j.post.bands = o.bands;
    j.label = o.label;
    return {j};
}

namespace {

// --tile-labels: id,changed rows (changed 0 or 1); empty path = none.
std::map<std::string, int> read_tile_labels(const std::string& path) {
    std::map<std::string, int> m;
    if (path.empty()) return m;
    const CsvTable t = read_csv(path);
    const int id = t.require_column("id", path), ch = t.require_column("changed", path);
    for (const auto& row : t.rows) {
        const std::string& v = row[size_t(ch)];
        if (v != "0" && v != "1")
            throw ConfigError("tile labels " + quote(path) + ": tile " + quote(row[size_t(id)]) + " has changed = " +
                              quote(v) + " (must be 0 or 1)");
        if (!m.emplace(row[size_t(id)], v == "1").second)
            throw ConfigError("tile labels " + quote(path) + ": tile " + quote(row[size_t(id)]) + " appears twice");
    }
    return m;
}

}  // namespace

nlohmann::json tile_scenes(const TileOptions& o, const RunContext& ctx) {
    validate(o);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<PairJob> jobs = pair_jobs(o);
    {  // --overwrite replaces the output folder whole: it must hold no input
        std::vector<NamedInput> inputs{{"--pairs", o.pairs}, {"--folder", o.folder}, {"--tile-labels", o.tile_labels}};
        for (const auto& j : jobs) {
            for (const auto& f : j.pre.files) inputs.push_back({"scene " + quote(j.scene) + " (pre)", f});
            for (const auto& f : j.post.files) inputs.push_back({"scene " + quote(j.scene) + " (post)", f});
            inputs.push_back({"scene " + quote(j.scene) + " (label)", j.label});
        }
        check_not_input(o.out, inputs);
    }
    AtomicPath out(o.out, o.write.overwrite);  // refuses an existing output before any work
    {
        std::set<std::string> seen;
        for (auto& j : jobs) {
            j.scene = safe_name(j.scene);
            if (!seen.insert(j.scene).second) throw ConfigError("scene name " + quote(j.scene) + " appears twice");
        }
    }
    const std::string tmp = out.temp();
    for (const char* sub : {"", "/A", "/B", "/label"})
        if (!fs::create_directory(tmp + sub)) throw IoError("cannot create folder " + quote(o.out + sub));

    WriteOptions tile_write = o.write;
    tile_write.overwrite = false;
    std::ofstream csv(tmp + "/tiles.csv", std::ios::binary);
    if (!csv) throw IoError("cannot create " + quote(o.out + "/tiles.csv"));
    csv << "id,scene,x,y,width,height,car,valid_fraction,a,b,label,changed\n";
    const std::map<std::string, int> given = read_tile_labels(o.tile_labels);
    std::set<std::string> given_used;
    std::mutex given_mutex;

    int bands = 0;
    GDALDataType type = GDT_Unknown;
    std::optional<double> nodata, nodata_post;
    std::vector<std::string> band_names;
    std::vector<BandStatistics> st_pre, st_post;
    nlohmann::json scenes = nlohmann::json::array();
    Grid first_grid;
    long long n_tiles = 0, n_skipped = 0, n_labelled = 0, n_changed = 0, n_image_labelled = 0;
    bool warned_plain = false;

    for (size_t si = 0; si < jobs.size(); ++si) {
        const PairJob& job = jobs[si];
        RunContext sctx = ctx.scaled(double(si) / jobs.size(), double(si + 1) / jobs.size());
        ScenePair pair;
        try {
            pair = open_pair(job.pre, job.post, job.label, o.pair, ctx);
        } catch (const Error& e) {
            if (jobs.size() == 1) throw;
            throw ConfigError("scene " + quote(job.scene) + ": " + e.what());
        }
        const Grid& grid = pair.grid();
        if (si == 0) {
            bands = pair.pre.band_count();
            type = pair.pre.data_type();
            nodata = pair.pre.nodata();
            nodata_post = pair.post.nodata();
            band_names = pair.pre.band_names();
            st_pre.assign(bands, BandStatistics(type));
            st_post.assign(bands, BandStatistics(type));
            first_grid = grid;
        } else if (pair.pre.band_count() != bands || pair.pre.data_type() != type) {
            throw ConfigError("scene " + quote(job.scene) + " has " + std::to_string(pair.pre.band_count()) + " " +
                              GDALGetDataTypeName(pair.pre.data_type()) + " bands, the first scene has " +
                              std::to_string(bands) + " " + GDALGetDataTypeName(type) +
                              " bands: all scenes of a tile set must match");
        }
        if (!grid.has_geotransform && !warned_plain) {
            ctx.warn("scene " + quote(job.scene) + " has no georeferencing: tiles are in pixel coordinates");
            warned_plain = true;
        }
        const auto windows = tile_windows(grid.width, grid.height, o.tile_size, o.overlap);
        // Tile rows: [begin, end) ranges of `windows` sharing one y.
        std::vector<std::pair<size_t, size_t>> rows;
        for (size_t i = 0; i < windows.size();) {
            size_t e = i;
            while (e < windows.size() && windows[e].y == windows[i].y) ++e;
            rows.emplace_back(i, e);
            i = e;
        }
        struct Strip {
            Block a, b;
            std::vector<uint8_t> lab;
        };
        // One strip of each date in memory at a time, plus the next one being read while the
        // workers write the current one's tiles.
        auto read_strip = [&](size_t r) {
            const Window& w0 = windows[rows[r].first];
            const Window strip{0, w0.y, grid.width, w0.height};
            Strip s{pair.pre.read(strip), pair.post.read(strip), {}};
            if (pair.label) s.lab = pair.label->read(strip);
            return s;
        };
        const int workers = std::max(1, o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency()));
        std::vector<std::vector<BandStatistics>> wst_pre(workers, st_pre), wst_post(workers, st_post);
        for (auto& v : wst_pre) for (auto& s : v) s = BandStatistics(type);
        for (auto& v : wst_post) for (auto& s : v) s = BandStatistics(type);
        long long scene_tiles = 0, scene_skipped = 0;
        // The whole scene's statistics (each pixel once, whatever the overlap), for
        // per-scene standardisation; the same numbers as geo::pair_statistics.
        PairStatistics scene_st(bands, type);
        int counted_rows = 0;
        std::future<Strip> next = std::async(std::launch::async, read_strip, 0);
        for (size_t r = 0; r < rows.size(); ++r) {
            Strip cur = next.get();
            if (r + 1 < rows.size()) next = std::async(std::launch::async, read_strip, r + 1);
            scene_st.add_rows(cur.a, cur.b, counted_rows, cur.a.window.y + cur.a.window.height);
            counted_rows = cur.a.window.y + cur.a.window.height;
            const size_t first = rows[r].first, count = rows[r].second - rows[r].first;
            std::vector<std::string> lines(count);  // CSV rows in tile order; empty = skipped
            std::vector<int> changed_of(count, -1);  // image-level label per tile, -1 unknown
            auto work = [&](int t) {
                for (size_t k = t; k < count; k += workers) {
                    const Window& w = windows[first + k];
                    const Window sub{w.x, 0, w.width, w.height};
                    std::vector<uint8_t> valid(static_cast<size_t>(w.pixels()));
                    std::vector<uint8_t> tile_label(pair.label ? valid.size() : 0);
                    long long n_valid = 0, n_change = 0;
                    for (int rr = 0; rr < w.height; ++rr)
                        for (int c = 0; c < w.width; ++c) {
                            const size_t si_ = static_cast<size_t>(rr) * grid.width + w.x + c;
                            const size_t ti = static_cast<size_t>(rr) * w.width + c;
                            uint8_t v = cur.a.valid[si_] && cur.b.valid[si_];
                            if (pair.label) {
                                const uint8_t l = cur.lab[si_];
                                if (l == 255) v = 0;
                                tile_label[ti] = v ? l : 255;
                                n_change += v && l == 1;
                            }
                            valid[ti] = v;
                            n_valid += v;
                        }
                    const double vf = double(n_valid) / double(w.pixels());
                    if (n_valid == 0 || vf < o.min_valid) continue;
                    const std::string id = job.scene + "_" + std::to_string(w.x) + "_" + std::to_string(w.y);
                    const Grid tg = grid.sub(w);
                    const std::string rel_a = "A/" + id + ".tif", rel_b = "B/" + id + ".tif";
                    RasterWriter wa(tmp + "/" + rel_a, tg, bands, type, tile_write, nodata);
                    wa.write_all({0, 0, w.width, w.height}, extract(cur.a, sub).data(), type);
                    wa.commit();
                    RasterWriter wb(tmp + "/" + rel_b, tg, bands, type, tile_write, pair.post.nodata());
                    wb.write_all({0, 0, w.width, w.height}, extract(cur.b, sub).data(), type);
                    wb.commit();
                    std::string rel_l, car;
                    if (pair.label) {
                        rel_l = "label/" + id + ".tif";
                        RasterWriter wl(tmp + "/" + rel_l, tg, 1, GDT_Byte, tile_write, 255.0);
                        set_change_colour_table(*wl.dataset().GetRasterBand(1));
                        wl.write(1, {0, 0, w.width, w.height}, tile_label.data(), GDT_Byte);
                        wl.commit();
                        car = format_number(double(n_change) / double(n_valid));
                        changed_of[k] = n_change >= o.min_changed_pixels;
                    }
                    if (const auto it = given.find(id); it != given.end()) {  // --tile-labels: the user's bit wins
                        changed_of[k] = it->second;
                        std::lock_guard<std::mutex> lock(given_mutex);
                        given_used.insert(id);
                    }
                    accumulate_block(wst_pre[t], cur.a, sub, valid.data());
                    accumulate_block(wst_post[t], cur.b, sub, valid.data());
                    lines[k] = csv_line({id, job.scene, std::to_string(w.x), std::to_string(w.y),
                                         std::to_string(w.width), std::to_string(w.height), car, format_number(vf),
                                         rel_a, rel_b, rel_l,
                                         changed_of[k] < 0 ? std::string() : std::to_string(changed_of[k])});
                }
            };
            std::vector<std::future<void>> running;
            for (int t = 1; t < workers; ++t) running.push_back(std::async(std::launch::async, work, t));
            std::exception_ptr failure;
            try {
                work(0);
            } catch (...) {
                failure = std::current_exception();
            }
            for (auto& f : running) {
                try {
                    f.get();
                } catch (...) {
                    if (!failure) failure = std::current_exception();
                }
            }
            if (failure) {
                if (next.valid()) next.wait();
                std::rethrow_exception(failure);
            }
            for (const auto& line : lines) {
                if (line.empty()) {
                    ++scene_skipped;
                    continue;
                }
                csv << line << '\n';
                ++scene_tiles;
                const int c = changed_of[size_t(&line - lines.data())];
                n_changed += c == 1;
                n_image_labelled += c >= 0;
            }
            sctx.progress(double(r + 1) / rows.size(), "tiling");
        }
        for (int t = 0; t < workers; ++t)
            for (int b = 0; b < bands; ++b) {
                st_pre[b].merge(wst_pre[t][b]);
                st_post[b].merge(wst_post[t][b]);
            }
        n_tiles += scene_tiles;
        n_skipped += scene_skipped;
        if (pair.label) n_labelled += scene_tiles;
        ctx.debug("scene " + quote(job.scene) + ": " + std::to_string(scene_tiles) + " tiles, " +
                  std::to_string(scene_skipped) + " skipped (valid fraction below " + format_number(o.min_valid) + ")");
        scenes.push_back({{"scene", job.scene},
                          {"pre", job.pre.files},
                          {"post", job.post.files},
                          {"label", job.label.empty() ? nlohmann::json(nullptr) : nlohmann::json(job.label)},
                          {"width", grid.width},
                          {"height", grid.height},
                          {"aligned", pair.post.warped()},
                          {"epsg", epsg_of(grid.crs_wkt)},
                          {"tiles", scene_tiles},
                          {"skipped", scene_skipped},
                          {"statistics", scene_st.to_json()}});
    }
    csv.flush();
    if (!csv) throw IoError("cannot write " + quote(o.out + "/tiles.csv"));
    csv.close();

    std::vector<BandStatistics> st_all = st_pre;
    for (int b = 0; b < bands; ++b) st_all[b].merge(st_post[b]);
    nlohmann::json ds = {
        {"format", "cdkit-tiles/1"},
        {"created_by", std::string("cdkit ") + kVersion},
        {"tile_size", o.tile_size},
        {"overlap", o.overlap},
        {"min_valid", o.min_valid},
        {"bands", bands},
        {"band_names", band_names},
        {"data_type", GDALGetDataTypeName(type)},
        {"nodata", nodata ? nlohmann::json(*nodata) : nlohmann::json(nullptr)},
        {"nodata_post", nodata_post ? nlohmann::json(*nodata_post) : nlohmann::json(nullptr)},
        {"crs", first_grid.crs_wkt.empty() ? nlohmann::json(nullptr) : nlohmann::json(first_grid.crs_wkt)},
        {"epsg", epsg_of(first_grid.crs_wkt)},
        {"resolution", first_grid.has_geotransform
                           ? nlohmann::json::array({first_grid.geotransform[1], -first_grid.geotransform[5]})
                           : nlohmann::json(nullptr)},
        {"label", {{"values", {{"0", "no change"}, {"1", "change"}, {"255", "nodata"}}}}},
        {"alignment", {{"mode", o.pair.align == AlignMode::Warp ? "warp" : "strict"}, {"resampling", o.pair.resampling}}},
        {"statistics",
         {{"note", "over the valid pixels of the tiles written (each scene's own, over its pixels valid in both dates: scenes[].statistics)"},
          {"all", stats_json(st_all, band_names)},
          {"pre", stats_json(st_pre, band_names)},
          {"post", stats_json(st_post, band_names)}}},
        {"scenes", scenes},
        {"tiles", n_tiles},
        {"labelled_tiles", n_labelled}};
    for (const auto& [id, c] : given)
        if (!given_used.count(id))
            throw ConfigError("tile labels " + quote(o.tile_labels) + " name tile " + quote(id) +
                              ", which this tiling does not write (" + std::to_string(given.size() - given_used.size()) +
                              " of " + std::to_string(given.size()) + " ids unmatched)");
    ds["image_labels"] = {{"column", "changed"},
                          {"rule", "changed = at least min_changed_pixels changed valid pixels in the tile's label"},
                          {"min_changed_pixels", o.min_changed_pixels},
                          {"given", o.tile_labels.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.tile_labels)},
                          {"tiles", n_image_labelled},
                          {"changed", n_changed}};
    // An empty tile set is no result: every later step would fail on it.
    if (n_tiles == 0)
        throw ConfigError("no tile written to " + quote(o.out) + ": " +
                          (n_skipped > 0 ? "all " + std::to_string(n_skipped) +
                                               " tiles have less valid data than --min-valid " + format_number(o.min_valid) +
                                               " (scenes mostly nodata, or a wrong nodata value?)"
                                         : std::string("the scenes hold no whole tile")));
    write_text_file(tmp + "/dataset.json", ds.dump(2) + "\n", false);
    out.commit();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx.progress(1.0, "tiling");
    ctx.info("wrote " + std::to_string(n_tiles) + " tiles of " + std::to_string(jobs.size()) + " scene(s) to " +
             quote(o.out) + " (" + std::to_string(n_skipped) + " skipped below valid fraction " +
             format_number(o.min_valid) + ")");
    return {{"out", o.out},
            {"manifest", (fs::path(o.out) / "tiles.csv").string()},
            {"scenes", jobs.size()},
            {"tiles", n_tiles},
            {"skipped", n_skipped},
            {"labelled_tiles", n_labelled},
            {"image_labelled_tiles", n_image_labelled},
            {"changed_tiles", n_changed},
            {"seconds", secs},
            {"tiles_per_second", secs > 0 ? n_tiles / secs : 0.0}};
}

}  // namespace cdk::geo
