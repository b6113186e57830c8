#include "cdk/geo/scene.hpp"

#include <cpl_string.h>
#include <fnmatch.h>
#include <gdal_utils.h>
#include <ogr_spatialref.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"

namespace fs = std::filesystem;

namespace cdk::geo {

namespace {

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, sep)) {
        item = trim(item);
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// A raster with GCPs but no geotransform would be read in pixel space and silently
// misaligned: refuse it with the fix in the message.
void refuse_gcp_only(GDALDataset& ds, const std::string& path) {
    double gt[6];
    if (ds.GetGeoTransform(gt) != CE_None && ds.GetGCPCount() > 0)
        throw ConfigError("raster " + quote(path) + " has ground control points but no geotransform: " +
                          "orthorectify or warp it first (e.g. gdalwarp -tps)");
}

// Warp `src` onto `target` as a lazily evaluated VRT (nothing is read until a block is).
DatasetPtr warp_onto(GDALDataset& src, const Grid& target, const std::string& resampling,
                     bool add_alpha, const std::string& what) {
    const auto& t = target.geotransform;
    if (t[2] != 0 || t[4] != 0)
        throw ConfigError("cannot align " + quote(what) + " onto a rotated grid (geotransform terms 2 and 4 must be 0)");
    const auto e = target.extent();
    CPLStringList args;
    auto add = [&](const std::string& s) { args.AddString(s.c_str()); };
    add("-of"); add("VRT");
    add("-r"); add(resampling);
    add("-te"); for (double v : e) add(format_number(v));
    add("-ts"); add(std::to_string(target.width)); add(std::to_string(target.height));
    if (!target.crs_wkt.empty()) { add("-t_srs"); add(target.crs_wkt); }
    add("-nosrcalpha");
    if (add_alpha) add("-dstalpha");
    GDALWarpAppOptions* opts = GDALWarpAppOptionsNew(args.List(), nullptr);
    if (!opts) throw ConfigError("cannot set up warping of " + quote(what) + ": " + gdal_message());
    GDALDatasetH src_h = GDALDataset::ToHandle(&src);
    int usage_error = 0;
    CPLErrorReset();
    GDALDatasetH out = GDALWarp("", nullptr, 1, &src_h, opts, &usage_error);
    GDALWarpAppOptionsFree(opts);
    if (!out) throw ConfigError("cannot align " + quote(what) + " onto the reference grid: " + gdal_message());
    return adopt_dataset(GDALDataset::FromHandle(out));
}

template <typename T>
void validity_from_values(const T* data, int bands, size_t n, const std::vector<std::optional<double>>& nodata,
                          uint8_t* valid) {
    std::vector<int> with_nodata;
    for (int b = 0; b < bands; ++b)
        if (nodata[b]) with_nodata.push_back(b);
    if (with_nodata.empty()) return;
    std::vector<T> nd(bands);
    std::vector<bool> nd_nan(bands, false);
    for (int b : with_nodata) {
        nd_nan[b] = std::isnan(*nodata[b]);
        nd[b] = nd_nan[b] ? T{} : static_cast<T>(*nodata[b]);
    }
    for (size_t i = 0; i < n; ++i) {
        bool all_nodata = true;
        for (int b : with_nodata) {
            const T v = data[b * n + i];
            const bool is_nd = nd_nan[b] ? std::isnan(static_cast<double>(v)) : v == nd[b];
            if (!is_nd) { all_nodata = false; break; }
        }
        if (all_nodata) valid[i] = 0;
    }
}

}  // namespace

std::vector<int> parse_band_list(const std::string& text) {
    std::vector<int> out;
    for (const auto& tok : split(text, ',')) {
        char* end = nullptr;
        long v = std::strtol(tok.c_str(), &end, 10);
        if (*end != '\0' || v < 1 || v > 100000)
            throw ConfigError("band list " + quote(text) + " must hold 1-based band numbers, like 4,3,2");
        out.push_back(static_cast<int>(v));
    }
    if (out.empty()) throw ConfigError("band list " + quote(text) + " is empty");
    return out;
}

void validate_resampling(const std::string& name) {
    static const char* ok[] = {"near", "nearest", "bilinear", "cubic", "cubicspline", "lanczos",
                               "average", "mode", "min", "max", "med", "rms"};
    for (const char* o : ok)
        if (name == o) return;
    throw ConfigError("resampling " + quote(name) + " is not one of near, bilinear, cubic, cubicspline, lanczos, average, mode");
}

