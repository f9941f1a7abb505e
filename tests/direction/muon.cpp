// Tests of polar/direction/muon.hpp: the momentum and Nesterov arithmetic
// (through an orthogonalizer that passes its input through), the scale
// rules, weight decay, zero gradients, convergence on a quadratic with a
// known answer, and bad input. On the Eigen backend and Thrust's OMP and CPP
// systems.
#include "polar/direction/muon.hpp"

#include "polar/core/tensor.hpp"

#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/orthogonalize/gram_newton_schulz.hpp"
#include "support.hpp"

namespace {

template <class T>
using rmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// An orthogonalizer that returns its input: exposes the momentum arithmetic.
struct pass_through {
  template <class B, class T>
  struct workspace {};
  template <class B, class T>
  void operator()(B& be, polar::in_batch<T> m, polar::batch_view<T> out, workspace<B, T>&) const {
    for (polar::index k = 0; k < m.count(); ++k) be.copy(m[k], out[k]);
  }
};

using backends = polar_test::host_backends;

}  // namespace

BOOST_AUTO_TEST_SUITE(direction_muon)

BOOST_AUTO_TEST_CASE(scale_rules) {
  BOOST_TEST(polar::muon_scale(polar::scale_rule::original, 1024, 256) == 2.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::original, 256, 1024) == 1.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::match_adamw_rms, 256, 1024) == 0.2 * 32.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::spectral, 256, 1024) == 0.5);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::none, 256, 1024) == 1.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::aspect, 256, 1024) == 2.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::aspect, 1024, 256) == 2.0);
  BOOST_TEST(polar::muon_scale(polar::scale_rule::aspect, 300, 300) == 1.0);
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

