#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cdk/core/context.hpp"
#include "cdk/geo/quicklook.hpp"
#include "cdk/geo/raster.hpp"
#include "cdk/geo/scene.hpp"

namespace cdk::pipeline {

/// Options of cd-infer: a model bundle applied to a whole scene pair, window by window.
struct InferOptions {
    std::string model;             ///< model bundle (.cdm), or a TorchScript file with forward(pre, post) -> logits
    std::string op_origin;         ///< Origin-Partition two-pass instead of `model`: the origin bundle predicts each window's CAR
    std::vector<std::string> op_teachers;  ///< NAME=BUNDLE per CAR partition (small=a.cdm ...); the window's predicted CAR picks one
    std::vector<double> op_thresholds;     ///< CAR thresholds between the teachers; empty = from the teachers' bundles
    int bands = 0;                 ///< TorchScript model: bands per date (bundles carry their own)
    std::vector<double> mean;      ///< TorchScript model: per-band mean subtracted first (default 0)
    std::vector<double> std;       ///< TorchScript model: per-band divisor (default 1)
    std::string scene_norm = "none";  ///< TorchScript model: per-scene standardisation before mean/std (none | image | band)
    std::string pre;               ///< date 1 (SceneSpec text: a raster, `;`-separated band files, or a folder)
    std::string post;              ///< date 2, same forms
    std::string pairs;             ///< instead of pre/post: CSV scene,pre,post[,label]; `out` is then a folder
    std::string band_pattern;      ///< band file globs when a date is a folder ("B04,B03,B02")
    std::string out;               ///< change mask: UInt8, 0 no change, 1 change, 255 nodata (a folder with `pairs`)
    std::string prob;              ///< optional Float32 change probability raster (nodata -1); single scene
    bool with_prob = false;        ///< with `pairs`: also write OUT/<scene>_prob.tif
    std::string polygons;          ///< optional GeoPackage of change regions (area in m², mean probability); single scene
    bool with_polygons = false;    ///< with `pairs`: also write OUT/<scene>.gpkg
    double min_area_m2 = 0;        ///< leave out change regions smaller than this from the polygons
    int min_pixels = 0;            ///< and those of fewer pixels than this (cd-infer's default: 5)
    geo::QuicklookOptions quicklook;  ///< single scene: a quick-look PNG of date 2 with the changes (out empty: none)
    bool with_quicklook = false;   ///< with `pairs`: also write OUT/<scene>.png
    std::string shard;             ///< with `pairs`: "I/N" = every N-th scene from the I-th; empty = Slurm array or all
    bool resume = false;           ///< skip scenes whose requested outputs all exist (finished by an earlier run)
    double threshold = 0.5;        ///< change where the change probability is >= this
    bool threshold_from_model = false;  ///< use the bundle's validation-chosen threshold instead (metrics.best_threshold)
    /// The bundle's validation-chosen threshold when it has one (one bundle), else `threshold`:
    /// cd-infer's default.
    bool threshold_auto = false;
    /// Warn when a scene's bands look unlike the bundle's training data (names, statistics).
    bool check_bands = true;
    int tile_size = 0;             ///< window edge in pixels, 0 = automatic (see infer_scene)
    int overlap = -1;              ///< pixels shared by neighbouring windows, -1 = a quarter of the bundle's tile size (or of a smaller window)
    int batch_size = 0;            ///< windows per forward pass, 0 = automatic (about 4 x 256² pixels, at least 1, at most 4)
    int ram_mb = 1024;             ///< cap on read-ahead, row buffers and GDAL's block cache (column strips when needed)
    bool tta = false;              ///< average over the identity and horizontal/vertical flips
    std::vector<double> msi_scales;      ///< KD-MSI bundles: multiscale sigmoid inference scales (empty = 0.5,1,1.25,2)
    std::string msi_branch = "student";  ///< KD-MSI: student (sigmoid of its CAM) | teacher (plain multiscale CAM, the baseline)
    bool msi_gate = true;                ///< KD-MSI: windows the classifier calls unchanged become all "no change"
    bool msi_flip = true;                ///< KD-MSI: each scale also mirrored horizontally
    bool msi_window_norm = false;        ///< KD-MSI: each window's map divided by its maximum
    std::string tiles;             ///< instead of scenes: a tile manifest; each tile is one window (infer_tiles)
    bool tau_sweep = false;        ///< with `tiles`: print F1/IoU against the threshold on its pixel-labelled tiles; write nothing
    std::string device = "auto";   ///< auto | cpu | cuda[:N]
    std::string memory_format = "auto";  ///< auto | channels-last | contiguous (auto: the training rule)
    bool fold = true;                    ///< batch norm folded, sub-pixel upsampling (nn::prepare_for_inference)
    bool amp = false;                    ///< bfloat16 mixed precision (autocast): CUDA, or a CPU with AVX-512
    int threads = 0;               ///< intra-op threads, 0 = LibTorch's default
    geo::PairOptions pair;         ///< alignment of date 2, resampling, nodata override
    geo::WriteOptions write;       ///< format, creation options, overwrite
};

/// Cross-option checks.
void validate(const InferOptions& options);

/// Predict a change mask for a scene pair (or, with `pairs`, for every scene of this
/// shard, each into OUT/<scene>.tif; a scene that fails is reported and the others go on,
/// then the call throws naming the failures). Windows of `tile_size` with `overlap` are read
/// in a reader thread a few batches ahead, batched through the model, and centre-cropped:
/// each pixel takes the change probability of the window where it lies farthest from an
/// interior window border (no seams). Each finished row of windows is written by a writer
/// thread while the model goes on. Row buffers and GDAL's block cache are bounded by
/// `ram_mb`: a scene too wide for it is done in column strips, so memory depends on the
/// window, the batch and the cap, not on the scene's size. Without `tile_size`, a local
/// model (nn::ChangeModelImpl::local: the FC and ResNet-FPN families) mapping alone gets the
/// window edge, from the bundle's tile size up to 512, that computes the fewest pixels of
/// this scene (fewer pixels computed twice in the overlaps) and fits `ram_mb`; other models
/// (BIT, TorchScript) and Origin-Partition mode run at the bundle's tile size (256 if unknown).
/// Nodata in either date is nodata (255) in the output, and windows without valid pixels
/// are not run. The mask keeps date 1's grid, gets a colour table and a QGIS style beside
/// it; outputs appear only when complete. Returns the JSON summary (with `pairs`:
/// {"shard", "scenes": [per-scene summaries], "done", "skipped"}).
nlohmann::json infer_scene(const InferOptions& options, const RunContext& ctx = {});

/// A model over the tiles of a manifest (`tiles`), each tile one window, its image-level
/// label (the `changed` column) gating KD-MSI's map where it is known. Writes OUT as a tile
/// set whose labels are the thresholded maps (pseudo-masks: OUT/label/<id>.tif, UInt8 0/1,
/// 255 nodata; OUT/tiles.csv with the source's columns, `label` and `car` from the
/// pseudo-masks, `changed` kept; OUT/dataset.json), which cd-train-teacher trains on. With
/// `tau_sweep`, writes nothing and returns F1, IoU, precision and recall of the change class
/// against the tiles' pixel labels at thresholds 0.05 .. 0.95 (and the best one); the gate
/// then uses the predicted image label, as mapping a scene would. KD-MSI bundles map with
/// multiscale sigmoid inference, others as cd-infer maps a window. Returns the JSON summary.
nlohmann::json infer_tiles(const InferOptions& options, const RunContext& ctx = {});

}  // namespace cdk::pipeline