SceneSpec SceneSpec::parse(const std::string& text, const std::string& band_pattern, const std::string& base_dir) {
    SceneSpec spec;
    auto entries = split(text, ';');
    if (entries.empty()) throw ConfigError("empty scene path");
    for (auto& e : entries) e = base_dir.empty() ? e : resolve_path(e, base_dir);
    std::error_code ec;
    if (entries.size() == 1 && fs::is_directory(entries[0], ec)) {
        const std::string dir = entries[0];
        if (band_pattern.empty())
            throw ConfigError("scene folder " + quote(dir) +
                              " needs --band-pattern (e.g. B04,B03,B02) to choose and order its band files");
        std::vector<std::string> names;
        for (const auto& f : fs::directory_iterator(dir, ec))
            if (f.is_regular_file()) names.push_back(f.path().filename().string());
        std::sort(names.begin(), names.end());
        for (const auto& tok : split(band_pattern, ',')) {
            const std::string glob = has_wildcard(tok) ? tok : "*" + tok + "*";
            std::vector<std::string> hits;
            for (const auto& n : names)
                if (fnmatch(glob.c_str(), n.c_str(), 0) == 0) hits.push_back(n);
            if (hits.size() != 1) {
                std::string msg = "band pattern " + quote(tok) + " matches " +
                                  (hits.empty() ? std::string("no file") : std::to_string(hits.size()) + " files") +
                                  " in " + quote(dir);
                if (!hits.empty()) msg += ": " + hits[0] + ", " + hits[1] + (hits.size() > 2 ? ", ..." : "");
                throw ConfigError(msg);
            }
            spec.files.push_back((fs::path(dir) / hits[0]).string());
            spec.names.push_back(tok);
        }
        return spec;
    }
    if (!band_pattern.empty())
        throw ConfigError("--band-pattern needs a scene folder, but " + quote(text) + " is not a folder");
    spec.files = entries;
    return spec;
}

std::string SceneSpec::describe() const {
    if (files.empty()) return "(empty scene)";
    if (files.size() == 1) return files[0];
    return files[0] + " (+" + std::to_string(files.size() - 1) + " band files)";
}

double Block::value(int b, int col, int row) const {
    const size_t i = static_cast<size_t>(b) * window.pixels() + static_cast<size_t>(row) * window.width + col;
    double v = 0;
    GDALCopyWords(data.data() + i * value_bytes(), type, 0, &v, GDT_Float64, 0, 1);
    return v;
}

