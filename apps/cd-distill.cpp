// cd-distill: distil teacher models into one student (MTKD: CAR-specialised teachers from
// Origin-Partition, JL1-CD paper), HiCD (a degraded date) and KD-MSI (image-level labels).
#include <CLI/CLI.hpp>

#include "cdk/pipeline/distill.hpp"
#include "common/common.hpp"
#include "common/train_flags.hpp"

int main(int argc, char** argv) {
    CLI::App app{
        "Distil teachers into one student model bundle. mtkd: the Origin-Partition teachers "
        "(one per CAR range) guide a student, each training sample by the teacher of its CAR: "
        "loss = task loss + kd-weight * MSE(student logits, teacher logits) [+ KL term]. hicd: a "
        "teacher trained on clean pairs guides a student that sees one date degraded (--degrade): "
        "loss = task loss + weighted self-, cross- and global-correlation terms. kd-msi: from image-level "
        "labels only (tiles.csv `changed`), a CAM classifier (teacher) and a CAM student train together: "
        "loss = BCE(mean F_T, y) + w * MSE(sigmoid(F_S), maxnorm(ReLU(F_T)) * y) (docs/methods.md)",
        "cd-distill"};
    cdk::pipeline::DistillOptions opt;
    opt.train.model.arch.clear();  // the student's architecture is --student-init's unless --arch says otherwise
    cdk::apps::CommonFlags common;
    cdk::apps::add_common_flags(app, common);
    cdk::apps::set_footer(app, "cd-distill --method mtkd --teachers small=s.cdm,large=l.cdm --train parts/origin.csv --val parts/val.csv --out student.cdm");
    cdk::apps::TrainFlags flags;
    cdk::apps::add_train_flags(app, opt.train, flags, "--student-init");
    app.add_option("--method", opt.method, "Distillation method: mtkd, hicd or kd-msi")
        ->capture_default_str();
    app.add_option("--teachers", opt.mtkd.teachers,
                   "mtkd: teacher bundles per CAR partition: NAME=BUNDLE,... e.g. small=s.cdm,medium=m.cdm,large=l.cdm")
        ->delimiter(',');
    app.add_option("--thresholds", opt.mtkd.thresholds,
                   "CAR thresholds between the teachers (default: those their bundles were partitioned with)")
        ->delimiter(',');
    app.add_option("--kd-weight", opt.mtkd.kd.weight, "Weight (lambda) of MSE(student logits, teacher logits)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--kd-temperature", opt.mtkd.kd.temperature, "Temperature of the KL term")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--kd-kl-weight", opt.mtkd.kd.kl_weight, "Weight of T^2 * KL(teacher || student) at that temperature")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--teacher", opt.hicd.teacher, "hicd: the teacher bundle, trained on clean pairs (frozen)");
    app.add_option("--hicd-self", opt.hicd.self_weight, "hicd: weight of the self-correlation term")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--hicd-cross", opt.hicd.cross_weight, "hicd: weight of the cross-correlation term (date 1 x date 2)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--hicd-global", opt.hicd.global_weight, "hicd: weight of the sample x sample correlation term")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--feature-mse", opt.hicd.feature_mse_weight,
                   "hicd: weight of plain feature MSE against the teacher (the baseline; same architecture and width)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--hicd-pool", opt.hicd.pool, "hicd: feature positions per side after pooling")
        ->capture_default_str()
        ->check(CLI::Range(2, 32));
    app.add_option("--hicd-depths", opt.hicd.depths, "hicd: the deepest feature levels the terms use")
        ->capture_default_str()
        ->check(CLI::Range(1, 16));
    app.add_option("--kdmsi-weight", opt.kdmsi.kd_weight, "kd-msi: weight w of the student's term")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--kdmsi-student-cls", opt.kdmsi.student_cls_weight,
                   "kd-msi: weight of a classification term for the student too (the authors use none)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--kdmsi-loss", opt.kdmsi.kd_loss,
                   "kd-msi: the student's term: mse (the authors': MSE(sigmoid(F_S), target)) or bce (soft-target "
                   "logistic loss on F_S)")
        ->capture_default_str()
        ->check(CLI::IsMember({"mse", "bce"}));
    app.add_option("--select", opt.kdmsi.select,
                   "kd-msi: choose the best epoch by image-level validation accuracy (image), or by pixel F1 when the "
                   "validation tiles have pixel labels (pixel)")
        ->capture_default_str()
        ->check(CLI::IsMember({"image", "pixel"}));
    CDK_PARSE(app, argc, argv);

    common.memory_options = "--batch-size or --crop";
    return cdk::apps::run_guarded(common, [&](const cdk::RunContext& ctx) {
        cdk::apps::finish_train_flags(opt.train, flags, common);
        auto summary = cdk::pipeline::distill_model(opt, ctx);
        cdk::apps::print_result(summary);
    });
}
