#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cdk/geo/raster.hpp"

namespace cdk::test {

/// A fresh temporary folder, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    /// The folder.
    const std::string& path() const { return path_; }
    /// A path inside the folder.
    std::string operator/(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

/// What a program run printed and returned.
struct CommandResult {
    int rc = -1;      ///< exit code
    std::string out;  ///< stdout
    std::string err;  ///< stderr
};

/// Run one of the built programs (apps/<tool>) with arguments; no shell is involved.
CommandResult run_tool(const std::string& tool, const std::vector<std::string>& args);

/// Run any command line through /bin/sh.
CommandResult run_shell(const std::string& command);

/// Path of a file under ../shared/data, or nullopt (the caller WARNs and skips) when absent.
std::optional<std::string> shared_data(const std::string& relative);

/// Description of a test raster.
struct RasterSpec {
    int width = 16;                                        ///< columns
    int height = 16;                                       ///< rows
    int bands = 1;                                         ///< band count
    GDALDataType type = GDT_Byte;                          ///< data type
    int epsg = 32633;                                      ///< CRS, 0 for none
    std::array<double, 6> gt{500000, 10, 0, 5000000, 0, -10};  ///< geotransform
    bool georeferenced = true;                             ///< write gt and CRS
    std::optional<double> nodata;                          ///< nodata value for every band
};

/// Write a GeoTIFF whose pixel (band, x, y) holds value(band, x, y).
void make_raster(const std::string& path, const RasterSpec& spec,
                 const std::function<double(int band, int x, int y)>& value);

/// Read one band of a raster into doubles (row-major).
std::vector<double> read_band(const std::string& path, int band = 1);

/// Whether a file or folder exists.
bool exists(const std::string& path);

/// Names in a folder (not recursive), sorted; hidden ones included.
std::vector<std::string> list_dir(const std::string& path);

}  // namespace cdk::test