Scene Scene::open(const SceneSpec& spec, const std::string& resampling, std::optional<double> nodata) {
    if (spec.files.empty()) throw ConfigError("a scene needs at least one raster");
    validate_resampling(resampling);
    Scene s;
    s.name_ = spec.describe();
    std::vector<DatasetPtr> opened;
    for (const auto& f : spec.files) {
        opened.push_back(open_raster(f));
        refuse_gcp_only(*opened.back(), f);
    }
    // The reference grid is the finest one, the first among equals: for Sentinel-2 band
    // files listed in band order (B01 at 60 m first) that is B02's 10 m grid.
    size_t ref = 0;
    double best = 0;
    for (size_t f = 0; f < opened.size(); ++f) {
        Grid g = grid_of(*opened[f]);
        if (!g.has_geotransform) continue;
        const double area = std::abs(g.geotransform[1] * g.geotransform[5] - g.geotransform[2] * g.geotransform[4]);
        if (best == 0 || area < best * (1 - 1e-9)) {
            best = area;
            ref = f;
        }
    }
    s.grid_ = grid_of(*opened[ref]);
    std::vector<BandRef> all;
    std::vector<std::string> names;
    for (size_t f = 0; f < spec.files.size(); ++f) {
        DatasetPtr ds = opened[f];
        if (f != ref) {
            Grid g = grid_of(*ds);
            if (!g.same_as(s.grid_)) {
                if (!g.has_geotransform || !s.grid_.has_geotransform) {
                    if (g.width != s.grid_.width || g.height != s.grid_.height)
                        throw ConfigError("band file " + quote(spec.files[f]) + " (" + g.describe() +
                                          ") does not match " + quote(spec.files[ref]) + " (" +
                                          s.grid_.describe() + ") and has no georeferencing to resample it");
                } else {
                    ds = warp_onto(*ds, s.grid_, resampling, false, spec.files[f]);
                }
            }
        }
        const std::string stem = fs::path(spec.files[f]).stem().string();
        for (int b = 1; b <= ds->GetRasterCount(); ++b) {
            auto* band = ds->GetRasterBand(b);
            BandRef bref{ds, b, std::nullopt};
            int has = 0;
            double nd = band->GetNoDataValue(&has);
            if (has) bref.nodata = nd;
            all.push_back(bref);
            std::string desc = band->GetDescription();
            const std::string base = f < spec.names.size() ? spec.names[f] : stem;
            if (spec.files.size() > 1) names.push_back(ds->GetRasterCount() == 1 ? base : base + ":" + std::to_string(b));
            else names.push_back(desc.empty() ? "B" + std::to_string(b) : desc);
        }
    }
    if (spec.bands.empty()) {
        s.bands_ = all;
        s.names_ = names;
    } else {
        for (int b : spec.bands) {
            if (b < 1 || b > static_cast<int>(all.size()))
                throw ConfigError("band " + std::to_string(b) + " asked for, but " + quote(s.name_) + " has " +
                                  std::to_string(all.size()) + " bands");
            s.bands_.push_back(all[b - 1]);
            s.names_.push_back(names[b - 1]);
        }
    }
    s.type_ = GDT_Unknown;
    for (const auto& b : s.bands_) {
        GDALDataType t = b.ds->GetRasterBand(b.index)->GetRasterDataType();
        s.type_ = s.type_ == GDT_Unknown ? t : GDALDataTypeUnion(s.type_, t);
    }
    if (nodata) {
        for (auto& b : s.bands_) b.nodata = nodata;
        s.nodata_ = nodata;
    } else {
        s.nodata_ = s.bands_.front().nodata;
    }
    return s;
}

int Scene::block_width() const {
    int widest = 1;
    for (const auto& b : bands_) {
        int bx = 0, by = 0;
        b.ds->GetRasterBand(b.index)->GetBlockSize(&bx, &by);
        widest = std::max(widest, bx);
    }
    return widest;
}

namespace {

// A band name as same_band_name compares it: no folder, no short extension, lower case.
std::string band_key(const std::string& name) {
    std::string n = to_lower(name.substr(name.find_last_of('/') + 1));
    if (const auto dot = n.rfind('.'); dot != std::string::npos && n.size() - dot <= 5) n.erase(dot);
    return n;
}

}  // namespace

bool same_band_name(const std::string& a, const std::string& b) {
    const std::string x = band_key(a), y = band_key(b);
    const std::string& lng = x.size() >= y.size() ? x : y;
    const std::string& sht = x.size() >= y.size() ? y : x;
    if (lng == sht) return true;
    return !sht.empty() && lng.compare(lng.size() - sht.size(), sht.size(), sht) == 0 &&
           !std::isalnum(static_cast<unsigned char>(lng[lng.size() - sht.size() - 1]));
}

Block Scene::read(const Window& w) const { return read_decimated(w, w.width, w.height); }