BOOST_AUTO_TEST_CASE_TEMPLATE(stacks_kernels_and_vectors, B, backends) {
  B be;
  polar::muon_direction<> d;
  d.scale = polar::scale_rule::spectral;
  // A 3-D tensor (4 experts of 8 x 20) steps like four matrices with states
  // of their own.
  std::vector<float> w(4 * 8 * 20), g(w.size());
  be.fill_random(polar::row_major_view(w.data(), 1, polar::index(w.size())), polar::rng_key{80}, polar::distribution::normal);
  be.fill_random(polar::row_major_view(g.data(), 1, polar::index(g.size())), polar::rng_key{81}, polar::distribution::normal);
  std::vector<float> w_each = w;
  const polar::tensor_view<float> wt(w.data(), {4, 8, 20});
  const polar::tensor_view<const float> gt(g.data(), {4, 8, 20});
  auto s = d.init(be, wt);
  BOOST_TEST(s.count == 4);
  for (int step = 0; step < 2; ++step) d.step(be, wt, gt, s);
  for (polar::index k = 0; k < 4; ++k) {
    const auto wk = polar::row_major_view(w_each.data() + k * 160, 8, 20);
    const auto gk = polar::as_const(polar::row_major_view(g.data() + k * 160, 8, 20));
    auto sk = d.init(be, wk);
    for (int step = 0; step < 2; ++step) d.step(be, wk, gk, sk);
  }
  double diff = 0;
  for (std::size_t i = 0; i < w.size(); ++i) diff = std::max(diff, double(std::abs(w[i] - w_each[i])));
  BOOST_TEST(diff <= 1e-6);
  // A conv kernel (6, 4, 3, 3) is the 6 x 36 matrix, scale sqrt(6 / 36).
  std::vector<double> k(6 * 4 * 3 * 3, 0.0), kg(k.size()), km(k.size(), 0.0);
  be.fill_random(polar::row_major_view(kg.data(), 1, polar::index(kg.size())), polar::rng_key{82}, polar::distribution::normal);
  const polar::tensor_view<double> kt(k.data(), {6, 4, 3, 3});
  auto ks = d.init(be, kt);
  BOOST_TEST(ks.rows == 6);
  BOOST_TEST(ks.cols == 36);
  d.step(be, kt, polar::tensor_view<const double>(kg.data(), {6, 4, 3, 3}), ks);
  const auto kmv = polar::row_major_view(km.data(), 6, 36);
  auto kms = d.init(be, kmv);
  d.step(be, kmv, polar::as_const(polar::row_major_view(kg.data(), 6, 36)), kms);
  for (std::size_t i = 0; i < k.size(); ++i) BOOST_TEST(k[i] == km[i]);
  // And the update has the flattened shape's spectral scale: lr sqrt(6/36)
  // times an orthogonal-ish factor whose largest singular value is near 1.
  Eigen::Map<const rmat<double>> kmat(k.data(), 6, 36);
  const double top = Eigen::JacobiSVD<rmat<double>>(kmat).singularValues()(0);
  BOOST_TEST(top / (d.lr * std::sqrt(6.0 / 36.0)) >= 0.6);
  BOOST_TEST(top / (d.lr * std::sqrt(6.0 / 36.0)) <= 1.2);
  // 1-D tensors go to AdamW.
  std::vector<float> bias(16);
  polar_test::check_throws<polar::unsupported_error>(
      [&] { (void)d.init(be, polar::tensor_view<float>(bias.data(), {16})); },
      {"polar::muon::init", "1-D tensor (16)", "AdamW"});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(iteration_in_a_lower_precision, B, backends) {
  // Double parameters, float iteration: the momentum stays double, the
  // orthogonalizer runs in float, and the step agrees with the all-double
  // one to float accuracy (but is not the same bits).
  B be;
  rmat<double> w(24, 64), g(24, 64);
  be.fill_random(polar::make_view(w), polar::rng_key{90}, polar::distribution::normal);
  be.fill_random(polar::make_view(g), polar::rng_key{91}, polar::distribution::normal);
  rmat<double> w_low = w;
  polar::muon_direction<polar::newton_schulz, float> low;
  polar::muon_direction<> full;
  auto sl = low.init(be, polar::make_view(static_cast<const rmat<double>&>(w_low)));
  auto sf = full.init(be, polar::make_view(static_cast<const rmat<double>&>(w)));
  static_assert(std::is_same_v<decltype(sl.buf.data()), double*>);
  BOOST_TEST(!sl.scratch);  // the scratch is made by the first step, not by init
  static_assert(std::is_same_v<decltype(sl.scratch->u.data()), float*>);
  const auto gv = polar::make_view(static_cast<const rmat<double>&>(g));
  for (int k = 0; k < 3; ++k) {
    low.step(be, polar::make_view(w_low), gv, sl);
    full.step(be, polar::make_view(w), gv, sf);
  }
  const double step_size = 3 * full.lr;
  BOOST_TEST((w_low - w).cwiseAbs().maxCoeff() <= 1e-5 * step_size);
  BOOST_TEST((w_low - w).cwiseAbs().maxCoeff() > 0.0);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(every_orthogonalizer_plugs_in, B, backends) {
  B be;
  rmat<float> w(16, 96), g(16, 96);
  be.fill_random(polar::make_view(g), polar::rng_key{95}, polar::distribution::normal);
  w.setZero();
  polar::muon_direction<polar::gram_newton_schulz> gram;
  auto s = gram.init(be, polar::make_view(static_cast<const rmat<float>&>(w)));
  gram.step(be, polar::make_view(w), polar::make_view(static_cast<const rmat<float>&>(g)), s);
  rmat<float> w2 = rmat<float>::Zero(16, 96);
  polar::muon_direction<> plain;
  auto s2 = plain.init(be, polar::make_view(static_cast<const rmat<float>&>(w2)));
  plain.step(be, polar::make_view(w2), polar::make_view(static_cast<const rmat<float>&>(g)), s2);
  BOOST_TEST((w - w2).norm() <= 1e-3f * w2.norm());
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
