// tests/core/deferred.cpp: steps in a deferred_checks scope (polar/deferred.hpp).
// In a scope a step reads nothing back (a backend that refuses every read
// while a scope is open runs them all), takes the eager step's bits, and a
// bad gradient or a flagged row changes nothing, neither in its own step nor
// in the steps queued after it, until check() throws what the eager step
// would have thrown and moves the step counts back. On Eigen and the Thrust
// host systems, whose kernels read the skip word as the GPU's do.
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "polar/deferred.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/nonfinite.hpp"
#include "polar/optimizer.hpp"
#include "core/state_bytes.hpp"
#include "geometry/geometry_support.hpp"
#include "support.hpp"

namespace {

using geometry_test::mat;
using fmat = mat<float>;
using core_test::host_backends;
using core_test::state_bytes;

/// A backend that refuses, while a deferred_checks scope is open on the
/// thread, every operation that hands a value back to the host: the steps
/// that run deferred must not call one (on a GPU each would wait for it).
template <class Base>
struct no_reads : Base {
  static void refuse(const char* what) {
    if (polar::detail::deferred() != nullptr)
      throw std::logic_error(std::string("a deferred step read back: ") + what);
  }
  // The reductions of one operand, refused in a scope.
#define POLAR_TEST_REFUSED(op)                            \
  template <class U>                                      \
  auto op(polar::matrix_view<U> x) {                      \
    refuse(#op);                                          \
    return Base::op(x);                                   \
  }
  POLAR_TEST_REFUSED(all_finite)
  POLAR_TEST_REFUSED(norm)
  POLAR_TEST_REFUSED(sum)
  POLAR_TEST_REFUSED(max_abs)
#undef POLAR_TEST_REFUSED
  template <class U, class V, class T = std::remove_const_t<U>>
  T dot(polar::matrix_view<U> x, polar::matrix_view<V> y) {
    refuse("dot");
    return Base::dot(x, y);
  }
  template <class T>
  void copy_to_host(polar::matrix_view<const T> src, polar::matrix_view<T> dst) {
    refuse("copy_to_host");
    Base::copy_to_host(src, dst);
  }
  using Base::for_each_row;  // the form with column sums
  template <class K, class... V>
  polar::row_flags for_each_row(const K& k, polar::matrix_view<V>... m) {
    const polar::row_flags f = Base::for_each_row(k, m...);
    // In a scope the flags go to a slot: the caller must not see any.
    if (polar::detail::deferred() != nullptr)
      for (int c = 0; c < polar::row_flags::codes; ++c)
        if (f.any(c)) throw std::logic_error("a deferred for_each_row handed its flags back");
    return f;
  }
};

/// Rows of the given norm (the row sphere of that radius).
fmat on_row_sphere(fmat w, float radius) {
  for (Eigen::Index i = 0; i < w.rows(); ++i) w.row(i) *= radius / w.row(i).norm();
  return w;
}

// Three steps of opt, eager and deferred: the same bits in W and the state,
// the same step counts, and check() passes. Not `exact`: the deferred step
// takes a sum on the device by another route than the eager one, which
// reads it back (MD on the flat sphere: the squared norm of D), so W
// agrees to float rounding.
template <class B, class Opt>
void same_as_eager(const Opt& opt, const fmat& w0, const char* what, bool exact = true) {
  BOOST_TEST_CONTEXT(what) {
    no_reads<B> be;
    fmat we = w0, wd = w0;
    auto se = opt.init(be, polar::make_view(we));
    auto sd = opt.init(be, polar::make_view(wd));
    polar::deferred_checks<no_reads<B>> checks(be);
    for (int k = 0; k < 3; ++k) {
      const fmat g = geometry_test::random<float>(be, w0.rows(), w0.cols(), 40 + std::uint64_t(k)) * 0.1f;
      opt.step(be, polar::make_view(we), polar::make_view(g), se);
      {
        auto scope = checks.scope();
        opt.step(be, polar::make_view(wd), polar::make_view(g), sd);
      }
      BOOST_TEST(checks.pending() > 0);
      BOOST_TEST(checks.ok());
      checks.check();
      BOOST_TEST(checks.pending() == 0);
    }
    if (exact) {
      BOOST_TEST((we.array() == wd.array()).all());
      BOOST_TEST((state_bytes(be, se) == state_bytes(be, sd)));
    } else {
      BOOST_TEST((we - wd).cwiseAbs().maxCoeff() <= 1e-5f * we.cwiseAbs().maxCoeff());
      BOOST_TEST((we - w0).cwiseAbs().maxCoeff() > 1e-4f);
    }
  }
}

// A step with NaN in G between two good ones, all in one scope, and a step
// of a second tensor after it: after check() throws, W, the other tensor
// and both states are as they were after the first step (counts included),
// and the next steps are the eager ones (to rounding for Muon: see
// muon_steps_in_a_scope). `says` is in the message, and check() moves back
// `moved` step counts (two a step for a Riemannian state: its own and its
// direction's).
template <class B, class Opt>
void bad_gradient_changes_nothing(const Opt& opt, const fmat& w0, const char* what, const char* says, int moved,
                                  bool exact = true) {
  BOOST_TEST_CONTEXT(what) {
    no_reads<B> be;
    const fmat g0 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 50) * 0.1f;
    const fmat g2 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 52) * 0.1f;
    fmat g1 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 51) * 0.1f;
    g1(1, 2) = std::numeric_limits<float>::quiet_NaN();
    g1(0, 0) = std::numeric_limits<float>::infinity();
    fmat w = w0, v = w0;
    auto s = opt.init(be, polar::make_view(w));
    auto t = opt.init(be, polar::make_view(v));
    polar::deferred_checks<no_reads<B>> checks(be);
    {
      auto scope = checks.scope();
      opt.step(be, polar::make_view(w), polar::make_view(g0), s);
    }
    checks.check();
    const fmat w1 = w, v1 = v;
    const auto s1 = state_bytes(be, s), t1 = state_bytes(be, t);
    {
      auto scope = checks.scope();
      opt.step(be, polar::make_view(w), polar::make_view(g1), s);  // fails
      opt.step(be, polar::make_view(w), polar::make_view(g2), s);  // queued after: nothing
      opt.step(be, polar::make_view(v), polar::make_view(g2), t);  // another tensor: nothing
    }
    BOOST_TEST(!checks.ok());
    try {
      checks.check();
      BOOST_FAIL("check() let a NaN gradient pass");
    } catch (const polar::non_finite_error& e) {
      const std::string m = e.what();
      BOOST_TEST_INFO(m);
      BOOST_TEST(m.find(polar::detail::concat(w0.rows(), "x", w0.cols())) != std::string::npos);
      BOOST_TEST(m.find(says) != std::string::npos);
      BOOST_TEST(m.find(polar::detail::concat(moved, " step counts were moved back")) != std::string::npos);
    }
    BOOST_TEST((w.array() == w1.array()).all());
    BOOST_TEST((v.array() == v1.array()).all());
    BOOST_TEST((state_bytes(be, s) == s1));
    BOOST_TEST((state_bytes(be, t) == t1));
    BOOST_TEST(checks.ok());  // the words were cleared

