// Tests of the Muon family (polar/direction/muon_transforms.hpp and
// muon.hpp's bias_correction): NorMuon, AdaMuon and PolarGrad against a
// direct transcription of their formulas in double (exact polar factors from
// Eigen's SVD), in float and double, on a stack of two matrices over three
// steps; optax's bias-corrected momentum against its formula; Dion against
// its formula and, at full rank, against Muon's direction; the
// transforms' states in checkpoints and in the model-level optimizer; and
// bad hyperparameters. On the Eigen backend and Thrust's OMP and CPP systems.
#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/checkpoint.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/dion.hpp"
#include "polar/direction/muon.hpp"
#include "polar/optimizer.hpp"
#include "support.hpp"

namespace {

using dmat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A reproducible value in [-1, 1) for index i of stream `seed` (full-rank
/// matrices, unlike sines of the index).
double noise(std::uint64_t i, std::uint64_t seed) {
  std::uint64_t z = i * 0x9e3779b97f4a7c15ULL + seed * 0xbf58476d1ce4e5b9ULL + 0x94d049bb133111ebULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-52 - 1.0;
}

/// The exact polar factor U V^T.
dmat polar_of(const dmat& m) {
  Eigen::JacobiSVD<dmat> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return svd.matrixU() * svd.matrixV().transpose();
}

/// Which transform a transcription follows.
enum class family { normuon, adamuon, adamuon_no_sign, polargrad };

/// One matrix's transcription: Muon's EMA Nesterov momentum, then the
/// family's formula as its source states it, then W -= lr scale O.
struct transcription {
  family f;
  double lr, mu, beta2, eps, scale;
  dmat buf, v;
  long t = 0;
  void step(dmat& w, const dmat& g) {
    ++t;
    if (buf.size() == 0) {
      buf = dmat::Zero(g.rows(), g.cols());
      v = f == family::normuon ? dmat::Zero(g.rows(), 1) : dmat::Zero(g.rows(), g.cols());
    }
    buf = mu * buf + (1 - mu) * g;
    dmat m = (1 - mu) * g + mu * buf;
    if (f == family::adamuon) m = m.unaryExpr([](double x) { return double((x > 0) - (x < 0)); });
    dmat o = polar_of(m);
    if (f == family::normuon) {
      const double before = o.norm();
      for (Eigen::Index i = 0; i < o.rows(); ++i) {
        v(i, 0) = beta2 * v(i, 0) + (1 - beta2) * o.row(i).squaredNorm() / double(o.cols());
        o.row(i) /= std::sqrt(v(i, 0)) + eps;
      }
      o *= before / std::max(o.norm(), 1e-8);
    } else if (f == family::polargrad) {
      o *= (o.transpose() * m).trace();
    } else {
      const double bc = 1 - std::pow(beta2, double(t));
      v = beta2 * v + (1 - beta2) * o.cwiseProduct(o);
      o = o.cwiseQuotient(((v / bc).cwiseSqrt().array() + eps).matrix());
      o *= std::sqrt(double(std::min(o.rows(), o.cols()))) / (o.norm() + eps);
    }
    w -= lr * scale * o;
  }
};

template <class Transform>
polar::muon_direction<polar::svd_polar, void, Transform> family_direction(Transform t) {
  polar::muon_direction<polar::svd_polar, void, Transform> d;
  d.lr = 0.05;
  d.momentum = 0.9;
  d.scale = polar::scale_rule::match_adamw_rms;
  d.transform = t;
  return d;
}

/// Steps a 2 x 6 x 10 stack in T through polar and each matrix through the
/// transcription; returns the largest difference over the largest entry.
template <class B, class T, class Transform>
double gap(Transform transform, family f, double beta2, double eps) {
  B be;
  const polar::index count = 2, rows = 6, cols = 10;
  std::vector<T> w(std::size_t(count * rows * cols)), g(w.size());
  dmat w0(count * rows, cols);
  for (polar::index i = 0; i < w0.size(); ++i) w0.data()[i] = noise(std::uint64_t(i), 1);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = T(w0.data()[i]);
  auto d = family_direction(transform);
  const polar::tensor_view<T> wt(w.data(), {count, rows, cols});
  auto s = d.init(be, wt);
  std::vector<transcription> ref(count, transcription{f, d.lr, d.momentum, beta2, eps,
                                                     polar::muon_scale(d.scale, rows, cols), {}, {}});
  dmat want = w0;
  for (int step = 0; step < 3; ++step) {
    dmat gd(count * rows, cols);
    for (polar::index i = 0; i < gd.size(); ++i) gd.data()[i] = noise(std::uint64_t(i), std::uint64_t(10 + step));
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = T(gd.data()[i]);
    d.step(be, wt, polar::tensor_view<const T>(g.data(), {count, rows, cols}), s);
    for (polar::index k = 0; k < count; ++k) {
      dmat wk = want.middleRows(k * rows, rows);
      ref[std::size_t(k)].step(wk, gd.middleRows(k * rows, rows));
      want.middleRows(k * rows, rows) = wk;
    }
  }
  BOOST_TEST(s.steps == 3);
  double worst = 0;
  for (polar::index i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(double(w[std::size_t(i)]) - want.data()[i]));
  return worst / (want - w0).cwiseAbs().maxCoeff();
}

using backends = polar_test::host_backends;

}  // namespace

BOOST_AUTO_TEST_SUITE(muon_family)

BOOST_AUTO_TEST_CASE_TEMPLATE(normuon_adamuon_and_polargrad_follow_their_formulas, B, backends) {
  // Relative to the size of the three steps: float carries its rounding
  // through an SVD and three steps of moments; double agrees to rounding.
  for (const bool dbl : {false, true}) {
    BOOST_TEST_CONTEXT((dbl ? "double" : "float")) {
      const double tol = dbl ? 1e-10 : 2e-5;
      const auto run = [&](auto transform, family f, double beta2, double eps) {
        return dbl ? gap<B, double>(transform, f, beta2, eps) : gap<B, float>(transform, f, beta2, eps);
      };
      BOOST_TEST(run(polar::normuon{}, family::normuon, 0.95, 1e-8) <= tol);
      BOOST_TEST(run(polar::normuon{0.5, 1e-3}, family::normuon, 0.5, 1e-3) <= tol);
      BOOST_TEST(run(polar::adamuon{}, family::adamuon, 0.999, 1e-8) <= tol);
      BOOST_TEST(run(polar::adamuon{0.9, 1e-6, false}, family::adamuon_no_sign, 0.9, 1e-6) <= tol);
      BOOST_TEST(run(polar::polargrad{}, family::polargrad, 0, 0) <= tol);
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(transforms_compose_with_newton_schulz_and_keep_their_norms, B, backends) {
  // With Newton–Schulz: NorMuon's update has plain Muon's Frobenius norm
  // (its rescale), AdaMuon's has RMS 0.2 under match_adamw_rms, and
  // PolarGrad's is Muon's times <O, M>.
  B be;
  dmat g(24, 40);
  be.fill_random(polar::make_view(g), polar::rng_key{31}, polar::distribution::normal);
  const auto gv = polar::make_view(static_cast<const dmat&>(g));
  const auto delta = [&](auto d) {
    dmat w = dmat::Zero(24, 40);
    auto s = d.init(be, polar::make_view(static_cast<const dmat&>(w)));
    d.step(be, polar::make_view(w), gv, s);
    return dmat(-w);
  };
  polar::muon_direction<> plain;
  plain.scale = polar::scale_rule::none;
  plain.lr = 1;
  polar::muon_direction<polar::newton_schulz, void, polar::normuon> nor;
  nor.scale = polar::scale_rule::none;
  nor.lr = 1;
  polar::muon_direction<polar::newton_schulz, void, polar::adamuon> ada;
  ada.scale = polar::scale_rule::match_adamw_rms;
  ada.lr = 1;
  polar::muon_direction<polar::newton_schulz, void, polar::polargrad> pg;
  pg.scale = polar::scale_rule::none;
  pg.lr = 1;
  const dmat up = delta(plain), un = delta(nor), ua = delta(ada), ug = delta(pg);
  BOOST_TEST(std::abs(un.norm() - up.norm()) <= 1e-12 * up.norm());
  BOOST_TEST((un - up).norm() > 1e-3 * up.norm());  // the rows were rebalanced
  // (the eps of 1e-8 beside |O'|_F, about 30 here, moves it by about 3e-10
  // relative)
  BOOST_TEST(std::abs(ua.norm() / std::sqrt(24.0 * 40.0) - 0.2) <= 0.2 * 1e-9);
  // Nesterov M at the first step is (1 - mu) g + mu (1 - mu) g.
  const double nuclear = (up.transpose() * ((1 - 0.95) * (1 + 0.95) * g)).trace();
  BOOST_TEST((ug - nuclear * up).norm() <= 1e-12 * ug.norm());
  // <O, M> is near the exact nuclear norm (Jordan's schedule leaves its
  // singular values in about [0.7, 1.1]).
  const double exact = Eigen::JacobiSVD<dmat>((1 - 0.95) * (1 + 0.95) * g).singularValues().sum();
  BOOST_TEST(nuclear / exact >= 0.7);
  BOOST_TEST(nuclear / exact <= 1.1);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(optax_bias_corrected_momentum_follows_its_formula, B, backends) {
  // Through the exact polar factor of M, which the formula's scalars change
  // (Nesterov's two terms are corrected by different factors).
  B be;
  dmat w0(5, 8), w(5, 8);
  for (Eigen::Index i = 0; i < w0.size(); ++i) w0.data()[i] = noise(std::uint64_t(i), 2);
  for (const bool nesterov : {true, false}) {
    BOOST_TEST_CONTEXT("nesterov " << nesterov) {
      polar::muon_direction<polar::svd_polar> d;
      d.nesterov = nesterov;
      d.bias_correction = true;
      d.momentum = 0.8;
      d.lr = 0.1;
      d.scale = polar::scale_rule::none;
      w = w0;
      auto s = d.init(be, polar::make_view(static_cast<const dmat&>(w)));
      dmat want = w0, buf = dmat::Zero(5, 8);
      for (int t = 1; t <= 4; ++t) {
        dmat g(5, 8);
        for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = noise(std::uint64_t(i), std::uint64_t(20 + t));
        d.step(be, polar::make_view(w), polar::make_view(static_cast<const dmat&>(g)), s);
        const double b = d.momentum;
        buf = b * buf + (1 - b) * g;
        const dmat m = nesterov ? dmat(b * buf / (1 - std::pow(b, t + 1)) + (1 - b) * g / (1 - std::pow(b, t)))
                                : dmat(buf / (1 - std::pow(b, t)));
        want -= d.lr * polar_of(m);
      }
      BOOST_TEST((w - want).cwiseAbs().maxCoeff() <= 1e-12);
      // And the lerp form differs: the correction changes the direction.
      polar::muon_direction<polar::svd_polar> lerp = d;
      lerp.bias_correction = false;
      dmat w2 = w0;
      auto s2 = lerp.init(be, polar::make_view(static_cast<const dmat&>(w2)));
      for (int t = 1; t <= 4; ++t) {
        dmat g(5, 8);
        for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = noise(std::uint64_t(i), std::uint64_t(20 + t));
        lerp.step(be, polar::make_view(w2), polar::make_view(static_cast<const dmat&>(g)), s2);
      }
      if (nesterov) BOOST_TEST((w2 - w).cwiseAbs().maxCoeff() > 1e-4);
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(dion_follows_its_formula, B, backends) {
  // Three steps at rank 3 of a 12 x 8 matrix against a transcription in
  // double from the same starting Q, in float and double.
  for (const bool dbl : {false, true}) {
    BOOST_TEST_CONTEXT((dbl ? "double" : "float")) {
      const auto run = [&](auto zero) {
        using T = decltype(zero);
        using tmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        B be;
        polar::dion_direction d;
        d.rank = 3;
        d.lr = 0.1;
        d.momentum = 0.8;
        d.weight_decay = 0.5;
        dmat w0(12, 8);
        for (Eigen::Index i = 0; i < w0.size(); ++i) w0.data()[i] = noise(std::uint64_t(i), 3);
        tmat w = w0.cast<T>();
        auto s = d.init(be, polar::make_view(static_cast<const tmat&>(w)));
        BOOST_TEST(s.rank == 3);
        dmat q(8, 3), m = dmat::Zero(12, 8), want = w0;
        for (Eigen::Index i = 0; i < q.size(); ++i) q.data()[i] = double(s.q.data()[i]);
        for (int t = 0; t < 3; ++t) {
          dmat gd(12, 8);
          for (Eigen::Index i = 0; i < gd.size(); ++i) gd.data()[i] = noise(std::uint64_t(i), std::uint64_t(40 + t));
          const tmat g = gd.cast<T>();
          d.step(be, polar::make_view(w), polar::make_view(g), s);
          m += g.template cast<double>();
          const dmat p = Eigen::HouseholderQR<dmat>(m * q).householderQ() * dmat::Identity(12, 3);
          const dmat r = m.transpose() * p;
          m -= (1 - d.momentum) * p * r.transpose();
          for (Eigen::Index j = 0; j < 3; ++j) q.col(j) = r.col(j) / (r.col(j).norm() + d.eps);
          want = want * (1 - d.lr * d.weight_decay) - d.lr * std::sqrt(12.0 / 8.0) * p * q.transpose();
        }
        return (w.template cast<double>() - want).cwiseAbs().maxCoeff() / (want - w0).cwiseAbs().maxCoeff();
      };
      BOOST_TEST((dbl ? run(0.0) : run(0.0f)) <= (dbl ? 1e-12 : 2e-5));
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(dion_at_full_rank_is_muon, B, backends) {
  // A steady gradient: M tends to G / (1 - mu) and the power iteration to
  // G's singular vectors, so the update P Q^T tends to G's polar factor,
  // Muon's direction. Measured through one step at lr 1 after 200.
  B be;
  dmat g(12, 8), w = dmat::Zero(12, 8);
  for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = noise(std::uint64_t(i), 5);
  polar::dion_direction d;
  d.scale = polar::scale_rule::none;
  d.lr = 0;
  auto s = d.init(be, polar::make_view(static_cast<const dmat&>(w)));
  BOOST_TEST(s.rank == 8);
  const auto gv = polar::make_view(static_cast<const dmat&>(g));
  for (int t = 0; t < 200; ++t) d.step(be, polar::make_view(w), gv, s);
  d.lr = 1;
  d.step(be, polar::make_view(w), gv, s);
  BOOST_TEST((-w - polar_of(g)).cwiseAbs().maxCoeff() <= 1e-9);
  // At a lower rank it is not: the update has rank 3.
  polar::dion_direction low = d;
  low.rank = 3;
  low.lr = 0;
  dmat w3 = dmat::Zero(12, 8);
  auto s3 = low.init(be, polar::make_view(static_cast<const dmat&>(w3)));
  for (int t = 0; t < 200; ++t) low.step(be, polar::make_view(w3), gv, s3);
  low.lr = 1;
  low.step(be, polar::make_view(w3), gv, s3);
  const auto sv = Eigen::JacobiSVD<dmat>(w3).singularValues();
  BOOST_TEST(sv(2) > 0.5);
  BOOST_TEST(sv(3) <= 1e-12);
}

BOOST_AUTO_TEST_CASE(states_travel_in_checkpoints_and_groups) {
  // A model-level optimizer with a NorMuon group, an AdaMuon group and a
  // PolarGrad group: stopping, saving, loading and going on gives the same
  // bits as going straight on, so the moments are in the checkpoint.
  polar::backend::eigen be;
  using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  struct weights {
    fmat a = fmat::Zero(12, 20), b = fmat::Zero(20, 12), c = fmat::Zero(8, 8), e = fmat::Zero(16, 10);
  };
  weights start;
  start.a.setRandom();
  start.b.setRandom();
  start.c.setRandom();
  start.e.setRandom();
  const auto make = [&](weights& m) {
    auto opt = std::make_unique<polar::optimizer<polar::backend::eigen, float>>(be);
    opt->add_group("nor", polar::muon_direction<polar::newton_schulz, void, polar::normuon>{},
                   polar::rule::name("a"));
    opt->add_group("ada", polar::muon_direction<polar::newton_schulz, void, polar::adamuon>{},
                   polar::rule::name("b"));
    polar::dion_direction dion;
    dion.rank = 4;
    opt->add_group("dion", dion, polar::rule::name("e"));
    polar::muon_direction<polar::newton_schulz, void, polar::polargrad> pg;
    pg.scale = polar::scale_rule::none;
    pg.lr = 1e-3;
    opt->add_group("pg", pg, polar::rule::all());
    opt->add("a", polar::make_view(m.a));
    opt->add("b", polar::make_view(m.b));
    opt->add("c", polar::make_view(m.c));
    opt->add("e", polar::make_view(m.e));
    return opt;
  };
  const auto run = [&](polar::optimizer<polar::backend::eigen, float>& opt, weights& m, int from, int to) {
    for (int k = from; k < to; ++k) {
      // (std::sin through unaryExpr: Eigen's vectorized float sine trips
      // GCC 12's -Wuninitialized under -march=native with AVX-512)
      const fmat ga = m.a.unaryExpr([k](float x) { return std::sin(0.5f * x + float(k)); });
      const fmat gb = m.b.unaryExpr([k](float x) { return std::cos(0.3f * x - float(k)); });
      const fmat gc = (m.c.array() + 0.1f * float(k)).matrix();
      const fmat ge = m.e.unaryExpr([k](float x) { return std::sin(0.7f * x - 0.2f * float(k)); });
      opt.step({polar::make_view(ga), polar::make_view(gb), polar::make_view(gc), polar::make_view(ge)});
    }
  };
  weights straight = start, first = start, second = start;
  auto s = make(straight);
  run(*s, straight, 0, 5);
  auto f = make(first);
  run(*f, first, 0, 2);
  polar::checkpoint ck;
  f->save(ck);
  BOOST_TEST(ck.contains("a/state/transform/v"));
  BOOST_TEST(ck.contains("b/state/transform/v"));
  BOOST_TEST(ck.contains("e/state/q"));
  auto r = make(second);
  r->load(polar::checkpoint::parse(ck.serialize()));
  run(*r, second, 2, 5);
  BOOST_TEST((second.a - straight.a).cwiseAbs().maxCoeff() == 0.0f);
  BOOST_TEST((second.b - straight.b).cwiseAbs().maxCoeff() == 0.0f);
  BOOST_TEST((second.c - straight.c).cwiseAbs().maxCoeff() == 0.0f);
  BOOST_TEST((second.e - straight.e).cwiseAbs().maxCoeff() == 0.0f);
  BOOST_TEST((straight.e - start.e).cwiseAbs().maxCoeff() > 0.0f);
  BOOST_TEST((straight.c - start.c).cwiseAbs().maxCoeff() > 0.0f);
}

BOOST_AUTO_TEST_CASE(bad_hyperparameters_are_refused_before_anything_moves) {
  polar::backend::eigen be;
  dmat w(6, 9), g(6, 9);
  w.setRandom();
  g.setRandom();
  const dmat w0 = w;
  polar::muon_direction<polar::newton_schulz, void, polar::normuon> nor;
  auto s = nor.init(be, polar::make_view(static_cast<const dmat&>(w)));
  nor.transform.beta2 = 1.0;
  polar_test::check_throws<polar::value_error>(
      [&] { nor.step(be, polar::make_view(w), polar::make_view(static_cast<const dmat&>(g)), s); },
      {"polar::muon", "normuon.beta2", "[0, 1)", "1"});
  polar::muon_direction<polar::newton_schulz, void, polar::adamuon> ada;
  auto sa = ada.init(be, polar::make_view(static_cast<const dmat&>(w)));
  ada.transform.eps = 0;
  polar_test::check_throws<polar::value_error>(
      [&] { ada.step(be, polar::make_view(w), polar::make_view(static_cast<const dmat&>(g)), sa); },
      {"polar::muon", "adamuon.eps", "> 0", "0"});
  polar::dion_direction dion;
  dion.rank = -1;
  polar_test::check_throws<polar::value_error>([&] { (void)dion.init(be, polar::make_view(static_cast<const dmat&>(w))); },
                                               {"polar::dion::init", "rank must be >= 0", "-1"});
  dion.rank = 2;
  auto sd = dion.init(be, polar::make_view(static_cast<const dmat&>(w)));
  dmat bias(1, 9);
  polar_test::check_throws<polar::unsupported_error>(
      [&] { (void)dion.init(be, polar::make_view(static_cast<const dmat&>(bias))); }, {"polar::dion::init", "1x9", "AdamW"});
  dmat bad = g;
  bad(2, 3) = std::numeric_limits<double>::infinity();
  polar_test::check_throws<polar::non_finite_error>(
      [&] { dion.step(be, polar::make_view(w), polar::make_view(static_cast<const dmat&>(bad)), sd); },
      {"polar::dion::step", "6x9", "NaN or infinity"});
  dion.momentum = 1;
  polar_test::check_throws<polar::value_error>(
      [&] { dion.step(be, polar::make_view(w), polar::make_view(static_cast<const dmat&>(g)), sd); },
      {"polar::dion::step", "momentum", "[0, 1)"});
  BOOST_TEST(sd.steps == 0);
  polar::muon_direction<> hb;
  hb.kind = polar::momentum_kind::heavy_ball;
  hb.bias_correction = true;
  auto sh = hb.init(be, polar::make_view(static_cast<const dmat&>(w)));
  polar_test::check_throws<polar::value_error>(
      [&] { hb.step(be, polar::make_view(w), polar::make_view(static_cast<const dmat&>(g)), sh); },
      {"polar::muon", "bias_correction", "momentum_kind::ema", "heavy_ball"});
  BOOST_TEST((w - w0).norm() == 0.0);
  BOOST_TEST(s.steps == 0);
  BOOST_TEST(sa.steps == 0);
}

BOOST_AUTO_TEST_SUITE_END()
