// tests/optimizer/optimizer.cpp: the model-level optimizer
// (polar/optimizer.hpp), its schedules (polar/schedule.hpp) and the uniform
// hyperparameter access (polar/hyperparameters.hpp). Every group of an
// optimizer gives the same bits as its bare policy stepping the same tensors,
// on Eigen and both Thrust host systems; schedules against their closed
// forms; clipping against the norms computed here in double; the non-finite
// policies; checkpoints resumed mid-schedule; the shared scratch; the errors.
#include <Eigen/Dense>
#include <Eigen/QR>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/manifold_muon.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/nonfinite.hpp"
#include "polar/optimizer.hpp"
#include "geometry/geometry_support.hpp"
#include "support.hpp"

namespace {

using geometry_test::mat;
using fmat = mat<float>;
using host_backends = polar_test::host_backends;

// A point on the Stiefel manifold (orthonormal columns), n x p, n >= p.
fmat stiefel_point(polar::index n, polar::index p, int seed) {
  std::srand(unsigned(seed));
  const Eigen::MatrixXd a = Eigen::MatrixXd::Random(n, p);
  const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(a).householderQ() * Eigen::MatrixXd::Identity(n, p);
  return q.cast<float>();
}
// Rows scaled to unit norm.
fmat row_sphere_point(polar::index n, polar::index p, int seed) {
  std::srand(unsigned(seed));
  Eigen::MatrixXd a = Eigen::MatrixXd::Random(n, p);
  a.rowwise().normalize();
  return a.cast<float>();
}
template <class B>
fmat gradient(B& be, const fmat& like, int step, int which) {
  return geometry_test::random<float>(be, like.rows(), like.cols(), std::uint64_t(1000 + 37 * step + which));
}
bool same_bits(const fmat& a, const fmat& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

using muon = polar::muon_direction<>;
using guarded = polar::nonfinite_guard<polar::momentum_direction>;
using row_adam = polar::riemannian_adam<polar::hypersphere>;

row_adam row_sphere_adam() {
  row_adam p;
  p.geometry.scope = polar::sphere_scope::rows;
  p.direction.lr = 0.01;
  return p;
}

// The model of the six-group test: names, shapes, starting points.
struct model {
  fmat embed, fc1, fc2, experts, sphere, stiefel, bias, head;
  explicit model(polar::backend::eigen& be) {
    embed = geometry_test::random<float>(be, 24, 8, 1);
    fc1 = geometry_test::random<float>(be, 16, 8, 2);
    fc2 = geometry_test::random<float>(be, 8, 16, 3);
    experts = geometry_test::random<float>(be, 3 * 6, 5, 4);  // a 3 x 6 x 5 stack
    sphere = row_sphere_point(6, 10, 5);
    stiefel = stiefel_point(12, 4, 6);
    bias = geometry_test::random<float>(be, 1, 16, 7);
    head = geometry_test::random<float>(be, 10, 8, 8);
  }
};

template <class B>
void add_groups(polar::optimizer<B, float>& opt) {
  // Rules are tried in this order: the named exceptions before the
  // catch-all for hidden matrices.
  opt.add_group("embed", polar::md_adamw{}, polar::rule::name("embed*"));
  opt.add_group("sphere", row_sphere_adam(), polar::rule::name("*.sphere"));
  opt.add_group("stiefel", polar::manifold_muon<>{}, polar::rule::name("*.stiefel"));
  opt.add_group("hidden", muon{}, polar::rule::name("blocks.*") && polar::rule::matrices());
  opt.add_group("guarded", guarded{}, polar::rule::name("head"));
  opt.add_group("vectors", polar::adamw_direction{}, polar::rule::vectors());
}

BOOST_AUTO_TEST_SUITE(optimizer)

BOOST_AUTO_TEST_CASE_TEMPLATE(six_policies_match_their_bare_steps, B, host_backends) {
  polar::backend::eigen host;
  B be;
  model m(host), bare(host);
  polar::optimizer<B, float> opt(be);
  add_groups(opt);
  opt.add("embed", polar::make_view(m.embed));
  opt.add("blocks.0.fc1", polar::make_view(m.fc1));
  opt.add("blocks.0.fc2", polar::make_view(m.fc2));
  opt.add("blocks.0.experts", polar::tensor_view<float>(m.experts.data(), {3, 6, 5}));
  opt.add("blocks.0.sphere", polar::make_view(m.sphere));
  opt.add("blocks.0.stiefel", polar::make_view(m.stiefel));
  opt.add("blocks.0.bias", polar::tensor_view<float>(m.bias.data(), {16}));
  opt.add("head", polar::make_view(m.head));
  BOOST_TEST(opt.size() == 8);
  BOOST_TEST(opt.group_of(0).name() == "embed");
  BOOST_TEST(opt.group_of(3).name() == "hidden");
  BOOST_TEST(opt.group_of(6).name() == "vectors");
  BOOST_TEST(opt.group("hidden").size() == 3);

  // The bare policies on copies, each with its own state and scratch.
  const polar::md_adamw md{};
  const muon mu{};
  const row_adam ra = row_sphere_adam();
  const polar::manifold_muon<> mm{};
  const guarded gd{};
  const polar::adamw_direction aw{};
  auto s_embed = md.init(be, polar::make_view(static_cast<const fmat&>(bare.embed)));
  auto s_fc1 = mu.init(be, polar::make_view(static_cast<const fmat&>(bare.fc1)));
  auto s_fc2 = mu.init(be, polar::make_view(static_cast<const fmat&>(bare.fc2)));
  const auto experts_view = [](fmat& x) { return polar::row_major_batch(x.data(), 3, 6, 5); };
  auto s_experts = mu.init(be, polar::as_const(experts_view(bare.experts)));
  auto s_sphere = ra.init(be, polar::make_view(static_cast<const fmat&>(bare.sphere)));
  auto s_stiefel = mm.init(be, polar::make_view(static_cast<const fmat&>(bare.stiefel)));
  auto s_bias = aw.init(be, polar::make_view(static_cast<const fmat&>(bare.bias)));
  auto s_head = gd.init(be, polar::make_view(static_cast<const fmat&>(bare.head)));

  for (int k = 0; k < 4; ++k) {
    const fmat ge = gradient(host, m.embed, k, 0), g1 = gradient(host, m.fc1, k, 1), g2 = gradient(host, m.fc2, k, 2);
    const fmat gx = gradient(host, m.experts, k, 3), gs = gradient(host, m.sphere, k, 4);
    const fmat gt = gradient(host, m.stiefel, k, 5), gb = gradient(host, m.bias, k, 6);
    fmat gh = gradient(host, m.head, k, 7);
    if (k == 2) gh(1, 1) = std::numeric_limits<float>::quiet_NaN();
    if (k == 2) {
      // The model-level check refuses first: nothing is stepped.
      const model before = m;
      BOOST_CHECK_THROW(opt.step({polar::make_view(ge), polar::make_view(g1), polar::make_view(g2),
                                  polar::tensor_view<const float>(gx.data(), {3, 6, 5}), polar::make_view(gs),
                                  polar::make_view(gt), polar::tensor_view<const float>(gb.data(), {16}),
                                  polar::make_view(gh)}),
                        polar::non_finite_error);
      BOOST_TEST(same_bits(m.fc1, before.fc1));
      BOOST_TEST(same_bits(m.embed, before.embed));
      BOOST_TEST(opt.steps() == 2);
      continue;
    }
    opt.step({polar::make_view(ge), polar::make_view(g1), polar::make_view(g2),
              polar::tensor_view<const float>(gx.data(), {3, 6, 5}), polar::make_view(gs), polar::make_view(gt),
              polar::tensor_view<const float>(gb.data(), {16}), polar::make_view(gh)});
    md.step(be, polar::make_view(bare.embed), polar::make_view(ge), s_embed);
    mu.step(be, polar::make_view(bare.fc1), polar::make_view(g1), s_fc1);
    mu.step(be, polar::make_view(bare.fc2), polar::make_view(g2), s_fc2);
    mu.step(be, experts_view(bare.experts), polar::as_const(polar::row_major_batch(gx.data(), 3, 6, 5)), s_experts);
    ra.step(be, polar::make_view(bare.sphere), polar::make_view(gs), s_sphere);
    mm.step(be, polar::make_view(bare.stiefel), polar::make_view(gt), s_stiefel);
    aw.step(be, polar::make_view(bare.bias), polar::make_view(gb), s_bias);
    gd.step(be, polar::make_view(bare.head), polar::make_view(gh), s_head);
  }
  BOOST_TEST(opt.steps() == 3);
  BOOST_TEST(same_bits(m.embed, bare.embed));
  BOOST_TEST(same_bits(m.fc1, bare.fc1));
  BOOST_TEST(same_bits(m.fc2, bare.fc2));
  BOOST_TEST(same_bits(m.experts, bare.experts));
  BOOST_TEST(same_bits(m.sphere, bare.sphere));
  BOOST_TEST(same_bits(m.stiefel, bare.stiefel));
  BOOST_TEST(same_bits(m.bias, bare.bias));
  BOOST_TEST(same_bits(m.head, bare.head));
  BOOST_TEST(!same_bits(m.fc1, model(host).fc1));  // the steps moved the weights

  // One scratch object per scratch type for the whole model; the states hold
  // only what the algorithms remember: Muon's momentum is its state, exactly.
  BOOST_TEST(opt.template state_of<muon>(1).scratch == opt.template state_of<muon>(2).scratch);
  BOOST_TEST(opt.template state_of<muon>(1).scratch == opt.template state_of<muon>(3).scratch);
  BOOST_TEST(opt.template state_of<muon>(1).scratch != s_fc1.scratch);
  BOOST_TEST(opt.scratch_bytes() > 0);
}

BOOST_AUTO_TEST_CASE(muon_state_is_its_momentum) {
  polar::backend::eigen be;
  fmat a = geometry_test::random<float>(be, 64, 32, 1), b = geometry_test::random<float>(be, 32, 96, 2);
  fmat c = geometry_test::random<float>(be, 16, 16, 3);
  polar::optimizer<polar::backend::eigen, float> opt(be);
  opt.add_group("muon", muon{});
  opt.add("a", polar::make_view(a));
  opt.add("b", polar::make_view(b));
  opt.add("c", polar::make_view(c));
  const std::size_t params = sizeof(float) * std::size_t(a.size() + b.size() + c.size());
  BOOST_TEST(opt.state_bytes() == params);
  BOOST_TEST(opt.scratch_bytes() == 0u);  // made by the first step
  const fmat ga = a, gb = b, gc = c;
  opt.step({polar::make_view(ga), polar::make_view(gb), polar::make_view(gc)});
  BOOST_TEST(opt.state_bytes() == params);
  // The scratch is what the largest matrix needs: m and u of 32 x 96, the
  // Newton–Schulz iterates of the same size and the 32 x 32 Gram matrices.
  const std::size_t largest = sizeof(float) * (4 * 32 * 96 + 2 * 32 * 32 + 1);
  BOOST_TEST(opt.scratch_bytes() == largest);
  const auto after_first = opt.scratch_bytes();
  for (int k = 0; k < 3; ++k) opt.step({polar::make_view(ga), polar::make_view(gb), polar::make_view(gc)});
  BOOST_TEST(opt.scratch_bytes() == after_first);
}

BOOST_AUTO_TEST_CASE(schedules_follow_their_closed_forms) {
  const double pi = 3.14159265358979323846;
  const auto warm = polar::schedule::linear_warmup(4);
  BOOST_TEST(warm(0) == 0.25);
  BOOST_TEST(warm(2) == 0.75);
  BOOST_TEST(warm(3) == 1.0);
  BOOST_TEST(warm(100) == 1.0);
  const auto cos = polar::schedule::cosine(110, 0.1, 10);
  for (long t : {0L, 5L, 9L}) BOOST_TEST(cos(t) == double(t + 1) / 10);
  for (long t : {10L, 37L, 60L, 109L, 110L, 500L}) {
    const double p = std::min(1.0, double(t - 10) / 100);
    BOOST_TEST(std::abs(cos(t) - (0.1 + 0.9 * 0.5 * (1 + std::cos(pi * p)))) < 1e-15);
  }
  const auto lin = polar::schedule::linear_decay(50, 0.2);
  for (long t : {0L, 1L, 25L, 49L, 50L, 80L})
    BOOST_TEST(std::abs(lin(t) - (1 - 0.8 * std::min(1.0, double(t) / 50))) < 1e-15);
  const auto wsd = polar::schedule::warmup_stable_decay(5, 20, 10, 0.0);
  BOOST_TEST(wsd(0) == 0.2);
  BOOST_TEST(wsd(4) == 1.0);
  BOOST_TEST(wsd(5) == 1.0);
  BOOST_TEST(wsd(24) == 1.0);
  BOOST_TEST(std::abs(wsd(25) - 1.0) < 1e-15);
  BOOST_TEST(std::abs(wsd(30) - 0.5) < 1e-15);
  BOOST_TEST(wsd(35) == 0.0);
  BOOST_TEST(wsd(1000) == 0.0);
  const auto step = polar::schedule::step_decay(3, 0.5);
  BOOST_TEST(step(0) == 1.0);
  BOOST_TEST(step(2) == 1.0);
  BOOST_TEST(step(3) == 0.5);
  BOOST_TEST(step(7) == 0.25);
  // Spall's sequences: a_k = a / (k + 1 + A)^alpha, c_k = c / (k + 1)^gamma.
  const auto a = polar::schedule::spall_gain(9, 0.602);
  const auto c = polar::schedule::spall_perturbation(0.101);
  for (long k : {0L, 1L, 10L, 999L}) {
    const double a0 = 1.0 / std::pow(10.0, 0.602), ak = 1.0 / std::pow(double(k) + 10, 0.602);
    BOOST_TEST(std::abs(a(k) - ak / a0) < 1e-15);
    BOOST_TEST(std::abs(c(k) - 1.0 / std::pow(double(k) + 1, 0.101)) < 1e-15);
  }
  const polar::schedule user([](long t) { return t < 2 ? 1.0 : 0.5; }, "halve at 2");
  BOOST_TEST(user(1) == 1.0);
  BOOST_TEST(user(2) == 0.5);
  BOOST_TEST(polar::schedule()(123) == 1.0);
  polar_test::check_throws<polar::value_error>([] { polar::schedule::cosine(10, 0.0, 10); },
                                               {"polar::schedule::cosine", "total is 10", "warmup is 10"});
  polar_test::check_throws<polar::value_error>([] { polar::schedule::linear_warmup(0); }, {"warmup is 0"});
  polar_test::check_throws<polar::value_error>(
      [] { polar::schedule([](long) { return -1.0; }, "bad")(3); }, {"bad gives -1 at step 3"});
}

BOOST_AUTO_TEST_CASE(hyperparameters_are_reached_whatever_the_nesting) {
  polar::md_muon md;
  std::vector<std::string> paths;
  polar::for_each_hyperparameter(md, [&](polar::hyperparameter, const std::string& p, double&) { paths.push_back(p); });
  const std::vector<std::string> want{"direction.lr", "direction.weight_decay", "gain_direction.lr",
                                      "gain_direction.weight_decay"};
  BOOST_TEST(paths == want, boost::test_tools::per_element());
  polar::hyperparameter_ref(md, "gain_direction.lr") = 0.125;
  BOOST_TEST(md.gain_direction.lr == 0.125);
  BOOST_TEST(&polar::learning_rate(md) == &md.direction.lr);
  polar::nonfinite_guard<polar::riemannian_adam<polar::hypersphere>> g;
  BOOST_TEST(&polar::learning_rate(g) == &g.optimizer.direction.lr);
  BOOST_TEST(&polar::hyperparameter_ref(g, "optimizer.direction.weight_decay") == &g.optimizer.direction.weight_decay);
  polar_test::check_throws<polar::value_error>([&] { polar::hyperparameter_ref(md, "lr"); },
                                               {"no hyperparameter 'lr'", "direction.lr, direction.weight_decay"});
  // Closed composition: a guard inside a geometry, MD over a guard-free
  // Riemannian direction; both build and step.
  polar::backend::eigen be;
  polar::riemannian<polar::nonfinite_guard<polar::adamw_direction>, polar::hypersphere> inside;
  inside.direction.optimizer.weight_decay = 0;
  fmat w = row_sphere_point(1, 12, 3);
  w /= w.norm();
  const fmat gw = geometry_test::random<float>(be, 1, 12, 4);
  auto s = inside.init(be, polar::make_view(static_cast<const fmat&>(w)));
  inside.step(be, polar::make_view(w), polar::make_view(gw), s);
  BOOST_TEST(std::abs(double(w.norm()) - 1.0) < 1e-6);
}

BOOST_AUTO_TEST_CASE(schedules_scale_every_learning_rate_of_a_group) {
  // SGD with lr 0.5 under step_decay(2, 0.5): W moves by lr * s(t) * G.
  polar::backend::eigen be;
  fmat w = fmat::Zero(2, 3), v = fmat::Zero(1, 4);
  polar::optimizer<polar::backend::eigen, double> dummy(be);  // another scalar type builds too
  (void)dummy;
  polar::optimizer<polar::backend::eigen, float> opt(be);
  auto& g = opt.add_group("sgd", polar::sgd_direction{0.5, 0.0});
  g.lr_schedule = polar::schedule::step_decay(2, 0.5);
  opt.add("w", polar::make_view(w));
  const fmat gw = fmat::Ones(2, 3);
  const double want[] = {0.5, 0.5, 0.25, 0.25, 0.125};
  double at = 0;
  for (int t = 0; t < 5; ++t) {
    BOOST_TEST(opt.group("sgd").scheduled_hyperparameters()[0].second == want[t]);
    opt.step({polar::make_view(gw)});
    at -= want[t];
    BOOST_TEST(double(w(0, 0)) == at);
  }
  BOOST_TEST(opt.settings<polar::sgd_direction>("sgd").lr == 0.5);  // the settings are not touched
  BOOST_TEST(opt.group("sgd").steps() == 5);
  polar_test::check_throws<polar::value_error>([&] { opt.settings<polar::adamw_direction>("sgd"); },
                                               {"polar::optimizer::settings",
                                                "group 'sgd' has another policy (polar::sgd_direction)"});
}

BOOST_AUTO_TEST_CASE(clipping_matches_a_direct_computation) {
  // SGD with lr 1: W <- W - f G, f the clipping factor, computed here.
  polar::backend::eigen be;
  fmat a = fmat::Zero(3, 4), b = fmat::Zero(2, 2), c = fmat::Zero(1, 5);
  polar::optimizer<polar::backend::eigen, float> opt(be);
  opt.add_group("ab", polar::sgd_direction{1.0, 0.0}, polar::rule::names({"a", "b"}));
  opt.add_group("c", polar::sgd_direction{1.0, 0.0});
  opt.add("a", polar::make_view(a));
  opt.add("b", polar::make_view(b));
  opt.add("c", polar::make_view(c));
  const fmat ga = geometry_test::random<float>(be, 3, 4, 1), gb = geometry_test::random<float>(be, 2, 2, 2);
  const fmat gc = 10 * geometry_test::random<float>(be, 1, 5, 3);
  const double na = ga.cast<double>().squaredNorm(), nb = gb.cast<double>().squaredNorm(),
               nc = gc.cast<double>().squaredNorm();
  const double total = std::sqrt(na + nb + nc);
  opt.clip_norm = 1.0;
  opt.group("c").clip_norm = 0.05;
  opt.step({polar::make_view(ga), polar::make_view(gb), polar::make_view(gc)});
  BOOST_TEST(std::abs(opt.last_norm() - total) < 1e-5 * total);
  const double global = std::min(1.0, 1.0 / (total + 1e-6));
  const double group_c = std::min(1.0, 0.05 / (global * std::sqrt(nc) + 1e-6));
  for (polar::index i = 0; i < 3; ++i)
    for (polar::index j = 0; j < 4; ++j)
      BOOST_TEST(std::abs(double(a(i, j)) + global * double(ga(i, j))) < 1e-6);
  for (polar::index j = 0; j < 5; ++j)
    BOOST_TEST(std::abs(double(c(0, j)) + global * group_c * double(gc(0, j))) < 1e-6);
  // The clipped norm of all gradients is clip_norm.
  const double after = std::sqrt(global * global * (na + nb));
  BOOST_TEST(after < 1.0);
  // Gradients are read, never written.
  BOOST_TEST(same_bits(gc, 10 * geometry_test::random<float>(be, 1, 5, 3)));
}

BOOST_AUTO_TEST_CASE(nonfinite_policies_act_on_the_whole_model) {
  polar::backend::eigen be;
  fmat a = geometry_test::random<float>(be, 3, 4, 1), b = geometry_test::random<float>(be, 1, 6, 2);
  const fmat a0 = a, b0 = b;
  polar::optimizer<polar::backend::eigen, float> opt(be);
  opt.add_group("sgd", polar::sgd_direction{1.0, 0.0});
  opt.add("a", polar::make_view(a));
  opt.add("b", polar::make_view(b));
  fmat ga = fmat::Ones(3, 4), gb = fmat::Ones(1, 6);
  gb(0, 2) = std::numeric_limits<float>::infinity();
  gb(0, 4) = std::numeric_limits<float>::quiet_NaN();
  polar_test::check_throws<polar::non_finite_error>(
      [&] { opt.step({polar::make_view(ga), polar::make_view(gb)}); },
      {"polar::optimizer::step", "'b' (1x6)", "nothing was stepped"});
  BOOST_TEST(same_bits(a, a0));
  opt.nonfinite = polar::nonfinite_policy::skip;
  opt.step({polar::make_view(ga), polar::make_view(gb)});
  BOOST_TEST(same_bits(a, a0));
  BOOST_TEST(same_bits(b, b0));
  BOOST_TEST(opt.skipped() == 1);
  BOOST_TEST(opt.steps() == 0);
  opt.nonfinite = polar::nonfinite_policy::zero;
  opt.step({polar::make_view(ga), polar::make_view(gb)});
  BOOST_TEST(opt.zeroed_steps() == 1);
  BOOST_TEST(opt.zeroed_entries() == 2);
  for (polar::index j = 0; j < 6; ++j)
    BOOST_TEST(b(0, j) == (j == 2 || j == 4 ? b0(0, j) : b0(0, j) - 1.0f));
  BOOST_TEST(same_bits(a, fmat(a0.array() - 1.0f)));
}

// The optimizer checks every gradient itself, so the policies skip their
// own pass over G while it steps them, and only then: a policy called
// directly still refuses NaN, also after an optimizer step that threw.
BOOST_AUTO_TEST_CASE(policies_skip_their_check_of_g_only_inside_the_optimizer) {
  polar::backend::eigen be;
  fmat a = geometry_test::random<float>(be, 3, 4, 1), z = fmat::Zero(2, 5);
  z(0, 0) = 1;  // row 1 of z is zero, and so is its gradient
  polar::optimizer<polar::backend::eigen, float> opt(be);
  opt.add_group("adamw", polar::adamw_direction{});
  polar::riemannian_sgd<polar::hypersphere> sphere;
  sphere.geometry = {polar::sphere_scope::rows, 1.0};
  sphere.check_point = false;
  opt.add_group("sphere", sphere);
  opt.add("a", polar::make_view(a), "adamw");
  opt.add("z", polar::make_view(z), "sphere");
  const fmat ga = fmat::Ones(3, 4), gz = fmat::Zero(2, 5);
  polar_test::check_throws<polar::numerical_error>([&] { opt.step({polar::make_view(ga), polar::make_view(gz)}); },
                                                   {"row 1"});
  BOOST_TEST(!polar::detail::gradients_checked());
  const fmat ones = fmat::Ones(2, 5);
  opt.step({polar::make_view(ga), polar::make_view(ones)});
  BOOST_TEST(!polar::detail::gradients_checked());
  a = geometry_test::random<float>(be, 3, 4, 1);
  fmat w = a, bad = fmat::Ones(3, 4);
  bad(1, 2) = std::numeric_limits<float>::quiet_NaN();
  polar::adamw_direction adamw;
  auto s = adamw.init(be, polar::make_view(w));
  polar_test::check_throws<polar::non_finite_error>(
      [&] { adamw.step(be, polar::make_view(w), polar::make_view(static_cast<const fmat&>(bad)), s); },
      {"polar::adamw::step", "NaN"});
  BOOST_TEST(same_bits(w, a));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(checkpoints_resume_mid_schedule_bit_exactly, B, host_backends) {
  polar::backend::eigen host;
  B be;
  const model start(host);
  const auto make = [&](model& m) {
    auto opt = std::make_unique<polar::optimizer<B, float>>(be);
    add_groups(*opt);
    opt->group("hidden").lr_schedule = polar::schedule::cosine(8, 0.1, 2);
    opt->group("embed").weight_decay_schedule = polar::schedule::linear_decay(6);
    opt->clip_norm = 3.0;
    opt->add("embed", polar::make_view(m.embed));
    opt->add("blocks.0.fc1", polar::make_view(m.fc1));
    opt->add("blocks.0.sphere", polar::make_view(m.sphere));
    opt->add("blocks.0.stiefel", polar::make_view(m.stiefel));
    opt->add("head", polar::make_view(m.head));
    opt->add("bias", polar::tensor_view<float>(m.bias.data(), {16}));
    return opt;
  };
  const auto run = [&](polar::optimizer<B, float>& opt, model& m, int from, int to) {
    for (int k = from; k < to; ++k) {
      const fmat ge = gradient(host, m.embed, k, 0), g1 = gradient(host, m.fc1, k, 1);
      const fmat gs = gradient(host, m.sphere, k, 4), gt = gradient(host, m.stiefel, k, 5);
      const fmat gh = gradient(host, m.head, k, 7), gb = gradient(host, m.bias, k, 6);
      opt.step({polar::make_view(ge), polar::make_view(g1), polar::make_view(gs), polar::make_view(gt),
                polar::make_view(gh), polar::tensor_view<const float>(gb.data(), {16})});
    }
  };
  model straight = start;
  auto s = make(straight);
  run(*s, straight, 0, 6);

  model first = start;
  auto f = make(first);
  run(*f, first, 0, 3);
  polar::checkpoint ck;
  f->save(ck, "model/");
  const auto bytes = ck.serialize();

  model second = start;
  auto r = make(second);
  r->load(polar::checkpoint::parse(bytes), "model/");
  BOOST_TEST(r->steps() == 3);
  BOOST_TEST(r->group("hidden").steps() == 3);
  BOOST_TEST(same_bits(second.fc1, first.fc1));
  run(*r, second, 3, 6);
  BOOST_TEST(same_bits(second.embed, straight.embed));
  BOOST_TEST(same_bits(second.fc1, straight.fc1));
  BOOST_TEST(same_bits(second.sphere, straight.sphere));
  BOOST_TEST(same_bits(second.stiefel, straight.stiefel));
  BOOST_TEST(same_bits(second.head, straight.head));
  BOOST_TEST(same_bits(second.bias, straight.bias));

  // An optimizer whose groups differ names the tensor that does not fit,
  // and writes nothing.
  model other = start;
  polar::optimizer<B, float> o(be);
  add_groups(o);
  o.add("embed", polar::make_view(other.embed));
  o.add("blocks.0.fc1", polar::make_view(other.fc1), "vectors");  // AdamW here, Muon there
  o.add("blocks.0.sphere", polar::make_view(other.sphere));
  o.add("blocks.0.stiefel", polar::make_view(other.stiefel));
  o.add("head", polar::make_view(other.head));
  o.add("bias", polar::tensor_view<float>(other.bias.data(), {16}));
  polar_test::check_throws<polar::shape_error>([&] { o.load(polar::checkpoint::parse(bytes), "model/"); },
                                               {"polar::optimizer::load", "'blocks.0.fc1' is in group 'vectors'"});
  BOOST_TEST(same_bits(other.embed, start.embed));
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused_with_names) {
  polar::backend::eigen be;
  fmat a = geometry_test::random<float>(be, 3, 4, 1), stack = geometry_test::random<float>(be, 6, 4, 2);
  polar::optimizer<polar::backend::eigen, float> opt(be);
  opt.add_group("muon", muon{}, polar::rule::matrices());
  opt.add_group("md", polar::md_adamw{}, polar::rule::name("md.*"));
  polar_test::check_throws<polar::value_error>([&] { opt.add_group("muon", polar::adamw_direction{}); },
                                               {"a group named 'muon' is already there"});
  polar_test::check_throws<polar::value_error>(
      [&] { opt.add("v", polar::tensor_view<float>(a.data(), {4})); },
      {"no group's rule takes 'v' (4)", "muon: matrices", "md: name(md.*)"});
  polar_test::check_throws<polar::unsupported_error>(
      [&] { opt.add("md.stack", polar::tensor_view<float>(stack.data(), {2, 3, 4}), "md"); },
      {"'md.stack' is a stack of 2 matrices (2x3x4)", "one matrix at a time"});
  polar_test::check_throws<polar::value_error>([&] { opt.add("a", polar::make_view(a), "nope"); },
                                               {"no group is named 'nope'", "'muon', 'md'"});
  opt.add("a", polar::make_view(a));
  polar_test::check_throws<polar::value_error>([&] { opt.add("a", polar::make_view(a)); }, {"'a' is already there"});
  polar_test::check_throws<polar::value_error>([&] { opt.add_group("late", polar::adamw_direction{}); },
                                               {"after tensors were added"});
  const fmat g = fmat::Ones(4, 3);
  polar_test::check_throws<polar::shape_error>([&] { opt.step({polar::make_view(g)}); },
                                               {"the gradient of 'a' is 4x3 but the tensor is 3x4"});
  polar_test::check_throws<polar::shape_error>([&] { opt.step({}); }, {"got 0 gradients for 1 tensors"});
  opt.settings<muon>("muon").momentum = 1.5;
  const fmat ok = fmat::Ones(3, 4);
  const fmat a0 = a;
  BOOST_CHECK_THROW(opt.step({polar::make_view(ok)}), polar::value_error);
  BOOST_TEST(same_bits(a, a0));
  opt.settings<muon>("muon").momentum = 0.95;
  opt.group("muon").lr_schedule = polar::schedule([](long) { return std::nan(""); }, "broken");
  polar_test::check_throws<polar::value_error>([&] { opt.step({polar::make_view(ok)}); }, {"broken gives nan"});
  BOOST_TEST(same_bits(a, a0));
}

BOOST_AUTO_TEST_CASE(a_state_no_init_made_is_named) {
  polar::backend::eigen be;
  fmat w = fmat::Ones(3, 4);
  const fmat g = fmat::Ones(3, 4);
  polar::adamw_direction::state<polar::backend::eigen, float> s;
  polar_test::check_throws<polar::shape_error>(
      [&] { polar::adamw_direction{}.step(be, polar::make_view(w), polar::make_view(g), s); },
      {"polar::adamw::step", "W is 3x4", "no init() made it; call init(be, W) first"});
  muon::state<polar::backend::eigen, float> m;
  polar_test::check_throws<polar::shape_error>([&] { muon{}.step(be, polar::make_view(w), polar::make_view(g), m); },
                                               {"polar::muon::step", "call init(be, W) first"});
  BOOST_TEST(same_bits(w, fmat::Ones(3, 4)));
}

BOOST_AUTO_TEST_CASE(a_matrix_stored_in_by_out_is_stepped_through_its_transpose) {
  // Muon's scale reads rows as outputs: a 4 x 16 (in x out) matrix stepped
  // as stored gets sqrt(max(1, 4/16)) = 1; through its transpose (16 x 4,
  // out x in) it gets sqrt(16/4) = 2, as the same layer stored (out x in).
  polar::backend::eigen be;
  fmat out_in = geometry_test::random<float>(be, 16, 4, 1);
  fmat in_out = out_in.transpose();
  const fmat g_out_in = geometry_test::random<float>(be, 16, 4, 2);
  const fmat g_in_out = g_out_in.transpose();
  polar::optimizer<polar::backend::eigen, float> a(be), b(be);
  a.add_group("muon", muon{});
  b.add_group("muon", muon{});
  a.add("w", polar::make_view(out_in));
  b.add("w", polar::make_view(in_out).transpose());
  a.step({polar::make_view(g_out_in)});
  b.step({polar::make_view(g_in_out).transpose()});
  BOOST_TEST((fmat(in_out.transpose()) - out_in).cwiseAbs().maxCoeff() < 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