Block Scene::read_decimated(const Window& w, int bw, int bh) const {
    Block blk;
    blk.window = bw == w.width && bh == w.height ? w : Window{0, 0, bw, bh};
    blk.bands = band_count();
    blk.type = type_;
    const size_t n = static_cast<size_t>(bw) * bh;
    const int bytes = GDALGetDataTypeSizeBytes(type_);
    blk.data.resize(n * blk.bands * bytes);
    blk.valid.assign(n, 1);
    // Read runs of consecutive bands of one dataset in one RasterIO call.
    for (int b = 0; b < blk.bands;) {
        int e = b + 1;
        while (e < blk.bands && bands_[e].ds == bands_[b].ds && bands_[e].index == bands_[e - 1].index + 1) ++e;
        std::vector<int> map;
        for (int k = b; k < e; ++k) map.push_back(bands_[k].index);
        CPLErrorReset();
        if (bands_[b].ds->RasterIO(GF_Read, w.x, w.y, w.width, w.height, blk.data.data() + b * n * bytes,
                                   bw, bh, type_, e - b, map.data(), 0, 0, 0, nullptr) != CE_None)
            throw IoError("cannot read " + quote(name_) + ": " + gdal_message());
        b = e;
    }
    std::vector<std::optional<double>> nd;
    for (const auto& b : bands_) nd.push_back(b.nodata);
    switch (type_) {
        case GDT_Byte: validity_from_values(reinterpret_cast<const uint8_t*>(blk.data.data()), blk.bands, n, nd, blk.valid.data()); break;
        case GDT_UInt16: validity_from_values(reinterpret_cast<const uint16_t*>(blk.data.data()), blk.bands, n, nd, blk.valid.data()); break;
        case GDT_Int16: validity_from_values(reinterpret_cast<const int16_t*>(blk.data.data()), blk.bands, n, nd, blk.valid.data()); break;
        case GDT_UInt32: validity_from_values(reinterpret_cast<const uint32_t*>(blk.data.data()), blk.bands, n, nd, blk.valid.data()); break;
        case GDT_Int32: validity_from_values(reinterpret_cast<const int32_t*>(blk.data.data()), blk.bands, n, nd, blk.valid.data()); break;
        case GDT_Float32: validity_from_values(reinterpret_cast<const float*>(blk.data.data()), blk.bands, n, nd, blk.valid.data()); break;
        case GDT_Float64: validity_from_values(reinterpret_cast<const double*>(blk.data.data()), blk.bands, n, nd, blk.valid.data()); break;
        default: throw ConfigError("data type " + std::string(GDALGetDataTypeName(type_)) + " of " + quote(name_) + " is not supported");
    }
    if (alpha_) {
        std::vector<uint8_t> a(n);
        CPLErrorReset();
        if (alpha_->ds->GetRasterBand(alpha_->index)->RasterIO(GF_Read, w.x, w.y, w.width, w.height, a.data(),
                                                                bw, bh, GDT_Byte, 0, 0) != CE_None)
            throw IoError("cannot read " + quote(name_) + ": " + gdal_message());
        for (size_t i = 0; i < n; ++i)
            if (a[i] == 0) blk.valid[i] = 0;
    }
    return blk;
}

Scene Scene::warped_to(const Grid& target, const std::string& resampling) const {
    validate_resampling(resampling);
    Scene s = *this;
    std::map<GDALDataset*, DatasetPtr> warped;
    for (auto& b : s.bands_) {
        auto it = warped.find(b.ds.get());
        if (it == warped.end())
            it = warped.emplace(b.ds.get(), warp_onto(*b.ds, target, resampling, true, name_)).first;
        if (!s.alpha_) s.alpha_ = BandRef{it->second, it->second->GetRasterCount(), std::nullopt};
        b.ds = it->second;
    }
    s.grid_ = target;
    s.warped_ = true;
    return s;
}

AlignMode parse_align_mode(const std::string& text) {
    if (text == "warp") return AlignMode::Warp;
    if (text == "strict") return AlignMode::Strict;
    throw ConfigError("alignment " + quote(text) + " is not one of warp, strict");
}

std::vector<uint8_t> Label::read(const Window& w) const {
    const size_t n = static_cast<size_t>(w.pixels());
    std::vector<double> v(n);
    CPLErrorReset();
    if (ds->GetRasterBand(1)->RasterIO(GF_Read, w.x, w.y, w.width, w.height, v.data(), w.width, w.height,
                                       GDT_Float64, 0, 0) != CE_None)
        throw IoError("cannot read label " + quote(path) + ": " + gdal_message());
    std::vector<uint8_t> out(n);
    const bool nd_nan = nodata && std::isnan(*nodata);
    for (size_t i = 0; i < n; ++i) {
        const double x = v[i];
        if (nodata && (nd_nan ? std::isnan(x) : x == *nodata)) out[i] = 255;
        else if (std::isnan(x)) out[i] = 255;
        else out[i] = x == 0 ? 0 : 1;
    }
    return out;
}

Label open_label(const std::string& path, const Grid& grid, const std::string& role, const std::string& grid_of_what) {
    Label l;
    l.path = path;
    l.ds = open_raster(path);
    refuse_gcp_only(*l.ds, path);
    if (l.ds->GetRasterCount() != 1)
        throw ConfigError(role + " " + quote(path) + " has " + std::to_string(l.ds->GetRasterCount()) +
                          " bands; a single-band change mask is needed");
    Grid g = grid_of(*l.ds);
    const bool same_size = g.width == grid.width && g.height == grid.height;
    const bool ok = (g.has_geotransform && grid.has_geotransform) ? g.same_as(grid) : same_size;
    if (!ok)
        throw ConfigError(role + " " + quote(path) + " is not on " + grid_of_what + "'s grid: " + role + " is " +
                          g.describe() + ", " + grid_of_what + " is " + grid.describe());
    int has = 0;
    double nd = l.ds->GetRasterBand(1)->GetNoDataValue(&has);
    if (has) l.nodata = nd;
    return l;
}

