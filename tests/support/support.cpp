#include "support/support.hpp"

#include <ogr_spatialref.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace cdk::test {

namespace {
// Tests check GDAL's messages through exceptions; keep its default handler off stderr.
const bool kQuietGdal = [] {
    CPLSetErrorHandler(CPLQuietErrorHandler);
    return true;
}();
}  // namespace

TempDir::TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "cdk-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
}

namespace {
std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}
}  // namespace

CommandResult run_shell(const std::string& command) {
    TempDir tmp;
    const std::string out = tmp / "out", err = tmp / "err";
    const std::string full = "(" + command + ") >" + shell_quote(out) + " 2>" + shell_quote(err) + " </dev/null";
    int status = std::system(full.c_str());
    CommandResult r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

CommandResult run_tool(const std::string& tool, const std::vector<std::string>& args) {
    std::string cmd = shell_quote(std::string(CDK_BIN_DIR) + "/" + tool);
    for (const auto& a : args) cmd += " " + shell_quote(a);
    return run_shell(cmd);
}

std::optional<std::string> shared_data(const std::string& relative) {
    std::string p = std::string(CDK_SHARED_DATA) + "/" + relative;
    if (fs::exists(p)) return p;
    return std::nullopt;
}

void make_raster(const std::string& path, const RasterSpec& spec,
                 const std::function<double(int, int, int)>& value) {
    geo::ensure_gdal_registered();
    auto* drv = GetGDALDriverManager()->GetDriverByName("GTiff");
    GDALDatasetUniquePtr ds(drv->Create(path.c_str(), spec.width, spec.height, spec.bands, spec.type, nullptr));
    if (!ds) throw std::runtime_error("cannot create test raster " + path);
    if (spec.georeferenced) {
        double gt[6];
        std::copy(spec.gt.begin(), spec.gt.end(), gt);
        ds->SetGeoTransform(gt);
        if (spec.epsg) {
            OGRSpatialReference srs;
            srs.importFromEPSG(spec.epsg);
            ds->SetSpatialRef(&srs);
        }
    }
    std::vector<double> buf(static_cast<size_t>(spec.width) * spec.height);
    for (int b = 1; b <= spec.bands; ++b) {
        for (int y = 0; y < spec.height; ++y)
            for (int x = 0; x < spec.width; ++x) buf[y * spec.width + x] = value(b, x, y);
        auto* band = ds->GetRasterBand(b);
        if (spec.nodata) band->SetNoDataValue(*spec.nodata);
        if (band->RasterIO(GF_Write, 0, 0, spec.width, spec.height, buf.data(), spec.width,
                           spec.height, GDT_Float64, 0, 0) != CE_None)
            throw std::runtime_error("cannot write test raster " + path);
    }
}

std::vector<double> read_band(const std::string& path, int band) {
    geo::ensure_gdal_registered();
    GDALDatasetUniquePtr ds(GDALDataset::Open(path.c_str(), GDAL_OF_RASTER));
    if (!ds) throw std::runtime_error("cannot open " + path);
    const int w = ds->GetRasterXSize(), h = ds->GetRasterYSize();
    std::vector<double> buf(static_cast<size_t>(w) * h);
    if (ds->GetRasterBand(band)->RasterIO(GF_Read, 0, 0, w, h, buf.data(), w, h, GDT_Float64, 0, 0) != CE_None)
        throw std::runtime_error("cannot read " + path);
    return buf;
}

bool exists(const std::string& path) { return fs::exists(path); }

std::vector<std::string> list_dir(const std::string& path) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace cdk::test