    // The steps go on, as eager steps from the same point.
    {
      auto scope = checks.scope();
      opt.step(be, polar::make_view(w), polar::make_view(g2), s);
    }
    checks.check();
    fmat wr = w0;
    auto sr = opt.init(be, polar::make_view(wr));
    opt.step(be, polar::make_view(wr), polar::make_view(g0), sr);
    opt.step(be, polar::make_view(wr), polar::make_view(g2), sr);
    if (exact) {
      BOOST_TEST((w.array() == wr.array()).all());
      BOOST_TEST((state_bytes(be, s) == state_bytes(be, sr)));
    } else {
      BOOST_TEST((w - wr).cwiseAbs().maxCoeff() <= 1e-5f * wr.cwiseAbs().maxCoeff());
    }
  }
}

using sphere_adam_opt = polar::riemannian<polar::adamw_direction, polar::hypersphere>;
using sphere_momentum_opt = polar::riemannian<polar::momentum_direction, polar::hypersphere>;

polar::md_adamw make_md(polar::sphere_scope sphere) {
  polar::md_adamw o;
  o.sphere = sphere;
  o.direction.lr = 0.01;
  return o;
}

sphere_adam_opt make_sphere_adam() {
  sphere_adam_opt o;
  o.direction.lr = 0.02;
  o.direction.weight_decay = 0;
  o.geometry = {polar::sphere_scope::rows, 2.0};
  o.check_point = false;  // on in debug builds; it reads the distance back
  return o;
}
/// AdaMuon on M itself rather than sign(M), for the comparisons with the
/// eager step. With the sign, AdaMuon's first step is close to the sign of
/// O (O / (|O| + eps) once the moment is corrected), so an entry of O at
/// rounding level becomes +-1 and the last bits of the input norm, which
/// differ in a scope (muon_steps_in_a_scope), flip it: measured, one entry
/// of the 37x70 matrix moved the other way. That is AdaMuon's own
/// discontinuity, not the scope's, and the sign itself is a map that reads
/// nothing back.
polar::adamuon adamuon_without_sign() {
  polar::adamuon a;
  a.sign = false;
  return a;
}