namespace {
// Extent of `g` in the CRS of `ref`; false when it cannot be transformed.
bool extent_in(const Grid& g, const Grid& ref, std::array<double, 4>& out) {
    auto e = g.extent();
    if (g.same_crs(ref)) {
        out = e;
        return true;
    }
    OGRSpatialReference src, dst;
    if (src.importFromWkt(g.crs_wkt.c_str()) != OGRERR_NONE || dst.importFromWkt(ref.crs_wkt.c_str()) != OGRERR_NONE)
        return false;
    src.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
    dst.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
    std::unique_ptr<OGRCoordinateTransformation> ct(OGRCreateCoordinateTransformation(&src, &dst));
    if (!ct) return false;
    return ct->TransformBounds(e[0], e[1], e[2], e[3], &out[0], &out[1], &out[2], &out[3], 21) != 0;
}
}  // namespace

ScenePair open_pair(const SceneSpec& pre_spec, const SceneSpec& post_spec, const std::string& label_path,
                    const PairOptions& options, const RunContext& ctx) {
    validate_resampling(options.resampling);
    Scene pre = Scene::open(pre_spec, options.resampling, options.nodata);
    Scene post = Scene::open(post_spec, options.resampling, options.nodata);
    if (pre.band_count() != post.band_count())
        throw ConfigError("dates have different band counts: " + quote(pre.name()) + " has " +
                          std::to_string(pre.band_count()) + ", " + quote(post.name()) + " has " +
                          std::to_string(post.band_count()));
    if (pre.data_type() != post.data_type())
        throw ConfigError(std::string("dates have different data types: ") + quote(pre.name()) + " is " +
                          GDALGetDataTypeName(pre.data_type()) + ", " + quote(post.name()) + " is " +
                          GDALGetDataTypeName(post.data_type()));
    const Grid& g1 = pre.grid();
    const Grid& g2 = post.grid();
    if (!g1.same_as(g2)) {
        if (!g1.has_geotransform || !g2.has_geotransform) {
            if (g1.has_geotransform != g2.has_geotransform)
                throw ConfigError(quote(g1.has_geotransform ? pre.name() : post.name()) + " is georeferenced and " +
                                  quote(g1.has_geotransform ? post.name() : pre.name()) +
                                  " is not: the dates cannot be aligned");
            throw ConfigError("dates have different sizes and no georeferencing to align them: " + quote(pre.name()) +
                              " is " + g1.describe() + ", " + quote(post.name()) + " is " + g2.describe());
        }
        if (g1.crs_wkt.empty() != g2.crs_wkt.empty())
            throw ConfigError("only one date has a CRS: " + quote(pre.name()) + " is " + g1.describe() + ", " +
                              quote(post.name()) + " is " + g2.describe());
        std::array<double, 4> e2;
        if (extent_in(g2, g1, e2)) {
            const auto e1 = g1.extent();
            const bool overlap = e2[0] < e1[2] && e2[2] > e1[0] && e2[1] < e1[3] && e2[3] > e1[1];
            if (!overlap)
                throw ConfigError("dates do not overlap: " + quote(pre.name()) + " is " + g1.describe() + ", " +
                                  quote(post.name()) + " is " + g2.describe());
        }
        if (options.align == AlignMode::Strict)
            throw ConfigError("dates are on different grids (--align strict): " + quote(pre.name()) + " is " +
                              g1.describe() + ", " + quote(post.name()) + " is " + g2.describe());
        ctx.info("aligning " + quote(post.name()) + " (" + g2.describe() + ") onto date 1's grid (" + g1.describe() +
                 "), resampling " + options.resampling);
        post = post.warped_to(g1, options.resampling);
    }
    ScenePair pair{std::move(pre), std::move(post), std::nullopt};
    if (!label_path.empty()) pair.label = open_label(label_path, pair.pre.grid());
    return pair;
}

}  // namespace cdk::geo
