#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/geo/raster.hpp"

namespace cdk::geo {

/// How a scene is given: one raster (any GDAL path), or band files stacked onto the
/// finest of their grids, the first among equals (Sentinel-2 style: 10/20/60 m files land
/// on the 10 m grid), optionally with a band selection.
struct SceneSpec {
    std::vector<std::string> files;  ///< one multi-band raster, or several single-band files
    std::vector<int> bands;          ///< 1-based bands to keep, in order (empty = all)
    std::vector<std::string> names;  ///< band names from --band-pattern tokens (else derived)

    /// Parse "a.tif", "b02.tif;b03.tif;b04.tif", or a folder with `band_pattern`
    /// ("B04,B03,B02": one glob per band, `*TOKEN*` when it has no wildcard, each must
    /// match exactly one file). Relative paths are taken from `base_dir`.
    static SceneSpec parse(const std::string& text, const std::string& band_pattern = "",
                           const std::string& base_dir = "");
    /// Readable form for messages.
    std::string describe() const;
};

/// Parse a 1-based band list "4,3,2"; throws ConfigError naming the text.
std::vector<int> parse_band_list(const std::string& text);

/// Resampling method names GDAL accepts (near, bilinear, cubic, cubicspline, lanczos,
/// average, mode); throws ConfigError for others.
void validate_resampling(const std::string& name);

/// A block of pixels read from a scene: band-sequential values in the scene's data type,
/// and a validity mask (1 = valid, 0 = nodata).
struct Block {
    Window window;                 ///< where it was read
    int bands = 0;                 ///< band count
    GDALDataType type = GDT_Byte;  ///< data type of `data`
    std::vector<uint8_t> data;     ///< bands x height x width values of `type`
    std::vector<uint8_t> valid;    ///< height x width, 1 where the pixel holds data

    /// Bytes per value.
    int value_bytes() const { return GDALGetDataTypeSizeBytes(type); }
    /// Value of band b (0-based) at (col, row) of the block, as double.
    double value(int b, int col, int row) const;
};

/// An opened scene: bands on one grid, read block by block, never loaded whole.
class Scene {
public:
    /// Open a scene; band files are warped onto the finest grid among them (first among
    /// equals) when their grid differs (resampling as given). `nodata` overrides the files'.
    static Scene open(const SceneSpec& spec, const std::string& resampling = "bilinear",
                      std::optional<double> nodata = std::nullopt);

    /// The scene's grid.
    const Grid& grid() const { return grid_; }
    /// Number of bands.
    int band_count() const { return static_cast<int>(bands_.size()); }
    /// Data type of the values (the widest of the bands' types).
    GDALDataType data_type() const { return type_; }
    /// Nodata value of the bands (the override, or the first band's), if any.
    std::optional<double> nodata() const { return nodata_; }
    /// Band names (descriptions, file names or "B1" ...).
    const std::vector<std::string>& band_names() const { return names_; }
    /// What it was opened from, for messages.
    const std::string& name() const { return name_; }
    /// Whether it was warped onto another grid.
    bool warped() const { return warped_; }
    /// Widest storage block among the bands, in pixels: the scene's width for a striped
    /// file, where reading any window decodes whole rows.
    int block_width() const;

    /// Read a window of every band and its validity. A pixel is nodata when every band that
    /// has a nodata value holds it, or when it falls outside the data after warping.
    Block read(const Window& w) const;
    /// Read window `w` decimated to `width` x `height` pixels (nearest neighbour, from
    /// overviews where the files have them), for pictures; the block's window is then
    /// {0, 0, width, height}.
    Block read_decimated(const Window& w, int width, int height) const;

    /// This scene warped onto `target` (CRS, geotransform and size of another scene).
    /// Pixels outside this scene's footprint become invalid.
    Scene warped_to(const Grid& target, const std::string& resampling) const;

private:
    struct BandRef {
        DatasetPtr ds;
        int index = 1;
        std::optional<double> nodata;
    };
    Grid grid_;
    std::vector<BandRef> bands_;
    std::optional<BandRef> alpha_;  // validity band added by warping
    GDALDataType type_ = GDT_Byte;
    std::optional<double> nodata_;
    std::vector<std::string> names_;
    std::string name_;
    bool warped_ = false;
};

/// Whether two band names can name the same band, case aside: equal, or one ends with the
/// other after a separator ("B04" and "T32TQM_20200101_B04.jp2", "red" and "Red"). A folder
/// and a file extension (up to 4 characters) are left out first.
bool same_band_name(const std::string& a, const std::string& b);

/// How date 2 is brought onto date 1's grid.
enum class AlignMode {
    Warp,   ///< warp date 2 onto date 1's grid when CRS, geotransform or size differ
    Strict  ///< refuse a pair whose grids differ
};

/// Parse "warp" or "strict".
AlignMode parse_align_mode(const std::string& text);

/// Options for opening a scene pair.
struct PairOptions {
    AlignMode align = AlignMode::Warp;      ///< what to do when the grids differ
    std::string resampling = "bilinear";    ///< resampling for warping and band stacking
    std::optional<double> nodata;           ///< nodata override for both dates
};

/// A label raster on date 1's grid: 0 = no change, its nodata value = unknown, else change.
struct Label {
    DatasetPtr ds;                   ///< the label dataset
    std::optional<double> nodata;    ///< its nodata value
    std::string path;                ///< where it came from
    /// Read a window as 0 = no change, 1 = change, 255 = unknown.
    std::vector<uint8_t> read(const Window& w) const;
};

/// Two dates on one grid, with an optional label.
struct ScenePair {
    Scene pre;                   ///< date 1, whose grid is the pair's grid
    Scene post;                  ///< date 2, on date 1's grid
    std::optional<Label> label;  ///< change label on date 1's grid
    /// The pair's grid.
    const Grid& grid() const { return pre.grid(); }
};

/// Open and check a pair: same band count, georeferencing usable (not GCP-only), overlap,
/// date 2 aligned per options, label on date 1's grid. Throws ConfigError/IoError naming
/// the culprit.
ScenePair open_pair(const SceneSpec& pre, const SceneSpec& post, const std::string& label_path,
                    const PairOptions& options, const RunContext& ctx = {});

/// Open a single-band label and check that it lies on `grid`. Messages call the raster
/// `role` and the grid's owner `grid_of_what` ("prediction", "the reference" in cd-eval).
Label open_label(const std::string& path, const Grid& grid, const std::string& role = "label",
                 const std::string& grid_of_what = "date 1");

}  // namespace cdk::geo
