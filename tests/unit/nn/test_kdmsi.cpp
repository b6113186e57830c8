// KD-MSI's model, objective and multiscale sigmoid inference (lib/nn/include/cdk/nn/kdmsi.hpp).
#include <catch2/catch.hpp>

#include "cdk/core/error.hpp"
#include "cdk/nn/kdmsi.hpp"

using namespace cdk::nn;

namespace {

ChangeModel cam_model(uint64_t seed, nlohmann::json extra = nlohmann::json::object()) {
    torch::manual_seed(seed);
    ModelOptions mo;
    mo.arch = "kd-msi-cam";
    mo.width = 4;
    mo.extra = std::move(extra);
    return create_model(mo);
}

// The 1x1 CAM convolution of one network ("teacher" or "student").
torch::Tensor cam_weight(ChangeModel& m, const std::string& net) {
    return m->named_parameters()[net + ".cam.weight"];
}

Batch labelled_batch(std::vector<int> changed) {
    Batch b;
    const auto n = int64_t(changed.size());
    b.pre = torch::randn({n, 3, 32, 32});
    b.post = torch::randn({n, 3, 32, 32});
    b.label = torch::full({n, 32, 32}, 255, torch::kInt64);
    for (int64_t i = 0; i < n; ++i) b.ids.push_back("t" + std::to_string(i)), b.car.push_back(0);
    b.changed = std::move(changed);
    return b;
}

bool all_zero_or_undefined(const std::vector<torch::Tensor>& params) {
    for (const auto& p : params)
        if (p.grad().defined() && p.grad().abs().sum().item<double>() != 0) return false;
    return true;
}

bool some_nonzero(const std::vector<torch::Tensor>& params) {
    for (const auto& p : params)
        if (p.grad().defined() && p.grad().abs().sum().item<double>() > 0) return true;
    return false;
}

std::vector<torch::Tensor> params_of(ChangeModel& m, const std::string& prefix) {
    std::vector<torch::Tensor> out;
    for (const auto& p : m->named_parameters())
        if (p.key().rfind(prefix, 0) == 0) out.push_back(p.value());
    return out;
}

}  // namespace

TEST_CASE("maxnorm: peak 1, zeros kept, an all-zero map stays 0", "[nn][kdmsi]") {
    auto x = torch::tensor({-2.f, 0.f, 1.f, 4.f}).view({1, 1, 2, 2});
    const auto y = maxnorm(torch::relu(x));
    CHECK(y.max().item<float>() == Approx(1.0).epsilon(1e-4));
    CHECK(y[0][0][0][0].item<float>() == 0.f);  // a negative activation
    CHECK(y[0][0][1][0].item<float>() == Approx(0.25).epsilon(1e-4));
    const auto z = maxnorm(torch::zeros({2, 1, 3, 3}));
    CHECK(z.eq(0).all().item<bool>());
    CHECK_FALSE(z.isnan().any().item<bool>());
    // Each map by its own peak.
    const auto two = maxnorm(torch::stack({torch::full({1, 2, 2}, 2.f), torch::full({1, 2, 2}, 8.f)}));
    CHECK(two.max().item<float>() == Approx(1.0).epsilon(1e-4));
    CHECK(two.min().item<float>() == Approx(1.0).epsilon(1e-4));
}

TEST_CASE("kd-msi-cam: CAMs at stride 16, image logit = mean teacher CAM, logits give sigmoid(F_S)",
          "[nn][kdmsi][models]") {
    auto m = cam_model(1);
    m->eval();
    torch::NoGradGuard no_grad;
    const auto a = torch::randn({2, 3, 40, 48}), b = torch::randn({2, 3, 40, 48});
    const auto out = m->forward(a, b);
    CHECK(out.logits.sizes() == torch::IntArrayRef({2, 2, 40, 48}));
    CHECK(out.cam.sizes() == torch::IntArrayRef({2, 1, 3, 3}));  // ceil(40/16) x ceil(48/16)
    CHECK(out.cam_teacher.sizes() == out.cam.sizes());
    CHECK(out.image_logits.sizes() == torch::IntArrayRef({2}));
    CHECK(torch::allclose(out.image_logits, out.cam_teacher.mean({1, 2, 3})));
    // The change class's softmax is sigmoid of the student's (upsampled) map.
    const auto p = torch::softmax(out.logits, 1).select(1, 1);
    CHECK(torch::allclose(p, torch::sigmoid(out.logits.select(1, 1) * 2), 1e-5, 1e-6));
    CHECK(m->local());  // its maps; the gate makes MSI non-local
    CHECK_THROWS_AS(cam_model(1, {{"student_fusion", "sum"}}), cdk::ConfigError);
    CHECK_THROWS_AS(cam_model(1, {{"stages", 5}}), cdk::ConfigError);
    // cat doubles the CAM convolution's input channels; abs does not.
    auto cat = cam_model(1, {{"student_fusion", "cat"}});
    CHECK(cam_weight(cat, "student").size(1) == 2 * cam_weight(cat, "teacher").size(1));
    CHECK(cam_weight(m, "student").size(1) == cam_weight(m, "teacher").size(1));
}

