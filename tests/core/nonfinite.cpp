// tests/core/nonfinite.cpp: nonfinite_guard. With a finite gradient it is the
// wrapped optimizer bit for bit; with NaN or infinity, raise writes nothing,
// skip leaves W and the state alone and counts, zero steps as on the gradient
// with those entries at 0. Every policy over several kinds of optimizer, on
// Eigen and both Thrust host systems.
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <limits>
#include <string>

#include "polar/checkpoint.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/manifold_muon.hpp"
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

// Three steps, the second with bad entries in G, under each policy, against
// the bare optimizer.
template <class B, class Opt>
void policies(B& be, const Opt& bare, const fmat& w0, const char* what) {
  BOOST_TEST_CONTEXT(what) {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    const fmat g0 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 31) * 0.1f;
    const fmat g2 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 32) * 0.1f;
    fmat g1 = geometry_test::random<float>(be, w0.rows(), w0.cols(), 33) * 0.1f;
    fmat g1_zeroed = g1;
    g1(0, 0) = nan;
    g1(1, 2) = inf;
    g1(w0.rows() - 1, w0.cols() - 1) = -inf;
    g1_zeroed(0, 0) = g1_zeroed(1, 2) = g1_zeroed(w0.rows() - 1, w0.cols() - 1) = 0;
    const fmat g1_copy = g1;
    polar::nonfinite_guard<Opt> guard{bare};
    const auto gv = [](const fmat& g) { return polar::make_view(g); };

    // A finite gradient: the bare optimizer's bits.
    fmat wa = w0, wb = w0;
    auto sa = bare.init(be, polar::make_view(wa));
    auto sb = guard.init(be, polar::make_view(wb));
    bare.step(be, polar::make_view(wa), gv(g0), sa);
    guard.step(be, polar::make_view(wb), gv(g0), sb);
    BOOST_TEST((wa.array() == wb.array()).all());

    // raise: non_finite_error with the count, nothing written.
    const fmat w_before = wb;
    const auto s_before = state_bytes(be, sb);
    try {
      guard.step(be, polar::make_view(wb), gv(g1), sb);
      BOOST_FAIL("no error for NaN under the raise policy");
    } catch (const polar::non_finite_error& e) {
      BOOST_TEST(std::string(e.what()).find("holds 3 NaN or infinite entries") != std::string::npos, e.what());
    }
    BOOST_TEST((wb.array() == w_before.array()).all());
    BOOST_TEST((state_bytes(be, sb) == s_before));

    // skip: the same as never seeing g1.
    guard.policy = polar::nonfinite_policy::skip;
    guard.step(be, polar::make_view(wb), gv(g1), sb);
    BOOST_TEST((wb.array() == w_before.array()).all());
    BOOST_TEST(sb.skipped == 1);
    guard.step(be, polar::make_view(wb), gv(g2), sb);
    bare.step(be, polar::make_view(wa), gv(g2), sa);
    BOOST_TEST((wa.array() == wb.array()).all());

    // zero: the same as the step on g1 with those entries at 0; g1 untouched.
    fmat wc = w0, wd = w0;
    auto sc = bare.init(be, polar::make_view(wc));
    auto sd = guard.init(be, polar::make_view(wd));
    guard.policy = polar::nonfinite_policy::zero;
    bare.step(be, polar::make_view(wc), gv(g1_zeroed), sc);
    guard.step(be, polar::make_view(wd), gv(g1), sd);
    BOOST_TEST((wc.array() == wd.array()).all());
    BOOST_TEST(sd.zeroed_steps == 1);
    BOOST_TEST(sd.zeroed_entries == 3);
    BOOST_TEST((g1.array().isNaN() == g1_copy.array().isNaN()).all());
    BOOST_TEST(std::isinf(g1(1, 2)));

    // The counts go into a checkpoint and come back.
    polar::checkpoint ck;
    ck.put_state(be, "guard", sd);
    auto se = guard.init(be, polar::make_view(wd));
    polar::checkpoint::parse(ck.serialize()).get_state(be, "guard", se);
    BOOST_TEST(se.zeroed_entries == 3);

    // A gradient of another shape is refused under every policy.
    const fmat wrong(w0.cols(), w0.rows());
    for (auto p : {polar::nonfinite_policy::raise, polar::nonfinite_policy::skip, polar::nonfinite_policy::zero}) {
      guard.policy = p;
      BOOST_CHECK_THROW(guard.step(be, polar::make_view(wd), gv(wrong), sd), polar::shape_error);
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(nonfinite)

BOOST_AUTO_TEST_CASE_TEMPLATE(every_policy_on_every_kind_of_optimizer, B, host_backends) {
  B be;
  const fmat w = geometry_test::random<float>(be, 6, 4, 30);
  policies(be, polar::adamw_direction{}, w, "adamw");
  policies(be, polar::momentum_direction{}, w, "momentum");
  policies(be, polar::muon_direction<>{}, w, "muon");
  policies(be, polar::md_adamw{}, w, "md_adamw");
  fmat on = w;
  polar::stiefel<> st;
  polar::stiefel<>::workspace<B, float> ws;
  st.project(be, polar::make_view(on), ws);
  policies(be, polar::riemannian_adam<polar::stiefel<>>{}, on, "riemannian adam on stiefel");
  polar::manifold_muon<> mm;
  mm.max_dual_steps = 5;
  policies(be, mm, on, "manifold muon");
}

BOOST_AUTO_TEST_CASE(a_bad_hyperparameter_is_reported_under_every_policy) {
  polar::backend::eigen be;
  fmat w = geometry_test::random<float>(be, 3, 3, 1), g = w;
  g(0, 0) = std::numeric_limits<float>::quiet_NaN();
  polar::nonfinite_guard<polar::adamw_direction> guard;
  auto s = guard.init(be, polar::make_view(w));
  guard.optimizer.lr = -1;
  for (auto p : {polar::nonfinite_policy::skip, polar::nonfinite_policy::zero}) {
    guard.policy = p;
    BOOST_CHECK_THROW(guard.step(be, polar::make_view(w), polar::make_view(std::as_const(g)), s), polar::value_error);
  }
  BOOST_TEST(s.skipped == 0);
  BOOST_TEST(s.zeroed_steps == 0);
}

BOOST_AUTO_TEST_SUITE_END()
