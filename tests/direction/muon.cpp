// Tests of polar/direction/muon.hpp: the momentum and Nesterov arithmetic
// (through an orthogonalizer that passes its input through), the scale
// rules, weight decay, zero gradients, convergence on a quadratic with a
// known answer, and bad input. On the Eigen backend and Thrust's OMP system.
#include "polar/direction/muon.hpp"

#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include "polar/backend/eigen.hpp"
#include "polar/backend/thrust.hpp"
#include "support.hpp"

namespace {

template <class T>
using rmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// An orthogonalizer that returns its input: exposes the momentum arithmetic.
struct pass_through {
  template <class B, class T>
  struct workspace {};
  template <class B, class T>
  void operator()(B& be, polar::in_matrix<T> m, polar::matrix_view<T> out, workspace<B, T>&) const {
    be.copy(m, out);
  }
};

using backends = boost::mpl::list<polar::backend::eigen, polar::backend::thrust<polar::system::omp>>;

}  // namespace

BOOST_AUTO_TEST_SUITE(direction_muon)

BOOST_AUTO_TEST_CASE(scale_rules) {
  BOOST_TEST(polar::muon_scale(polar::scale_rule::original, 1024, 256) == 2.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::original, 256, 1024) == 1.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::match_adamw_rms, 256, 1024) == 0.2 * 32.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::spectral, 256, 1024) == 0.5);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::none, 256, 1024) == 1.0);
  // A conv kernel (64, 32, 3, 3) is flattened to 64 x 288: the scale comes
  // from the flattened shape.
  BOOST_TEST(polar::muon_scale(polar::scale_rule::spectral, 64, 32 * 3 * 3) == std::sqrt(64.0 / 288.0));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(momentum_and_nesterov_arithmetic, B, backends) {
  B be;
  rmat<double> w0(3, 4), g1(3, 4), g2(3, 4);
  w0.setRandom();
  g1.setRandom();
  g2.setRandom();
  const double mu = 0.9, lr = 0.1;
  for (auto kind : {polar::momentum_kind::ema, polar::momentum_kind::heavy_ball})
    for (bool nesterov : {false, true}) {
      BOOST_TEST_CONTEXT("ema " << (kind == polar::momentum_kind::ema) << " nesterov " << nesterov) {
        polar::muon_direction<pass_through> d{lr, mu, nesterov, kind, polar::scale_rule::none, 0.0, {}};
        rmat<double> w = w0;
        auto s = d.init(be, polar::make_view(static_cast<const rmat<double>&>(w)));
        rmat<double> buf = rmat<double>::Zero(3, 4), want = w0;
        for (const rmat<double>* g : {&g1, &g2}) {
          d.step(be, polar::make_view(w), polar::make_view(*g), s);
          const double c = kind == polar::momentum_kind::ema ? 1 - mu : 1.0;
          buf = mu * buf + c * *g;
          rmat<double> m = buf;
          if (nesterov) m = kind == polar::momentum_kind::ema ? rmat<double>((1 - mu) * *g + mu * buf) : rmat<double>(*g + mu * buf);
          want -= lr * m;
        }
        BOOST_TEST((w - want).norm() <= 1e-14);
        BOOST_TEST(s.steps == 2);
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(zero_gradient_and_weight_decay, B, backends) {
  B be;
  rmat<float> w(16, 40), zero = rmat<float>::Zero(16, 40);
  w.setRandom();
  const rmat<float> w0 = w;
  polar::muon_direction<> d;  // Newton–Schulz, Nesterov, EMA, original scale
  auto s = d.init(be, polar::make_view(static_cast<const rmat<float>&>(w)));
  d.step(be, polar::make_view(w), polar::make_view(zero), s);
  BOOST_TEST(w.allFinite());
  BOOST_TEST((w - w0).norm() == 0.0f);
  d.weight_decay = 0.5;
  d.step(be, polar::make_view(w), polar::make_view(zero), s);
  BOOST_TEST((w - w0 * float(1 - 0.02 * 0.5)).norm() <= 1e-6f * w0.norm());
}

BOOST_AUTO_TEST_CASE_TEMPLATE(the_update_is_orthogonal_and_scaled, B, backends) {
  B be;
  rmat<double> w = rmat<double>::Zero(96, 24), g(96, 24);
  be.fill_random(polar::make_view(g), polar::rng_key{5}, polar::distribution::normal);
  polar::muon_direction<polar::svd_polar> d{1.0, 0.0, false, polar::momentum_kind::ema, polar::scale_rule::original, 0.0, {}};
  auto s = d.init(be, polar::make_view(static_cast<const rmat<double>&>(w)));
  d.step(be, polar::make_view(w), polar::make_view(g), s);
  // W = -lr sqrt(96/24) U V^T: every singular value is 2.
  const auto sv = Eigen::JacobiSVD<rmat<double>>(w).singularValues();
  BOOST_TEST(std::abs(sv.maxCoeff() - 2.0) <= 1e-10);
  BOOST_TEST(std::abs(sv.minCoeff() - 2.0) <= 1e-10);
  BOOST_TEST((w.transpose() * g).trace() < 0.0);  // a descent direction
}

BOOST_AUTO_TEST_CASE_TEMPLATE(converges_on_a_quadratic_with_a_known_answer, B, backends) {
  // f(W) = 1/2 ||W - W*||_F^2, gradient W - W*. With a learning rate that
  // decays geometrically, Muon drives every singular value of the error to
  // zero; the error ends at the order of the last step size.
  B be;
  rmat<double> target(32, 64), w = rmat<double>::Zero(32, 64), g(32, 64);
  be.fill_random(polar::make_view(target), polar::rng_key{7}, polar::distribution::normal);
  polar::muon_direction<> d;
  d.orthogonalizer.schedule = polar::schedules::polar_express8;
  d.scale = polar::scale_rule::none;
  d.momentum = 0.5;
  auto s = d.init(be, polar::make_view(static_cast<const rmat<double>&>(w)));
  const double start = target.norm();
  for (int k = 0; k < 200; ++k) {
    d.lr = 2.0 * std::pow(0.96, k);
    g = w - target;
    d.step(be, polar::make_view(w), polar::make_view(static_cast<const rmat<double>&>(g)), s);
  }
  BOOST_TEST((w - target).norm() / start <= 1e-2);
}

BOOST_AUTO_TEST_CASE(bad_input_is_rejected_and_leaves_everything_unchanged) {
  polar::backend::eigen be;
  polar::muon_direction<> d;
  rmat<float> w(8, 12), g(8, 12);
  w.setRandom();
  g.setRandom();
  auto s = d.init(be, polar::make_view(static_cast<const rmat<float>&>(w)));
  const rmat<float> w0 = w;
  rmat<float> bias(1, 12);
  polar_test::check_throws<polar::unsupported_error>(
      [&] { (void)d.init(be, polar::make_view(static_cast<const rmat<float>&>(bias))); },
      {"polar::muon::init", "1x12", "AdamW"});
  g(3, 4) = std::numeric_limits<float>::quiet_NaN();
  polar_test::check_throws<polar::non_finite_error>(
      [&] { d.step(be, polar::make_view(w), polar::make_view(static_cast<const rmat<float>&>(g)), s); },
      {"polar::muon::step", "8x12", "NaN"});
  BOOST_TEST((w - w0).norm() == 0.0f);
  BOOST_TEST(s.steps == 0);
  g.setRandom();
  auto bad = d;
  bad.momentum = 1.0;
  polar_test::check_throws<polar::value_error>(
      [&] { bad.step(be, polar::make_view(w), polar::make_view(static_cast<const rmat<float>&>(g)), s); },
      {"momentum must be in [0, 1)", "1"});
  bad = d;
  bad.lr = -0.1;
  polar_test::check_throws<polar::value_error>(
      [&] { bad.step(be, polar::make_view(w), polar::make_view(static_cast<const rmat<float>&>(g)), s); },
      {"lr must be finite and >= 0", "-0.1"});
  rmat<float> other(12, 8), og(12, 8);
  polar_test::check_throws<polar::shape_error>(
      [&] { d.step(be, polar::make_view(other), polar::make_view(static_cast<const rmat<float>&>(og)), s); },
      {"W is 12x8", "state was made for 8x12"});
  polar_test::check_throws<polar::value_error>(
      [&] { d.step(be, polar::make_view(w), polar::make_view(static_cast<const rmat<float>&>(w)), s); },
      {"polar::muon::step", "shares memory"});
  BOOST_TEST((w - w0).norm() == 0.0f);
}

BOOST_AUTO_TEST_SUITE_END()
