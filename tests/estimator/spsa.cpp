// The SPSA estimator: the perturbation pass, the estimate's bias, restoring,
// SGD on test functions, and bad input; on the Eigen backend and the Thrust
// host systems.
#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/estimator/spsa.hpp"

namespace {

using backends = polar_test::host_backends;
template <class T>
using mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using dvec = Eigen::VectorXd;

template <class T>
bool same_bits(const mat<T>& a, const mat<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(T) * std::size_t(a.size())) == 0;
}

// L(theta) = 1/2 sum_i h_i theta_i^2 - b^T theta over a parameter set of two
// tensors (theta = [x; y]): its gradient is h . theta - b.
struct quadratic {
  dvec h, b;
  double operator()(const dvec& t) const { return 0.5 * (h.array() * t.array().square()).sum() - b.dot(t); }
  dvec grad(const dvec& t) const { return dvec(h.array() * t.array()) - b; }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(estimator_spsa)

// x + s z in one rounding, z the stream's values: the same bits on every
// backend and for any layout, and what add_scaled gives element by element.
BOOST_AUTO_TEST_CASE_TEMPLATE(add_random_is_the_same_everywhere, B, backends) {
  B be;
  polar::backend::eigen ref;
  for (auto d : {polar::distribution::normal, polar::distribution::rademacher})
    BOOST_TEST_CONTEXT(polar::to_string(d)) {
      const polar::rng_key key{7, 2, 30, 5};
      mat<float> x(37, 29), z(37, 29);
      ref.fill_random(polar::make_view(x), polar::rng_key{1}, polar::distribution::normal, 0.02f);
      ref.fill_random(polar::make_view(z), key, d, 1.0f, 123);
      mat<float> expect = x;
      for (Eigen::Index i = 0; i < x.size(); ++i)
        expect.data()[i] = polar::detail::add_scaled(x.data()[i], -1e-3f, z.data()[i]);
      mat<float> y = x;
      be.add_random(polar::make_view(y), key, d, -1e-3f, 123);
      BOOST_TEST(same_bits(y, expect));
      // A column-major matrix: element (i, j) is still number i cols + j.
      Eigen::MatrixXf yc = x;
      be.add_random(polar::make_view(yc), key, d, -1e-3f, 123);
      BOOST_TEST(same_bits(mat<float>(yc), expect));
    }
}

// The two-sided estimate of a quadratic's gradient is z z^T grad exactly,
// so over N seeds its mean is within a few standard errors of the gradient:
// Var((z z^T g)_i) = g_i^2 + |g|^2 for Gaussian z, |g|^2 - g_i^2 for
// Rademacher. Checked at 5 standard errors per component.
BOOST_AUTO_TEST_CASE_TEMPLATE(the_estimate_is_unbiased, B, backends) {
  B be;
  const quadratic f{(dvec(8) << 1, 2, 3, 4, 0.5, 1.5, 2.5, 3.5).finished(),
                    (dvec(8) << 0.3, -0.2, 0.1, 0.5, -0.4, 0.2, 0.0, 1.0).finished()};
  mat<double> x(1, 5), y(2, 2);  // 9 elements; the 9th sits outside the loss
  x << 0.5, -1.0, 0.25, 2.0, -0.5;
  y << 1.0, 0.75, -0.25, 0.1;
  polar::spsa_params<double> p;
  p.add(polar::make_view(x));
  p.add(polar::make_view(y));
  BOOST_TEST(p.size() == 9u);
  const auto theta = [&] {
    dvec t(8);
    t << x(0, 0), x(0, 1), x(0, 2), x(0, 3), x(0, 4), y(0, 0), y(0, 1), y(1, 0);
    return t;
  };
  const dvec g = f.grad(theta());
  const int n = 4000;
  for (auto d : {polar::distribution::normal, polar::distribution::rademacher})
    BOOST_TEST_CONTEXT(polar::to_string(d)) {
      polar::spsa est;
      est.dist = d;
      est.epsilon = 1e-2;
      typename polar::spsa::template workspace<B, double> ws;
      dvec sum = dvec::Zero(8);
      mat<double> gx(1, 5), gy(2, 2);
      for (int k = 0; k < n; ++k) {
        est.seed = std::uint64_t(100 + k);
        const auto e = est.estimate(be, p, [&] { return f(theta()); }, 0, ws);
        polar::spsa_materialize(be, p, e, 0, polar::make_view(gx));
        polar::spsa_materialize(be, p, e, 1, polar::make_view(gy));
        sum.head(5) += gx.row(0).transpose();
        sum(5) += gy(0, 0);
        sum(6) += gy(0, 1);
        sum(7) += gy(1, 0);
      }
      const dvec mean = sum / n;
      for (int i = 0; i < 8; ++i) {
        const double var = d == polar::distribution::normal ? g(i) * g(i) + g.squaredNorm()
                                                             : g.squaredNorm() - g(i) * g(i);
        BOOST_TEST_CONTEXT("component " << i) { BOOST_TEST(std::abs(mean(i) - g(i)) <= 5 * std::sqrt(var / n)); }
      }
    }
}

// Exact restore gives the parameters back bit for bit, in float and in
// double, two-sided and one-sided; in place, the drift of one estimate is a
// rounding error of the perturbation (bounded here, measured in docs/spsa.md).
BOOST_AUTO_TEST_CASE_TEMPLATE(exact_restore_is_bit_exact, B, backends) {
  B be;
  polar::backend::eigen ref;
  mat<float> w(64, 48), v(1, 100);
  ref.fill_random(polar::make_view(w), polar::rng_key{3}, polar::distribution::normal, 0.02f);
  ref.fill_random(polar::make_view(v), polar::rng_key{4}, polar::distribution::normal, 0.02f);
  const mat<float> w0 = w, v0 = v;
  polar::spsa_params<float> p;
  p.add(polar::make_view(w));
  p.add(polar::make_view(v));
  const auto loss = [&] { return double(w.squaredNorm() + v.sum()); };
  for (auto diff : {polar::spsa_difference::two_sided, polar::spsa_difference::one_sided})
    BOOST_TEST_CONTEXT("two-sided " << (diff == polar::spsa_difference::two_sided)) {
      polar::spsa est;
      est.difference = diff;
      est.samples = 3;
      est.restore = polar::spsa_restore::exact;
      typename polar::spsa::template workspace<B, float> ws;
      for (std::uint32_t step = 0; step < 20; ++step) est.estimate(be, p, loss, step, ws);
      BOOST_TEST(same_bits(w, w0));
      BOOST_TEST(same_bits(v, v0));
      est.restore = polar::spsa_restore::in_place;
      for (std::uint32_t step = 0; step < 20; ++step) est.estimate(be, p, loss, step, ws);
      // 20 steps of 3 samples, three passes each (two one-sided), each
      // rounding the weights once, to half an ulp of |theta| ~ 0.02: a random
      // walk of at most 180 roundings of 2^-24 |theta|, rms.
      const double rms = std::sqrt((w - w0).squaredNorm() / double(w.size()));
      const double theta_rms = std::sqrt(w0.squaredNorm() / double(w0.size()));
      BOOST_TEST(rms > 0.0);  // in place is not exact: what the exact mode is for
      BOOST_TEST(rms <= theta_rms * std::ldexp(1.0, -23) * std::sqrt(180.0));
      w = w0;
      v = v0;
    }
  // The exact mode in double, one tensor.
  mat<double> d(10, 10);
  ref.fill_random(polar::make_view(d), polar::rng_key{5}, polar::distribution::normal);
  const mat<double> d0 = d;
  polar::spsa_params<double> pd;
  pd.add(polar::make_view(d));
  polar::spsa est;
  est.restore = polar::spsa_restore::exact;
  typename polar::spsa::template workspace<B, double> wsd;
  est.estimate(be, pd, [&] { return d.sum(); }, 9, wsd);
  BOOST_TEST(same_bits(d, d0));
}

// The default restores 16-bit parameters exactly (their in-place drift is
// as large as an update) and float and double in place.
BOOST_AUTO_TEST_CASE(automatic_restore_is_exact_for_16_bit_types) {
  const polar::spsa est;
  BOOST_TEST((est.restore == polar::spsa_restore::automatic));
  BOOST_TEST(est.exact<Eigen::half>());
  BOOST_TEST(est.exact<Eigen::bfloat16>());
  BOOST_TEST(!est.exact<float>());
  BOOST_TEST(!est.exact<double>());
  polar::backend::eigen be;
  mat<Eigen::half> w(16, 16);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = Eigen::half(0.02f * float((i * 37) % 23 - 11));
  const mat<Eigen::half> w0 = w;
  polar::spsa_params<Eigen::half> p;
  p.add(polar::make_view(w));
  polar::spsa::workspace<polar::backend::eigen, Eigen::half> ws;
  for (std::uint32_t k = 0; k < 10; ++k) est.estimate(be, p, [&] { return double(float(w(0, 0))); }, k, ws);
  BOOST_TEST(same_bits(w, w0));
  BOOST_TEST(ws.copy.size() == 1u);
}

// SPSA-SGD with Spall's gains minimizes a 10-D quadratic and the 2-D
// Rosenbrock function from its usual start (-1.2, 1).
BOOST_AUTO_TEST_CASE_TEMPLATE(sgd_minimizes_test_functions, B, backends) {
  B be;
  {
    mat<double> t = mat<double>::Constant(1, 10, 1.0);
    dvec h(10), b(10);
    for (int i = 0; i < 10; ++i) h(i) = 1.0 + 0.5 * i, b(i) = 0.1 * (i - 4);
    const quadratic f{h, b};
    const auto value = [&] { return f(dvec(t.row(0).transpose())); };
    const dvec best = b.array() / h.array();
    const double start = f(dvec::Ones(10)) - f(best);
    polar::spsa_params<double> p;
    p.add(polar::make_view(t));
    polar::spsa est;
    est.seed = 11;
    est.samples = 2;
    const polar::spall_schedule sched{0.2, 1e-2, 100, 0.602, 0.101};
    typename polar::spsa::template workspace<B, double> ws;
    for (std::uint32_t k = 0; k < 3000; ++k) {
      est.epsilon = sched.epsilon(k);
      const auto g = est.estimate(be, p, value, k, ws);
      polar::spsa_sgd_step(be, p, g, sched.lr(k));
    }
    const double gap = value() - f(best);
    BOOST_TEST(gap <= 1e-7 * start);
  }
  {
    mat<double> t(1, 2);
    t << -1.2, 1.0;
    const auto rosen = [&] {
      const double a = t(0, 0), c = t(0, 1);
      return 100 * (c - a * a) * (c - a * a) + (1 - a) * (1 - a);
    };
    polar::spsa_params<double> p;
    p.add(polar::make_view(t));
    polar::spsa est;
    est.seed = 12;
    est.dist = polar::distribution::rademacher;
    est.samples = 2;
    const polar::spall_schedule sched{0.1, 1e-3, 5000, 0.602, 0.101};
    typename polar::spsa::template workspace<B, double> ws;
    for (std::uint32_t k = 0; k < 60000; ++k) {
      est.epsilon = sched.epsilon(k);
      polar::spsa_sgd_step(be, p, est.estimate(be, p, rosen, k, ws), sched.lr(k));
    }
    BOOST_TEST(rosen() <= 1e-4);
    BOOST_TEST(std::abs(t(0, 0) - 1) <= 0.01);
    BOOST_TEST(std::abs(t(0, 1) - 1) <= 0.02);
  }
}

// Memory-free momentum: the buffers take mu buf + a sum_s c_s z_s with z
// regenerated, and theta moves as momentum_direction::step moves it on the
// materialized gradient (to rounding: the dense path adds a g in one axpby),
// for heavy ball and EMA, plain and Nesterov, with weight decay.
BOOST_AUTO_TEST_CASE_TEMPLATE(momentum_matches_the_dense_direction, B, backends) {
  B be;
  for (auto kind : {polar::momentum_kind::heavy_ball, polar::momentum_kind::ema})
    for (bool nesterov : {false, true})
      BOOST_TEST_CONTEXT("kind " << int(kind) << ", nesterov " << nesterov) {
        polar::momentum_direction dir;
        dir.lr = 0.05;
        dir.momentum = 0.8;
        dir.nesterov = nesterov;
        dir.kind = kind;
        dir.weight_decay = 0.1;
        mat<double> x(7, 5), y(1, 3);
        polar::backend::eigen ref;
        ref.fill_random(polar::make_view(x), polar::rng_key{3}, polar::distribution::normal, 1.0);
        ref.fill_random(polar::make_view(y), polar::rng_key{4}, polar::distribution::normal, 1.0);
        const mat<double> x0 = x;
        mat<double> xd = x, yd = y;
        polar::spsa_params<double> p, pd;
        p.add(polar::make_view(x));
        p.add(polar::make_view(y));
        pd.add(polar::make_view(xd));
        pd.add(polar::make_view(yd));
        polar::spsa est;
        est.seed = 5;
        est.samples = 3;
        typename polar::spsa::template workspace<B, double> ws;
        polar::spsa_momentum_state<B, double> st;
        auto sx = dir.init(be, polar::make_view(xd));
        auto sy = dir.init(be, polar::make_view(yd));
        for (std::uint32_t k = 0; k < 6; ++k) {
          const auto loss = [&] { return (x.array() - 0.3).square().sum() + (y.array() + 0.2).square().sum(); };
          const auto g = est.estimate(be, p, loss, k, ws);
          polar::spsa_momentum_step(be, p, g, dir, st);
          mat<double> gx(7, 5), gy(1, 3);
          polar::spsa_materialize(be, pd, g, 0, polar::make_view(gx));
          polar::spsa_materialize(be, pd, g, 1, polar::make_view(gy));
          dir.step(be, polar::make_view(xd), polar::make_view(std::as_const(gx)), sx);
          dir.step(be, polar::make_view(yd), polar::make_view(std::as_const(gy)), sy);
        }
        BOOST_TEST(st.steps == 6);
        BOOST_TEST((x - xd).cwiseAbs().maxCoeff() <= 1e-13);
        BOOST_TEST((y - yd).cwiseAbs().maxCoeff() <= 1e-13);
        // Not a no-op: theta moved by more than rounding.
        BOOST_TEST((x - x0).cwiseAbs().maxCoeff() > 1e-3);
      }
  // A state from another parameter set is rejected before anything moves.
  mat<double> a(2, 2), c(3, 1);
  a.setOnes();
  c.setOnes();
  polar::spsa_params<double> p1, p2;
  p1.add(polar::make_view(a));
  p2.add(polar::make_view(c));
  polar::spsa est;
  typename polar::spsa::template workspace<B, double> ws;
  polar::spsa_momentum_state<B, double> st;
  const auto g = est.estimate(be, p1, [&] { return a.sum(); }, 0, ws);
  polar::spsa_momentum_step(be, p1, g, polar::momentum_direction{}, st);
  const mat<double> before = c;
  BOOST_CHECK_THROW(polar::spsa_momentum_step(be, p2, g, polar::momentum_direction{}, st), polar::value_error);
  BOOST_TEST(same_bits(c, before));
}

// ZO-Adam and SPSA with momentum by composition: the 10-D quadratic of the
// test above, minimized by AdamW on materialized estimates and by
// memory-free momentum.
BOOST_AUTO_TEST_CASE_TEMPLATE(adamw_and_momentum_compose_with_the_estimate, B, backends) {
  B be;
  dvec h(10), b(10);
  for (int i = 0; i < 10; ++i) h(i) = 1.0 + 0.5 * i, b(i) = 0.1 * (i - 4);
  const quadratic f{h, b};
  const dvec best = b.array() / h.array();
  const double start = f(dvec::Ones(10)) - f(best);
  polar::spsa est;
  est.seed = 21;
  est.samples = 2;
  est.epsilon = 1e-4;
  {  // ZO-AdamW
    mat<double> t = mat<double>::Constant(1, 10, 1.0);
    polar::spsa_params<double> p;
    p.add(polar::make_view(t));
    polar::adamw_direction adam;
    adam.lr = 0.02;
    adam.weight_decay = 0;
    auto st = adam.init(be, polar::make_view(t));
    typename polar::spsa::template workspace<B, double> ws;
    mat<double> g(1, 10);
    for (std::uint32_t k = 0; k < 3000; ++k) {
      if (k == 2000) adam.lr = 0.002;
      const auto e = est.estimate(be, p, [&] { return f(dvec(t.row(0).transpose())); }, k, ws);
      polar::spsa_materialize(be, p, e, 0, polar::make_view(g));
      adam.step(be, polar::make_view(t), polar::make_view(std::as_const(g)), st);
    }
    const double gap = f(dvec(t.row(0).transpose())) - f(best);
    BOOST_TEST(gap <= 1e-4 * start);
  }
  {  // SPSA with Nesterov momentum, no dense gradient
    mat<double> t = mat<double>::Constant(1, 10, 1.0);
    polar::spsa_params<double> p;
    p.add(polar::make_view(t));
    polar::momentum_direction mom;
    mom.lr = 0.01;
    mom.momentum = 0.9;
    mom.nesterov = true;
    polar::spsa_momentum_state<B, double> st;
    typename polar::spsa::template workspace<B, double> ws;
    for (std::uint32_t k = 0; k < 3000; ++k) {
      if (k == 2000) mom.lr = 0.001;
      const auto e = est.estimate(be, p, [&] { return f(dvec(t.row(0).transpose())); }, k, ws);
      polar::spsa_momentum_step(be, p, e, mom, st);
    }
    const double gap = f(dvec(t.row(0).transpose())) - f(best);
    BOOST_TEST(gap <= 1e-4 * start);
  }
}

// ZO-Muon by composition: the estimate materialized into Muon's input
// pulls an 8x6 matrix to its target, ||W - A||^2 / 2, with Muon's
// learning rate decayed linearly to 0 (its steps have a fixed spectral
// size, so without decay it would circle the target at that distance).
BOOST_AUTO_TEST_CASE_TEMPLATE(muon_composes_with_the_estimate, B, backends) {
  B be;
  polar::backend::eigen ref;
  mat<float> w(8, 6), a(8, 6), g(8, 6);
  ref.fill_random(polar::make_view(w), polar::rng_key{31}, polar::distribution::normal, 1.0f);
  ref.fill_random(polar::make_view(a), polar::rng_key{32}, polar::distribution::normal, 1.0f);
  const auto loss = [&] { return 0.5 * double((w - a).squaredNorm()); };
  const double start = loss();
  polar::spsa_params<float> p;
  p.add(polar::make_view(w));
  polar::spsa est;
  est.seed = 33;
  est.samples = 4;
  est.epsilon = 1e-2;
  polar::muon_direction<> muon;
  auto st = muon.init(be, polar::make_view(w));
  typename polar::spsa::template workspace<B, float> ws;
  const int steps = 1500;
  for (int k = 0; k < steps; ++k) {
    muon.lr = 0.1 * (1 - double(k) / steps);
    const auto e = est.estimate(be, p, loss, std::uint32_t(k), ws);
    polar::spsa_materialize(be, p, e, 0, polar::make_view(g));
    muon.step(be, polar::make_view(w), polar::make_view(std::as_const(g)), st);
  }
  BOOST_TEST_MESSAGE("ZO-Muon: " << start << " -> " << loss());
  BOOST_TEST(loss() <= 1e-2 * start);
}

// The same seed on every backend gives the same estimate and step.
BOOST_AUTO_TEST_CASE_TEMPLATE(steps_are_identical_across_backends, B, backends) {
  B be;
  polar::backend::eigen ref;
  mat<float> a(33, 17), b = mat<float>::Zero(1, 1);
  ref.fill_random(polar::make_view(a), polar::rng_key{8}, polar::distribution::normal, 0.02f);
  mat<float> a2 = a;
  const auto run = [](auto& backend, mat<float>& w) {
    polar::spsa_params<float> p;
    p.add(polar::make_view(w));
    polar::spsa est;
    est.seed = 77;
    est.machine = 3;
    est.samples = 2;
    typename polar::spsa::template workspace<std::decay_t<decltype(backend)>, float> ws;
    for (std::uint32_t k = 0; k < 10; ++k) {
      const auto g = est.estimate(backend, p, [&] { return double((w.array() - 0.01f).square().sum()); }, k, ws);
      polar::spsa_sgd_step(backend, p, g, 1e-2);
    }
  };
  run(be, a);
  run(ref, a2);
  BOOST_TEST(same_bits(a, a2));
  (void)b;
}

// A NaN from the oracle stops the estimate with the parameters restored;
// eps <= 0 and no samples are errors.
BOOST_AUTO_TEST_CASE_TEMPLATE(bad_input_is_reported, B, backends) {
  B be;
  polar::backend::eigen ref;
  mat<float> w(8, 8);
  ref.fill_random(polar::make_view(w), polar::rng_key{9}, polar::distribution::normal);
  const mat<float> w0 = w;
  polar::spsa_params<float> p;
  p.add(polar::make_view(w));
  for (auto mode : {polar::spsa_restore::exact, polar::spsa_restore::in_place})
    for (int bad_at : {0, 1, 2}) {
      polar::spsa est;
      est.restore = mode;
      est.samples = 2;
      typename polar::spsa::template workspace<B, float> ws;
      int calls = 0;
      try {
        est.estimate(be, p, [&] { return calls++ == bad_at ? std::nan("") : 1.0; }, 4, ws);
        BOOST_FAIL("no error for a NaN loss");
      } catch (const polar::non_finite_error& e) {
        BOOST_TEST(std::string(e.what()).find("step 4") != std::string::npos);
      }
      if (mode == polar::spsa_restore::exact)
        BOOST_TEST(same_bits(w, w0));
      else
        BOOST_TEST((w - w0).norm() <= 1e-6 * w0.norm());
      w = w0;
    }
  // An oracle that throws: the exception passes through, the weights restored.
  for (auto mode : {polar::spsa_restore::exact, polar::spsa_restore::in_place}) {
    polar::spsa est;
    est.restore = mode;
    typename polar::spsa::template workspace<B, float> ws;
    int calls = 0;
    BOOST_CHECK_THROW(est.estimate(
                          be, p,
                          [&] {
                            if (calls++ == 1) throw std::runtime_error("oracle failed");
                            return 1.0;
                          },
                          5, ws),
                      std::runtime_error);
    if (mode == polar::spsa_restore::exact)
      BOOST_TEST(same_bits(w, w0));
    else
      BOOST_TEST((w - w0).norm() <= 1e-6 * w0.norm());
    w = w0;
  }
  polar::spsa est;
  typename polar::spsa::template workspace<B, float> ws;
  est.epsilon = 0;
  BOOST_CHECK_THROW(est.estimate(be, p, [] { return 1.0; }, 0, ws), polar::value_error);
  est.epsilon = -1e-3;
  BOOST_CHECK_THROW(est.estimate(be, p, [] { return 1.0; }, 0, ws), polar::value_error);
  est.epsilon = 1e-3;
  est.samples = 0;
  BOOST_CHECK_THROW(est.estimate(be, p, [] { return 1.0; }, 0, ws), polar::value_error);
  est.samples = 1;
  est.dist = polar::distribution::uniform;
  BOOST_CHECK_THROW(est.estimate(be, p, [] { return 1.0; }, 0, ws), polar::value_error);
  BOOST_TEST(same_bits(w, w0));
}

BOOST_AUTO_TEST_SUITE_END()
