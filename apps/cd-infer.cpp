// cd-infer: apply a model bundle to a whole scene pair and write a georeferenced change mask.
#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "cdk/core/error.hpp"
#include "cdk/core/fs.hpp"
#include "cdk/pipeline/infer.hpp"
#include "common/common.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Apply a model bundle (.cdm) to a scene pair window by window and write a change mask "
        "(UInt8: 0 no change, 1 change, 255 nodata) on date 1's grid, with a colour table and a "
        "QGIS style beside it",
        "cd-infer"};
    cdk::pipeline::InferOptions opt;
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-infer --model model.cdm --pre pre.tif --post post.tif --out change.tif --polygons change.gpkg --quicklook change.png");
    std::string align = "warp";
    std::optional<double> nodata;
    app.add_option("-m,--model", opt.model,
                   "Model bundle (.cdm) from cd-train-teacher or cd-distill, or a TorchScript file (torch.jit.save) "
                   "whose forward(pre, post) returns logits [N, 2, H, W]");
    app.add_option("--op-origin", opt.op_origin,
                   "Origin-Partition two-pass inference instead of --model: this origin bundle predicts each "
                   "window's CAR, which picks the teacher that predicts it");
    app.add_option("--op-teachers", opt.op_teachers, "With --op-origin: NAME=BUNDLE per CAR partition, e.g. "
                                                     "small=s.cdm,medium=m.cdm,large=l.cdm")
        ->delimiter(',');
    app.add_option("--op-thresholds", opt.op_thresholds,
                   "With --op-origin: CAR thresholds between the teachers (default: from their bundles)")
        ->delimiter(',');
    app.add_option("--bands", opt.bands, "TorchScript model: bands of each date")->check(CLI::Range(1, 1024));
    app.add_option("--mean", opt.mean, "TorchScript model: per-band mean subtracted from the input, e.g. 90,80,70")
        ->delimiter(',');
    app.add_option("--std", opt.std, "TorchScript model: per-band divisor applied after the mean")->delimiter(',');
    app.add_option("--scene-norm", opt.scene_norm,
                   "TorchScript model: standardise each date by its own statistics before --mean/--std: none, image "
                   "(over all bands) or band (per band); a bundle records its own")
        ->check(CLI::IsMember({"none", "image", "band"}));
    app.add_option("--pre", opt.pre, "Date 1: a raster, band files separated by ';', or a folder with --band-pattern");
    app.add_option("--post", opt.post, "Date 2, same forms as --pre");
    app.add_option("--pairs", opt.pairs,
                   "Many scenes: CSV with columns scene,pre,post[,label]; --out is then a folder of <scene>.tif");
    app.add_flag("--with-prob", opt.with_prob, "With --pairs: also write OUT/<scene>_prob.tif");
    app.add_option("--polygons", opt.polygons,
                   "Also write the change regions as polygons (GeoPackage: id, pixels, area_m2, mean_prob)");
    app.add_flag("--with-polygons", opt.with_polygons, "With --pairs: also write OUT/<scene>.gpkg");
    cdk::apps::add_quicklook_flags(app, opt.quicklook);
    app.add_flag("--with-quicklook", opt.with_quicklook, "With --pairs: also write OUT/<scene>.png");
    std::string min_area = "5px";
    cdk::apps::add_min_area_flag(app, min_area);
    app.add_option("--shard", opt.shard,
                   "With --pairs: process scenes I, I+N, I+2N ... of the list (I/N, 0-based); default: the Slurm "
                   "array task (SLURM_ARRAY_TASK_ID/COUNT) or every scene");
    app.add_flag("--resume", opt.resume, "Skip scenes whose change mask exists (finished by an earlier run)");
    app.add_option("--band-pattern", opt.band_pattern, "Band file globs when a date is a folder, e.g. B04,B03,B02");
    app.add_option("-o,--out", opt.out,
                   "Output change mask (GeoTIFF or COG), or a folder with --pairs; with --tiles a new tile set of pseudo-masks");
    app.add_option("--tiles", opt.tiles,
                   "Map the tiles of a manifest (tiles.csv) instead of scenes, each tile one window: writes --out as a tile "
                   "set whose labels are the maps (pseudo-masks for cd-train-teacher; a tile's `changed` = 0 gates KD-MSI's "
                   "map to no change), or with --tau-sweep prints F1/IoU against the threshold");
    app.add_flag("--tau-sweep", opt.tau_sweep,
                 "With --tiles: score the maps against the tiles' pixel labels at thresholds 0.05 .. 0.95 and print the "
                 "table; writes nothing");
    app.add_option("--msi-scales", opt.msi_scales,
                   "KD-MSI bundles: the scales of multiscale sigmoid inference (default 0.5,1,1.25,2)")
        ->delimiter(',');
    app.add_option("--msi-branch", opt.msi_branch,
                   "KD-MSI bundles: student (sigmoid of its CAM) or teacher (plain multiscale CAM of the classifier, "
                   "max-normalised; the no-distillation baseline)")
        ->capture_default_str()
        ->check(CLI::IsMember({"student", "teacher"}));
    app.add_flag("!--no-msi-gate", opt.msi_gate,
                 "KD-MSI bundles: keep the map of windows the classifier calls unchanged (default: all no change)");
    app.add_flag("!--no-msi-flip", opt.msi_flip, "KD-MSI bundles: leave out the mirrored pass of each scale");
    app.add_flag("--msi-window-norm", opt.msi_window_norm,
                 "KD-MSI bundles: divide each window's map by its maximum (a relative map, as the teacher's target)");
    app.add_option("--prob", opt.prob, "Also write the change probability (Float32, nodata -1) here");
    std::string threshold = "auto";
    app.add_option("--threshold", threshold,
                   "Change where the change probability is at least this; 'model' = the threshold the bundle's "
                   "training chose on its validation tiles (an error when it has none); 'auto' = that one when the "
                   "bundle has it, else 0.5")
        ->capture_default_str();
    app.add_flag("!--no-band-check", opt.check_bands,
                 "Do not compare the scene's band names and statistics with the bundle's training data");
    app.add_option("--tile-size", opt.tile_size, "Window edge in pixels; 0 = automatic: for fully convolutional models the edge up to 512 that computes the fewest pixels of the scene (at least the bundle's training tile size), otherwise the bundle's tile size")
        ->capture_default_str()
        ->check(CLI::Range(0, 8192));
    app.add_option("--overlap", opt.overlap, "Pixels shared by neighbouring windows; -1 = a quarter of the bundle's tile size (or of a smaller window)")
        ->capture_default_str()
        ->check(CLI::Range(-1, 8191));
    app.add_option("--batch-size", opt.batch_size, "Windows per forward pass; 0 = automatic (about the pixels of four 256-px windows: 4 up to 256 px, 1 from 363 px)")
        ->capture_default_str()
        ->check(CLI::Range(0, 4096));
    app.add_option("--ram", opt.ram_mb,
                   "Memory cap in MB for read-ahead, row buffers and GDAL's block cache; wider scenes go in column strips")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 24));
    app.add_option("--memory-format", opt.memory_format,
                   "auto, channels-last or contiguous (auto: channels-last on CPU from model width 16)")
        ->capture_default_str();
    app.add_flag("!--no-fold", opt.fold,
                 "Run the layers as trained instead of batch norm folded into the convolutions and "
                 "sub-pixel upsampling (slower; the same output to float rounding)");
    app.add_flag("--amp", opt.amp,
                 "bfloat16 mixed precision: convolutions in bfloat16 (CUDA, or a CPU with AVX-512; several "
                 "times faster where the CPU has AMX), probabilities within ~1e-2 of float32");
    app.add_flag("--tta", opt.tta, "Average over horizontal and vertical flips (3x the work)");
    app.add_option("--device", opt.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
    app.add_option("--align", align, "Date 2 on another grid: warp it onto date 1's, or refuse (strict)")
        ->capture_default_str()
        ->check(CLI::IsMember({"warp", "strict"}));
    app.add_option("-r,--resampling", opt.pair.resampling, "Resampling for alignment and band stacking")
        ->capture_default_str();
    app.add_option("--nodata", nodata, "Nodata value of both dates (overrides the files')");
    cdk::apps::add_write_flags(app, opt.write, "Output format", "Replace existing outputs");
    CDK_PARSE(app, argc, argv);

    common.memory_options = "--ram, --batch-size or --tile-size";
    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        cdk::apps::parse_min_area(min_area, opt.min_area_m2, opt.min_pixels);
        opt.pair.align = cdk::geo::parse_align_mode(align);
        opt.pair.nodata = nodata;
        opt.threads = common.threads;
        if (threshold == "auto") {
            opt.threshold_auto = true;
        } else if (threshold == "model") {
            opt.threshold_from_model = true;
        } else if (!cdk::parse_number(threshold, opt.threshold)) {
            throw cdk::ConfigError("--threshold " + cdk::quote(threshold) + " is neither a number, 'auto' nor 'model'");
        }
        if (!opt.tiles.empty()) {
            cdk::apps::print_result(cdk::pipeline::infer_tiles(opt, ctx));
            return;
        }
        if (opt.tau_sweep) throw cdk::ConfigError("--tau-sweep goes with --tiles MANIFEST");
        auto summary = cdk::pipeline::infer_scene(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