TEST_CASE("KD-MSI loss: the teacher's target carries no gradient, the student learns only from the KD term",
          "[nn][kdmsi][objective]") {
    auto m = cam_model(2);
    KdMsiObjective obj(m, KdMsiOptions{}, nullptr);
    obj.train();
    const Batch b = labelled_batch({1, 0, 1, 1});
    Loss l = obj.loss(b, {});
    REQUIRE(l.terms.size() == 2);
    CHECK(l.terms[0].first == "teacher_cls");
    CHECK(l.terms[1].first == "kd");
    CHECK(l.total.item<double>() == Approx(l.terms[0].second.item<double>() + 10 * l.terms[1].second.item<double>()));
    // The KD term alone: gradients reach the student only.
    l.terms[1].second.backward(torch::Tensor(), /*retain_graph=*/true);
    CHECK(all_zero_or_undefined(params_of(m, "teacher.")));
    CHECK(some_nonzero(params_of(m, "student.")));
    for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
    // The classification term alone: the teacher only (the student has none by default).
    l.terms[0].second.backward();
    CHECK(all_zero_or_undefined(params_of(m, "student.")));
    CHECK(some_nonzero(params_of(m, "teacher.")));
    // Pixel labels are never read: any label gives the same loss.
    torch::manual_seed(5);
    Batch b2 = b;
    b2.label = torch::randint(0, 2, b.label.sizes(), torch::kInt64);
    m->eval();  // no dropout or batch statistics between the two passes
    CHECK(obj.loss(b, {}).total.item<double>() == obj.loss(b2, {}).total.item<double>());
    // An unchanged tile's target is all 0: with every tile unchanged, the KD term is the
    // mean of sigmoid(F_S)^2.
    Batch none = labelled_batch({0, 0});
    const auto out = m->forward(none.pre, none.post);
    const double expect = torch::sigmoid(out.cam).pow(2).mean().item<double>();
    CHECK(obj.loss(none, {}).terms[1].second.item<double>() == Approx(expect).epsilon(1e-5));
    // Unknown image labels are refused, naming the tile.
    CHECK_THROWS_WITH(obj.loss(labelled_batch({1, -1}), {}), Catch::Contains("t1"));
    // The student's own classification term, when asked.
    KdMsiOptions with_cls;
    with_cls.student_cls_weight = 0.5;
    KdMsiObjective obj2(m, with_cls, nullptr);
    CHECK(obj2.loss(b, {}).terms.size() == 3);
    KdMsiOptions bad;
    bad.select = "f1";
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    // Another architecture is refused.
    ModelOptions fc;
    fc.width = 4;
    CHECK_THROWS_AS(KdMsiObjective(create_model(fc), KdMsiOptions{}, nullptr), cdk::ConfigError);
}

TEST_CASE("MSI: a zero CAM maps to sigmoid(0) everywhere, flips are symmetric, unchanged windows are background",
          "[nn][kdmsi][predictor]") {
    auto m = cam_model(3, {{"teacher_fusion", "abs"}});
    m->eval();
    const auto a = torch::randn({2, 3, 32, 40}), b = torch::randn({2, 3, 32, 40});
    const auto valid = torch::ones({2, 32, 40}, torch::kBool);
    MsiOptions no_gate;
    no_gate.gate = false;
    {
        torch::NoGradGuard no_grad;
        cam_weight(m, "student").zero_();
    }
    MsiPredictor constant(m, torch::kCPU, false, no_gate);
    const auto p0 = constant.predict(a, b, valid);
    CHECK(p0.sizes() == torch::IntArrayRef({2, 32, 40}));
    CHECK(torch::allclose(p0, torch::full_like(p0, 0.5)));

    auto m2 = cam_model(4, {{"teacher_fusion", "abs"}});
    m2->eval();
    MsiPredictor msi(m2, torch::kCPU, false, no_gate);
    const auto p = msi.predict(a, b, valid);
    const auto pf = msi.predict(a.flip({3}), b.flip({3}), valid).flip({2});
    CHECK(torch::allclose(p, pf, 1e-5, 1e-6));
    CHECK(p.min().item<float>() >= 0);
    CHECK(p.max().item<float>() <= 1);
    CHECK(msi.memory_factor() == 4.0);  // the largest scale, 2, computes 4x the pixels
    CHECK_FALSE(msi.local());

    // The gate: with abs fusion and a CAM weight of -1 the teacher's map is <= 0 wherever
    // the dates differ, so every window is called unchanged and becomes background.
    {
        torch::NoGradGuard no_grad;
        cam_weight(m2, "teacher").fill_(-1);
    }
    MsiPredictor gated(m2, torch::kCPU, false, MsiOptions{});
    CHECK(gated.predict(a, b, valid).eq(0).all().item<bool>());
    CHECK((gated.last_image_logits() < 0).all().item<bool>());
    CHECK(gated.summary()["windows_gated"] == 2);
    // Known labels override the prediction (pseudo-masks of labelled training tiles).
    gated.set_known_labels({1, -1});
    const auto pk = gated.predict(a, b, valid);
    CHECK(torch::allclose(pk[0], p[0], 1e-5, 1e-6));
    CHECK(pk[1].eq(0).all().item<bool>());
    {
        torch::NoGradGuard no_grad;
        cam_weight(m2, "teacher").fill_(1);
    }
    MsiPredictor open(m2, torch::kCPU, false, MsiOptions{});
    CHECK(torch::allclose(open.predict(a, b, valid), p, 1e-5, 1e-6));

    // The teacher branch: max-normalised ReLU maps, within [0, 1].
    MsiOptions teacher = no_gate;
    teacher.branch = MsiBranch::kTeacher;
    MsiPredictor cam(m2, torch::kCPU, false, teacher);
    const auto pt = cam.predict(a, b, valid);
    CHECK(pt.min().item<float>() >= 0);
    CHECK(pt.max().item<float>() <= 1.0001);
    MsiOptions bad;
    bad.scales = {0.5, 0};
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
}
