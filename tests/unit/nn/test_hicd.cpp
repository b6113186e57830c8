// HiCD's correlation terms and objective (lib/nn/include/cdk/nn/hicd.hpp).
#include <catch2/catch.hpp>

#include "cdk/core/error.hpp"
#include "cdk/nn/hicd.hpp"

using namespace cdk::nn;

namespace {

ChangeModel hicd_model(uint64_t seed, int width = 4) {
    torch::manual_seed(seed);
    ModelOptions mo;
    mo.arch = "fc-siam-diff";
    mo.width = width;
    auto m = create_model(mo);
    m->eval();
    return m;
}

Batch clean_batch(int64_t n) {
    Batch b;
    b.pre = torch::randn({n, 3, 32, 32});
    b.post = torch::randn({n, 3, 32, 32});
    b.label = torch::randint(0, 2, {n, 32, 32}, torch::kInt64);
    for (int64_t i = 0; i < n; ++i) b.ids.push_back(std::to_string(i)), b.car.push_back(0);
    b.pre_clean = b.pre.clone();
    b.post_clean = b.post.clone();
    return b;
}

Bundle teacher_bundle(const ChangeModel& m) {
    Bundle b;
    b.model = m;
    return b;
}

double term(const Loss& l, const std::string& name) {
    for (const auto& [n, v] : l.terms)
        if (n == name) return v.item<double>();
    FAIL("no loss term " << name);
    return 0;
}

}  // namespace

TEST_CASE("correlation matrices: shapes, pooling, cosine values", "[nn][hicd]") {
    const auto f = torch::randn({2, 8, 40, 24});
    const auto p = pooled_positions(f, 16);
    CHECK(p.sizes() == torch::IntArrayRef({2, 8, 16 * 16}));
    CHECK(torch::allclose(p.norm(2, 1), torch::ones({2, 256}), 1e-4, 1e-4));
    const auto s = self_correlation(f, 16);
    CHECK(s.sizes() == torch::IntArrayRef({2, 256, 256}));
    CHECK(torch::allclose(s.diagonal(0, 1, 2), torch::ones({2, 256}), 1e-4, 1e-4));  // cos(x, x) = 1
    // Small maps are not pooled up.
    CHECK(self_correlation(torch::randn({1, 4, 5, 7}), 16).sizes() == torch::IntArrayRef({1, 35, 35}));
    const auto c = cross_correlation(f, f * 3.0, 16);  // scale does not matter: cosines
    CHECK(torch::allclose(c, s, 1e-4, 1e-4));
    const auto g = global_correlation(f);
    CHECK(g.sizes() == torch::IntArrayRef({2, 2}));
    CHECK(g[0][0].item<float>() == Approx(1).epsilon(1e-4));
    // Channel counts may differ between student and teacher: the matrices do not depend on them.
    CHECK(self_correlation(torch::randn({2, 32, 40, 24}), 16).sizes() == s.sizes());
}

TEST_CASE("HiCD's terms vanish when the student equals the teacher, and teach the student only",
          "[nn][hicd]") {
    const Batch b = clean_batch(3);
    HicdOptions o;
    o.teacher = "t.cdm";
    o.feature_mse_weight = 1.0;
    auto teacher = hicd_model(1);
    // A student with the teacher's weights, on the teacher's inputs, in the same mode: every term is 0.
    {
        auto same = hicd_model(1);
        HicdObjective obj(same, {}, teacher_bundle(hicd_model(1)), o, nullptr);
        const Loss l = obj.loss(b, {});
        for (const char* n : {"self", "cross", "global", "feature_mse"}) CHECK(term(l, n) == Approx(0).margin(1e-10));
        CHECK(term(l, "task") > 0);
    }
    // Another student: positive terms, gradients reach it and never the teacher.
    auto student = hicd_model(2);
    student->train();
    const auto before = teacher->parameters()[0].clone();
    HicdObjective obj(student, {}, teacher_bundle(teacher), o, {{"method", "hicd"}});
    const Loss l = obj.loss(b, {});
    REQUIRE(l.terms.size() == 5);
    for (const char* n : {"self", "cross", "global", "feature_mse"}) CHECK(term(l, n) > 0);
    CHECK(obj.describe()["method"] == "hicd");
    CHECK(obj.needs_clean_inputs());
    l.total.backward();
    double grad = 0;
    for (const auto& p : student->parameters())
        if (p.grad().defined()) grad += p.grad().abs().sum().item<double>();
    CHECK(grad > 0);
    for (const auto& p : teacher->parameters()) CHECK_FALSE(p.grad().defined());
    torch::optim::SGD opt(obj.parameters(), torch::optim::SGDOptions(0.1));
    opt.step();
    CHECK(teacher->parameters()[0].equal(before));
    CHECK_FALSE(teacher->is_training());

    // A weight of 0 leaves its term out; all at 0 is the task loss alone.
    HicdOptions none = o;
    none.self_weight = none.cross_weight = none.global_weight = none.feature_mse_weight = 0;
    HicdObjective plain(hicd_model(2), {}, teacher_bundle(hicd_model(1)), none, nullptr);
    const Loss lp = plain.loss(b, {});
    REQUIRE(lp.terms.size() == 1);
    CHECK(lp.terms[0].first == "task");

    // Feature MSE needs the teacher's shapes; a narrower student is refused by it, not by the correlations.
    HicdObjective narrow(hicd_model(3, 2), {}, teacher_bundle(hicd_model(1)), o, nullptr);
    CHECK_THROWS_WITH(narrow.loss(b, {}), Catch::Contains("feature MSE"));
    HicdOptions corr = o;
    corr.feature_mse_weight = 0;
    HicdObjective narrow_corr(hicd_model(3, 2), {}, teacher_bundle(hicd_model(1)), corr, nullptr);
    CHECK(term(narrow_corr.loss(b, {}), "self") > 0);

    // Without the clean pair it says what is missing.
    Batch degraded_only = b;
    degraded_only.pre_clean = torch::Tensor();
    CHECK_THROWS_WITH(obj.loss(degraded_only, {}), Catch::Contains("--degrade"));
}

TEST_CASE("HiCD options are checked", "[nn][hicd]") {
    HicdOptions o;
    CHECK_THROWS_WITH(validate(o), Catch::Contains("--teacher"));
    o.teacher = "t.cdm";
    CHECK_NOTHROW(validate(o));
    auto bad = o;
    bad.self_weight = -1;
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.pool = 64;
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
    bad = o;
    bad.depths = 0;
    CHECK_THROWS_AS(validate(bad), cdk::ConfigError);
}