/// Muon with a transform of the Muon family.
template <class X>
polar::muon_direction<polar::newton_schulz, void, X> muon_with(X transform, double lr = 0.02) {
  polar::muon_direction<polar::newton_schulz, void, X> m;
  m.lr = lr;
  m.transform = transform;
  if constexpr (std::is_same_v<X, polar::polargrad>) m.scale = polar::scale_rule::none;
  return m;
}
sphere_momentum_opt make_sphere_momentum() {
  sphere_momentum_opt o;
  o.direction.lr = 0.05;
  o.direction.nesterov = true;
  o.geometry = {polar::sphere_scope::rows, 2.0};
  o.check_point = false;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(deferred)

BOOST_AUTO_TEST_CASE_TEMPLATE(steps_in_a_scope_take_the_eager_steps_bits, B, host_backends) {
  no_reads<B> be;
  const fmat w0 = geometry_test::random<float>(be, 37, 70, 7);
  const fmat on_sphere = on_row_sphere(w0, 2.0f);
  same_as_eager<B>(polar::sgd_direction{0.1, 0.01}, w0, "sgd");
  polar::momentum_direction mom;
  mom.nesterov = true;
  mom.weight_decay = 0.01;
  same_as_eager<B>(mom, w0, "momentum");
  same_as_eager<B>(polar::adamw_direction{}, w0, "adamw");
  same_as_eager<B>(polar::riemannian<polar::adamw_direction, polar::euclidean>{}, w0, "riemannian euclidean adamw");
  same_as_eager<B>(make_sphere_adam(), on_sphere, "row-sphere adam");
  same_as_eager<B>(make_sphere_momentum(), on_sphere, "row-sphere momentum");
  same_as_eager<B>(make_md(polar::sphere_scope::rows), w0, "md-adamw, row sphere");
  same_as_eager<B>(make_md(polar::sphere_scope::cols), w0, "md-adamw, column sphere");
  same_as_eager<B>(make_md(polar::sphere_scope::flat), w0, "md-adamw, flat sphere", false);
  auto identity = make_md(polar::sphere_scope::rows);
  identity.phi = polar::gain_map::identity;  // its gains' check runs on the device too
  same_as_eager<B>(identity, w0, "md-adamw, identity gains");
  // The Muon family, to float rounding as Muon (muon_steps_in_a_scope); the
  // backend refuses any read back, PolarGrad's inner products included.
  same_as_eager<B>(muon_with(polar::normuon{}), w0, "normuon", false);
  same_as_eager<B>(muon_with(adamuon_without_sign()), w0, "adamuon", false);
  same_as_eager<B>(muon_with(polar::polargrad{}, 1e-3), w0, "polargrad", false);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(a_bad_gradient_in_a_scope_changes_nothing, B, host_backends) {
  no_reads<B> be;
  const fmat w0 = geometry_test::random<float>(be, 37, 70, 8);
  const char* counted = "held 2 NaN or infinite entries";
  // The row sphere's check is a row kernel: it names the first bad row.
  const char* by_row = "row 0 of the 37x70 operands: G holds NaN or infinity";
  bad_gradient_changes_nothing<B>(polar::sgd_direction{0.1, 0.01}, w0, "sgd", counted, 3);
  polar::momentum_direction mom;
  mom.kind = polar::momentum_kind::ema;
  bad_gradient_changes_nothing<B>(mom, w0, "momentum", counted, 3);
  bad_gradient_changes_nothing<B>(polar::adamw_direction{}, w0, "adamw", counted, 3);
  bad_gradient_changes_nothing<B>(make_sphere_adam(), on_row_sphere(w0, 2.0f), "row-sphere adam", by_row, 6);
  bad_gradient_changes_nothing<B>(make_sphere_momentum(), on_row_sphere(w0, 2.0f), "row-sphere momentum", by_row, 6);
  polar::muon_direction<> muon;
  muon.lr = 0.02;
  bad_gradient_changes_nothing<B>(muon, w0, "muon", counted, 3, false);
  // The Muon family's transforms with state: their moments are untouched.
  bad_gradient_changes_nothing<B>(muon_with(polar::normuon{}), w0, "normuon", counted, 3, false);
  bad_gradient_changes_nothing<B>(muon_with(adamuon_without_sign()), w0, "adamuon", counted, 3, false);
  // MD: its own count, D's direction's and the two gains' directions'.
  bad_gradient_changes_nothing<B>(make_md(polar::sphere_scope::rows), w0, "md-adamw", counted, 12);
}

// Muon in a scope takes the Frobenius norm of a single matrix on the device
// (the rows' norms, then their norm) instead of the backend's one-pass norm,
// which is read back: the input scale differs in its last bits, so the
// steps agree to float rounding rather than bit for bit. The bits are the
// same from run to run in a scope (the CUDA graph test compares a replay
// with the step bit for bit).
BOOST_AUTO_TEST_CASE_TEMPLATE(muon_steps_in_a_scope, B, host_backends) {
  no_reads<B> be;
  const fmat w0 = geometry_test::random<float>(be, 48, 96, 9);
  polar::muon_direction<> muon;
  muon.lr = 0.02;
  muon.weight_decay = 0.01;
  fmat we = w0, wd = w0, wd2 = w0;
  auto se = muon.init(be, polar::make_view(we));
  auto sd = muon.init(be, polar::make_view(wd));
  auto sd2 = muon.init(be, polar::make_view(wd2));
  polar::deferred_checks<no_reads<B>> checks(be);
  for (int k = 0; k < 3; ++k) {
    const fmat g = geometry_test::random<float>(be, w0.rows(), w0.cols(), 60 + std::uint64_t(k));
    muon.step(be, polar::make_view(we), polar::make_view(g), se);
    auto scope = checks.scope();
    muon.step(be, polar::make_view(wd), polar::make_view(g), sd);
    muon.step(be, polar::make_view(wd2), polar::make_view(g), sd2);
  }
  checks.check();
  BOOST_TEST((wd.array() == wd2.array()).all());
  BOOST_TEST(se.steps == 3);
  BOOST_TEST(sd.steps == 3);
  // Each step moves W by lr * scale * |U| ~ 0.02 * 0.7 per entry; the norms
  // differ by a few ulps, which the iteration carries to ~1e-6 relative.
  BOOST_TEST((we - wd).cwiseAbs().maxCoeff() <= 1e-5f * we.cwiseAbs().maxCoeff());
  BOOST_TEST((we - w0).cwiseAbs().maxCoeff() > 1e-3f);
}

// A zero row of W on the row sphere whose gradient row is zero too: the
// eager step raises numerical_error naming the row; in a scope the flag goes
// to a slot, nothing is written, and check() raises the same.
BOOST_AUTO_TEST_CASE_TEMPLATE(a_flagged_row_in_a_scope_changes_nothing, B, host_backends) {
  no_reads<B> be;
  fmat w = on_row_sphere(geometry_test::random<float>(be, 9, 16, 10), 2.0f);
  fmat g = geometry_test::random<float>(be, 9, 16, 11);
  w.row(4).setZero();
  g.row(4).setZero();
  const fmat w0 = w;
  auto opt = make_sphere_adam();
  auto s = opt.init(be, polar::make_view(w));
  const auto s0 = state_bytes(be, s);
  polar::deferred_checks<no_reads<B>> checks(be);
  {
    auto scope = checks.scope();
    opt.step(be, polar::make_view(w), polar::make_view(g), s);
  }
  try {
    checks.check();
    BOOST_FAIL("check() let a zero row pass");
  } catch (const polar::numerical_error& e) {
    const std::string m = e.what();
    BOOST_TEST_INFO(m);
    BOOST_TEST(m.find("row 4 of the 9x16") != std::string::npos);
    BOOST_TEST(m.find("no direction to step in") != std::string::npos);
  }
  BOOST_TEST((w.array() == w0.array()).all());
  BOOST_TEST((state_bytes(be, s) == s0));
}

// A step that does not run deferred (here the row sphere's generic
// sequence, fast_paths off) reads back as it does outside a scope; after a
// failed check in the scope it refuses to write, so nothing after the
// failure changes.
// Identity gains below the floor in a scope: the eager step's value_error
// comes from check(), naming the gains and the count, and nothing moved.
BOOST_AUTO_TEST_CASE_TEMPLATE(identity_gains_below_the_floor_in_a_scope, B, host_backends) {
  no_reads<B> be;
  auto md = make_md(polar::sphere_scope::rows);
  md.phi = polar::gain_map::identity;
  fmat w = geometry_test::random<float>(be, 6, 9, 14);
  const fmat g = geometry_test::random<float>(be, 6, 9, 15);
  auto s = md.init(be, polar::make_view(w));
  s.c.data()[3] = -0.5f;  // the host backends' memory: set in place
  s.c.data()[5] = 0.0f;
  const fmat w0 = w;
  const auto s0 = state_bytes(be, s);
  polar::deferred_checks<no_reads<B>> checks(be);
  {
    auto scope = checks.scope();
    md.step(be, polar::make_view(w), polar::make_view(g), s);
  }
  polar_test::check_throws<polar::value_error>([&] { checks.check(); },
                                               {"polar::row_col_gains::step", "column gains must be >= floor",
                                                "2 of 9", "a deferred check"});
  BOOST_TEST((w.array() == w0.array()).all());
  BOOST_TEST((state_bytes(be, s) == s0));
  BOOST_TEST(s.steps == 0);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(steps_that_read_back_refuse_after_a_failed_check, B, host_backends) {
  B be;
  const fmat w0 = on_row_sphere(geometry_test::random<float>(be, 12, 20, 12), 2.0f);
  fmat g = geometry_test::random<float>(be, 12, 20, 13);
  fmat bad = g;
  bad(3, 3) = std::numeric_limits<float>::quiet_NaN();
  fmat a = w0, m = w0;
  polar::adamw_direction adam;
  auto generic = make_sphere_adam();
  generic.fast_paths = false;
  auto sa = adam.init(be, polar::make_view(a));
  auto sm = generic.init(be, polar::make_view(m));
  const auto sm0 = state_bytes(be, sm);
  polar::deferred_checks<B> checks(be);
  {
    auto scope = checks.scope();
    adam.step(be, polar::make_view(a), polar::make_view(bad), sa);
    try {
      generic.step(be, polar::make_view(m), polar::make_view(g), sm);
      BOOST_FAIL("a step that reads back wrote after a failed check");
    } catch (const polar::non_finite_error& e) {
      BOOST_TEST(std::string(e.what()).find("check() says which") != std::string::npos);
    }
  }
  BOOST_TEST((m.array() == w0.array()).all());
  BOOST_TEST((state_bytes(be, sm) == sm0));
  BOOST_CHECK_THROW(checks.check(), polar::non_finite_error);
  BOOST_TEST((a.array() == w0.array()).all());
  // Without a failure before it, it steps in the scope as outside.
  fmat m2 = w0;
  auto sm2 = generic.init(be, polar::make_view(m2));
  generic.step(be, polar::make_view(m2), polar::make_view(g), sm2);
  {
    auto scope = checks.scope();
    generic.step(be, polar::make_view(m), polar::make_view(g), sm);
  }
  checks.check();
  BOOST_TEST((m.array() == m2.array()).all());
  BOOST_TEST((state_bytes(be, sm) == state_bytes(be, sm2)));
}

// nonfinite_guard in a scope: raise defers like the wrapped step; skip
// decides on the host (it reads back) and skips without an error.
BOOST_AUTO_TEST_CASE_TEMPLATE(guards_in_a_scope, B, host_backends) {
  B be;
  const fmat w0 = geometry_test::random<float>(be, 10, 14, 14);
  fmat g = geometry_test::random<float>(be, 10, 14, 15);
  g(2, 5) = -std::numeric_limits<float>::infinity();
  polar::nonfinite_guard<polar::adamw_direction> guard;
  fmat w = w0;
  auto s = guard.init(be, polar::make_view(w));
  polar::deferred_checks<B> checks(be);
  {
    auto scope = checks.scope();
    guard.step(be, polar::make_view(w), polar::make_view(g), s);
  }
  BOOST_CHECK_THROW(checks.check(), polar::non_finite_error);
  BOOST_TEST((w.array() == w0.array()).all());
  BOOST_TEST(s.inner.steps == 0);
  guard.policy = polar::nonfinite_policy::skip;
  {
    auto scope = checks.scope();
    guard.step(be, polar::make_view(w), polar::make_view(g), s);
  }
  checks.check();
  BOOST_TEST(s.skipped == 1);
  BOOST_TEST((w.array() == w0.array()).all());
}

BOOST_AUTO_TEST_CASE_TEMPLATE(deferred_checks_refuse_bad_use, B, host_backends) {
  B be;
  BOOST_CHECK_THROW(polar::deferred_checks<B>(be, 0), polar::value_error);
  const fmat w0 = geometry_test::random<float>(be, 4, 5, 16);
  const fmat g = geometry_test::random<float>(be, 4, 5, 17);
  fmat w = w0;
  polar::adamw_direction adam;
  auto s = adam.init(be, polar::make_view(w));
  // The checks an AdamW step queues: G's, and in debug builds
  // (POLAR_DEBUG_CHECKS) its state's two moments' too.
  polar::index per_step = 0;
  {
    fmat w1 = w0;
    auto s1 = adam.init(be, polar::make_view(w1));
    polar::deferred_checks<B> probe(be);
    {
      auto scope = probe.scope();
      adam.step(be, polar::make_view(w1), polar::make_view(g), s1);
    }
    per_step = probe.pending();
    probe.check();
  }
  BOOST_TEST(per_step == (POLAR_DEBUG_CHECKS ? 3 : 1));
  polar::deferred_checks<B> checks(be, 2 * per_step);
  BOOST_TEST(checks.capacity() == 2 * per_step);
  {
    auto scope = checks.scope();
    adam.step(be, polar::make_view(w), polar::make_view(g), s);
    adam.step(be, polar::make_view(w), polar::make_view(g), s);
    const fmat w2 = w;
    try {
      adam.step(be, polar::make_view(w), polar::make_view(g), s);
      BOOST_FAIL("a third check fit in two slots");
    } catch (const polar::value_error& e) {
      BOOST_TEST(std::string(e.what()).find(polar::detail::concat("holds ", 2 * per_step, " checks")) !=
                 std::string::npos);
    }
    BOOST_TEST((w.array() == w2.array()).all());
  }
  checks.check();
  BOOST_TEST(s.steps == 2);
  BOOST_TEST(polar::detail::deferred() == nullptr);  // the scope ended
}

// The model-level optimizer in a scope: its gradients' checks are queued;
// with finite gradients its steps are the eager ones; with NaN in one
// tensor's gradient no tensor changes, check() names that tensor, and the
// optimizer's and its groups' step counts (the schedules' position) are
// moved back.
BOOST_AUTO_TEST_CASE_TEMPLATE(an_optimizer_steps_in_a_scope, B, host_backends) {
  no_reads<B> be;
  const fmat e0 = geometry_test::random<float>(be, 30, 16, 20);
  const fmat h0 = geometry_test::random<float>(be, 24, 16, 21);
  const fmat s0 = on_row_sphere(geometry_test::random<float>(be, 16, 16, 22), 2.0f);
  const auto make = [&](fmat& e, fmat& h, fmat& sp) {
    auto opt = std::make_unique<polar::optimizer<no_reads<B>, float>>(be);
    opt->add_group("sphere", make_sphere_adam(), polar::rule::name("sphere"));
    polar::momentum_direction mom;
    mom.nesterov = true;
    opt->add_group("hidden", mom, polar::rule::name("hidden"));
    opt->add_group("rest", polar::adamw_direction{});
    opt->group("hidden").lr_schedule = polar::schedule::cosine(10, 0.1, 2);
    opt->add("embed", polar::make_view(e));
    opt->add("hidden", polar::make_view(h));
    opt->add("sphere", polar::make_view(sp));
    return opt;
  };
  fmat ea = e0, ha = h0, sa = s0, eb = e0, hb = h0, sb = s0;
  auto eager = make(ea, ha, sa);
  auto deferred = make(eb, hb, sb);
  polar::deferred_checks<no_reads<B>> checks(be);
  const auto grads = [&](std::uint64_t seed) {
    return std::vector<fmat>{geometry_test::random<float>(be, 30, 16, seed) * 0.1f,
                             geometry_test::random<float>(be, 24, 16, seed + 1) * 0.1f,
                             geometry_test::random<float>(be, 16, 16, seed + 2) * 0.1f};
  };
  const auto views = [](const std::vector<fmat>& g) {
    return std::vector<polar::param_view<const float>>{polar::make_view(g[0]), polar::make_view(g[1]),
                                                        polar::make_view(g[2])};
  };
  // One step of each, the deferred one checked; then the same weights.
  const auto step_both = [&](const std::vector<fmat>& g) {
    eager->step(views(g));
    {
      auto scope = checks.scope();
      deferred->step(views(g));
    }
    checks.check();
    BOOST_TEST((ea.array() == eb.array()).all());
    BOOST_TEST((ha.array() == hb.array()).all());
    BOOST_TEST((sa.array() == sb.array()).all());
  };
  for (std::uint64_t k = 0; k < 2; ++k) step_both(grads(100 + 10 * k));
  BOOST_TEST(deferred->steps() == 2);

  auto bad = grads(200);
  bad[1](3, 4) = std::numeric_limits<float>::quiet_NaN();
  const fmat e1 = eb, h1 = hb, s1 = sb;
  {
    auto scope = checks.scope();
    deferred->step(views(bad));
  }
  try {
    checks.check();
    BOOST_FAIL("check() let a NaN gradient pass");
  } catch (const polar::non_finite_error& e) {
    const std::string m = e.what();
    BOOST_TEST_INFO(m);
    BOOST_TEST(m.find("the gradient of 'hidden' (24x16) held 1 NaN") != std::string::npos);
  }
  BOOST_TEST((eb.array() == e1.array()).all());
  BOOST_TEST((hb.array() == h1.array()).all());
  BOOST_TEST((sb.array() == s1.array()).all());
  BOOST_TEST(deferred->steps() == 2);
  BOOST_TEST(deferred->group("hidden").steps() == 2);

  // The next step is the eager optimizer's third.
  step_both(grads(300));
}

// Global clipping in a scope: the norms and the factor stay on the device
// (the rows' norms, then their norms, in the gradients' precision), so the
// clipped steps agree with the eager ones to float rounding rather than bit
// for bit (the eager factor comes from sums in double read back);
// last_norm() is NaN after such a step. A NaN gradient still changes
// nothing, and check() names it rather than the norm it made NaN.
// Global clipping, a group's own clipping under it, and a group's alone:
// the factors stay on the device and the steps agree with the eager ones
// to float rounding (the eager factors come from sums in double read back).
BOOST_AUTO_TEST_CASE_TEMPLATE(an_optimizer_clips_in_a_scope, B, host_backends) {
  no_reads<B> be;
  const fmat h0 = geometry_test::random<float>(be, 24, 16, 30);
  const fmat b0 = geometry_test::random<float>(be, 1, 16, 31);
  const auto make = [&](fmat& h, fmat& b, double global, double group) {
    auto opt = std::make_unique<polar::optimizer<no_reads<B>, float>>(be);
    polar::muon_direction<> muon;
    muon.lr = 0.02;
    opt->add_group("hidden", muon, polar::rule::matrices());
    // SGD for the bias, whose step follows the clipping factors (Muon's and
    // Adam's steps hardly depend on the gradient's scale).
    opt->add_group("rest", polar::sgd_direction{0.5, 0.0});
    opt->clip_norm = global;
    opt->group("rest").clip_norm = group;
    opt->add("hidden", polar::make_view(h));
    opt->add("bias", polar::make_view(b));
    return opt;
  };
  // The bias gradient's norm is about 4: after the global factor (about
  // 0.5 / 20) about 0.1, which the group's 0.05 halves; alone, 0.05 / 4.
  for (const auto& [global, group] : {std::pair<double, double>{0.5, 0}, {0.5, 0.05}, {0, 0.05}}) {
    BOOST_TEST_CONTEXT("clip_norm " << global << ", the bias group's " << group) {
      fmat ha = h0, ba = b0, hb = h0, bb = b0, bu = b0;
      auto eager = make(ha, ba, global, group);
      auto deferred = make(hb, bb, global, group);
      fmat hu = h0;
      auto unclipped = make(hu, bu, global, 0);  // without the group's clipping
      polar::deferred_checks<no_reads<B>> checks(be);
      for (std::uint64_t k = 0; k < 3; ++k) {
        const fmat gh = geometry_test::random<float>(be, 24, 16, 40 + k);  // norm ~20
        const fmat gb = geometry_test::random<float>(be, 1, 16, 50 + k);
        eager->step({polar::make_view(gh), polar::make_view(gb)});
        unclipped->step({polar::make_view(gh), polar::make_view(gb)});
        {
          auto scope = checks.scope();
          deferred->step({polar::make_view(gh), polar::make_view(gb)});
        }
        checks.check();
        BOOST_TEST(eager->last_norm() > 10.0);
        BOOST_TEST(std::isnan(deferred->last_norm()));
      }
      BOOST_TEST((ha - hb).cwiseAbs().maxCoeff() <= 1e-5f * ha.cwiseAbs().maxCoeff());
      BOOST_TEST((ba - bb).cwiseAbs().maxCoeff() <= 1e-5f * ba.cwiseAbs().maxCoeff());
      BOOST_TEST((ba - b0).cwiseAbs().maxCoeff() > 1e-4f);
      if (group > 0) BOOST_TEST((bu - bb).cwiseAbs().maxCoeff() > 1e-4f);  // the group's clipping acted
    }
  }
  fmat hb = h0, bb = b0;
  auto deferred = make(hb, bb, 0.5, 0.05);
  polar::deferred_checks<no_reads<B>> checks(be);
  for (std::uint64_t k = 0; k < 3; ++k) {
    const fmat gh = geometry_test::random<float>(be, 24, 16, 40 + k);
    const fmat gb = geometry_test::random<float>(be, 1, 16, 50 + k);
    auto scope = checks.scope();
    deferred->step({polar::make_view(gh), polar::make_view(gb)});
  }
  checks.check();

  fmat gh = geometry_test::random<float>(be, 24, 16, 60);
  const fmat gb = geometry_test::random<float>(be, 1, 16, 61);
  gh(0, 0) = std::numeric_limits<float>::infinity();
  const fmat h1 = hb, b1 = bb;
  {
    auto scope = checks.scope();
    deferred->step({polar::make_view(gh), polar::make_view(gb)});
  }
  try {
    checks.check();
    BOOST_FAIL("check() let an infinite gradient pass");
  } catch (const polar::non_finite_error& e) {
    BOOST_TEST(std::string(e.what()).find("the gradient of 'hidden'") != std::string::npos);
  }
  BOOST_TEST((hb.array() == h1.array()).all());
  BOOST_TEST((bb.array() == b1.array()).all());
  BOOST_TEST(deferred->steps() == 3);
}

BOOST_AUTO_TEST_SUITE_END()
