// tests/core/reliability.cpp: steps that fail late change nothing, and the
// debug mode's state check. The fuzzer (fuzz/step.cpp) found the first: a
// retraction or a projection that refuses a step after the direction moved
// its state. Each case here forces that refusal and compares the state's
// bytes (as a checkpoint writes them) and W with their values before, then
// checks that the next good step equals a run that never saw the bad one.
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <limits>
#include <string>

#include "polar/checkpoint.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/geometry/stiefel.hpp"
#include "polar/nonfinite.hpp"
#include "core/state_bytes.hpp"
#include "geometry/geometry_support.hpp"

namespace {

using geometry_test::mat;
using fmat = mat<float>;
using core_test::host_backends;

using core_test::state_bytes;

// Two good steps around a failing one (opt_bad), against two good steps.
template <class B, class Opt, class Error>
void late_failure_changes_nothing(B& be, const Opt& good, const Opt& bad, const fmat& w0, const char* what) {
  BOOST_TEST_CONTEXT(what) {
    const fmat g1 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 41);
    const fmat g2 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 42);
    fmat wa = w0, wb = w0;
    auto sa = good.init(be, polar::make_view(wa));
    auto sb = good.init(be, polar::make_view(wb));
    good.step(be, polar::make_view(wa), polar::make_view(g1), sa);
    good.step(be, polar::make_view(wb), polar::make_view(g1), sb);
    const fmat w_before = wb;
    const auto s_before = state_bytes(be, sb);
    BOOST_CHECK_THROW(bad.step(be, polar::make_view(wb), polar::make_view(g2), sb), Error);
    BOOST_TEST((wb.array() == w_before.array()).all());
    BOOST_TEST((state_bytes(be, sb) == s_before));
    good.step(be, polar::make_view(wa), polar::make_view(g2), sa);
    good.step(be, polar::make_view(wb), polar::make_view(g2), sb);
    BOOST_TEST((wa.array() == wb.array()).all());
    BOOST_TEST((state_bytes(be, sa) == state_bytes(be, sb)));
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(reliability)

// A learning rate near float's largest value: the direction's update is
// finite but X + U overflows, so the retraction (or the projection of D)
// refuses it after the moments moved.
BOOST_AUTO_TEST_CASE_TEMPLATE(a_step_refused_late_changes_nothing, B, host_backends) {
  B be;
  const float huge = 3e38f;
  {
    polar::riemannian_adam<polar::hypersphere> good, bad;
    good.direction.lr = bad.direction.lr = 1e-2;
    bad.direction.lr = huge;
    fmat w = geometry_test::random<float>(be, 4, 6, 40);
    w /= w.norm();
    late_failure_changes_nothing<B, decltype(good), polar::numerical_error>(be, good, bad, w,
                                                                            "riemannian adam, flat sphere");
    good.geometry.scope = bad.geometry.scope = polar::sphere_scope::cols;
    for (int j = 0; j < w.cols(); ++j) w.col(j) /= w.col(j).norm();
    late_failure_changes_nothing<B, decltype(good), polar::numerical_error>(be, good, bad, w,
                                                                            "riemannian adam, column spheres");
  }
  {
    polar::riemannian_momentum<polar::hypersphere> good, bad;
    good.geometry.retraction = bad.geometry.retraction = polar::sphere_retraction::exponential;
    bad.direction.lr = huge;
    fmat w = geometry_test::random<float>(be, 3, 5, 43);
    w /= w.norm();
    late_failure_changes_nothing<B, decltype(good), polar::numerical_error>(be, good, bad, w,
                                                                            "riemannian momentum, exponential map");
  }
  {
    // MD over momentum: not the fused AdamW path; D's projection refuses.
    polar::row_col_gains<polar::momentum_direction> good, bad;
    bad.direction.lr = huge;
    bad.direction.momentum = 0;
    good.direction.momentum = 0;
    const fmat w = geometry_test::random<float>(be, 5, 4, 44);
    late_failure_changes_nothing<B, decltype(good), polar::numerical_error>(be, good, bad, w, "md momentum");
  }
}

BOOST_AUTO_TEST_CASE(settings_no_step_can_use_are_refused_before_anything) {
  polar::backend::eigen be;
  polar::riemannian_momentum<polar::stiefel<>> opt;
  opt.geometry.transport_by = polar::stiefel_transport::cayley;  // with the QR retraction
  fmat w = geometry_test::random<float>(be, 6, 3, 45);
  polar::stiefel<>::workspace<polar::backend::eigen, float> ws;
  opt.geometry.project(be, polar::make_view(w), ws);
  auto s = opt.init(be, polar::make_view(w));
  const fmat g = geometry_test::random<float>(be, 6, 3, 46), before = w;
  const auto s_before = state_bytes(be, s);
  try {
    opt.step(be, polar::make_view(w), polar::make_view(g), s);
    BOOST_FAIL("no error for the Cayley transport after a QR retraction");
  } catch (const polar::value_error& e) {
    BOOST_TEST(std::string(e.what()).find("the Cayley transport needs retraction = stiefel_retraction::cayley") !=
                   std::string::npos,
               e.what());
  }
  BOOST_TEST((w.array() == before.array()).all());
  BOOST_TEST((state_bytes(be, s) == s_before));
}

// The debug mode (POLAR_DEBUG_CHECKS: on in the sanitizer build, off in
// Release) refuses a state holding NaN, naming the field; off, the step
// runs (and spreads the NaN, which is what the check is for).
BOOST_AUTO_TEST_CASE(the_debug_mode_checks_the_state) {
  polar::backend::eigen be;
  fmat w = geometry_test::random<float>(be, 3, 4, 47);
  const fmat g = geometry_test::random<float>(be, 3, 4, 48);
  polar::adamw_direction opt;
  auto s = opt.init(be, polar::make_view(w));
  s.v.data()[5] = std::numeric_limits<float>::quiet_NaN();
  const fmat before = w;
#if POLAR_DEBUG_CHECKS
  try {
    opt.step(be, polar::make_view(w), polar::make_view(g), s);
    BOOST_FAIL("the debug mode let a NaN in the state through");
  } catch (const polar::non_finite_error& e) {
    BOOST_TEST(std::string(e.what()).find("polar::adamw::step: the state's 'v' (12 elements) holds NaN") !=
                   std::string::npos,
               e.what());
  }
  BOOST_TEST((w.array() == before.array()).all());
  // Nested states name the path.
  polar::riemannian_adam<polar::hypersphere> ra;
  fmat u = before / before.norm();
  auto rs = ra.init(be, polar::make_view(u));
  rs.dir.m.data()[0] = std::numeric_limits<float>::infinity();
  try {
    ra.step(be, polar::make_view(u), polar::make_view(g), rs);
    BOOST_FAIL("the debug mode let an infinity in a nested state through");
  } catch (const polar::non_finite_error& e) {
    BOOST_TEST(std::string(e.what()).find("the state's 'direction/m'") != std::string::npos, e.what());
  }
#else
  opt.step(be, polar::make_view(w), polar::make_view(g), s);
  BOOST_TEST(std::isnan(w(1, 1)));
#endif
}

BOOST_AUTO_TEST_SUITE_END()
