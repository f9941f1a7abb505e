// tests/gains/gains.cpp: magnitude-direction decoupling (row_col_gains):
// init leaves W alone and its state fuses back to W, the gradients of D and
// the gains against central finite differences, D's norm after every step,
// a zero learning rate, convergence with AdamW and Muon on D, bad input.
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/checkpoint.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "core/state_bytes.hpp"
#include "geometry/geometry_support.hpp"
#include "support.hpp"

namespace {

// The Eigen backend and the Thrust host systems: OMP (threaded, the fused
// kernel on several threads) and CPP (serial).
using gains_backends = polar_test::host_backends;
using geometry_test::cv;
using geometry_test::dmat;
using geometry_test::random;

const polar::gain_scope all_scopes[] = {polar::gain_scope::both, polar::gain_scope::rows, polar::gain_scope::cols,
                                        polar::gain_scope::scalar};
const polar::sphere_scope all_spheres[] = {polar::sphere_scope::flat, polar::sphere_scope::rows,
                                           polar::sphere_scope::cols};

/// Whether the gains can carry the norms of D's sphere (absorb_scale).
bool compatible(polar::gain_scope g, polar::sphere_scope s) {
  if (s == polar::sphere_scope::rows) return g == polar::gain_scope::both || g == polar::gain_scope::rows;
  if (s == polar::sphere_scope::cols) return g == polar::gain_scope::both || g == polar::gain_scope::cols;
  return true;
}

/// The state's D, raw gains and gradients as host matrices (D with the
/// fused kernel's pending factors applied: s.settle(be)).
template <class B, class S>
dmat host(B& be, S& s, const typename B::template buffer<double>& b, polar::index r, polar::index c) {
  s.settle(be);
  dmat m(r, c);
  std::memcpy(m.data(), b.data(), sizeof(double) * std::size_t(r * c));
  return m;
}

double softplus(double x) { return std::log1p(std::exp(x)); }

/// The fused weight of D and raw gains r (m or 1), c (n) by hand.
dmat fused(const dmat& d, const dmat& r, const dmat& c, polar::gain_scope g, bool sp) {
  const auto phi = [&](double x) { return sp ? softplus(x) : x; };
  dmat w = d;
  for (polar::index i = 0; i < d.rows(); ++i)
    for (polar::index j = 0; j < d.cols(); ++j) {
      double s = 1;
      if (g == polar::gain_scope::scalar) s *= phi(r(0, 0));
      if (g == polar::gain_scope::both || g == polar::gain_scope::rows) s *= phi(r(i, 0));
      if (g == polar::gain_scope::both || g == polar::gain_scope::cols) s *= phi(c(0, j));
      w(i, j) *= s;
    }
  return w;
}

/// A smooth loss of W with a known gradient: sum(sin(W) . A) + |W|^2 / 2.
struct loss {
  dmat a;
  double operator()(const dmat& w) const { return w.array().sin().cwiseProduct(a.array()).sum() + 0.5 * w.squaredNorm(); }
  dmat grad(const dmat& w) const { return dmat(w.array().cos().cwiseProduct(a.array()) + w.array()); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(gains)

BOOST_AUTO_TEST_CASE_TEMPLATE(init_reads_w_and_the_state_fuses_back, B, gains_backends) {
  B be;
  for (auto g : all_scopes)
    for (auto sph : all_spheres)
      for (bool sp : {true, false})
        for (bool absorb : {true, false}) {
          if (absorb && !compatible(g, sph)) continue;
          BOOST_TEST_CONTEXT("gains " << int(g) << " sphere " << int(sph) << " softplus " << sp << " absorb " << absorb) {
            polar::md_adamw opt;
            opt.gains = g;
            opt.sphere = sph;
            opt.phi = sp ? polar::gain_map::softplus : polar::gain_map::identity;
            opt.absorb_scale = absorb;
            dmat w = random(be, 7, 5, 1);
            const dmat w0 = w;
            auto s = opt.init(be, polar::make_view(w));
            BOOST_TEST(std::memcmp(w.data(), w0.data(), sizeof(double) * 35) == 0);
            // D lies on its sphere.
            const dmat d = host(be, s, s.d, 7, 5);
            typename polar::hypersphere::template workspace<B, double> ws;
            const auto h = opt.geometry(7, 5);
            BOOST_TEST(h.distance(be, cv(d), ws) <= 1e-14 * h.radius);
            dmat f(7, 5);
            opt.fuse(be, s, polar::make_view(f));
            if (absorb) {
              BOOST_TEST((f - w0).norm() <= 1e-14 * w0.norm());
            } else {
              // Unit gains: the fused weight is D itself.
              BOOST_TEST((f - d).norm() <= 1e-14 * d.norm());
            }
          }
        }
}

BOOST_AUTO_TEST_CASE(default_radius_gives_sqrt_max_dim) {
  polar::md_adamw opt;
  for (auto sph : all_spheres) {
    opt.sphere = sph;
    const auto h = opt.geometry(6, 24);
    const double groups = sph == polar::sphere_scope::flat ? 1.0 : sph == polar::sphere_scope::rows ? 6.0 : 24.0;
    BOOST_TEST(std::abs(groups * h.radius * h.radius - 24.0) <= 1e-12);
  }
  opt.radius = 2.5;
  BOOST_TEST(opt.geometry(6, 24).radius == 2.5);
}

// D's direction defaults: no weight decay (D is projected back), and Muon
// scaled as the MD reference scales it, whatever the matrix's aspect.
BOOST_AUTO_TEST_CASE(direction_defaults) {
  const polar::md_adamw adam;
  BOOST_TEST(adam.direction.weight_decay == 0.0);
  BOOST_TEST(adam.gain_direction.weight_decay == 0.0);
  const polar::md_muon muon;
  BOOST_TEST(muon.direction.weight_decay == 0.0);
  BOOST_TEST((muon.direction.scale == polar::scale_rule::aspect));
  BOOST_TEST(polar::muon_scale(muon.direction.scale, 10, 640) == 8.0);
  // A plain muon_direction keeps its own default.
  BOOST_TEST((polar::muon_direction<>{}.scale == polar::scale_rule::original));
}

// dL/dD, dL/dr and dL/dc of split() against central differences of
// L(phi(r) D phi(c)) in double.
BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_match_finite_differences, B, gains_backends) {
  B be;
  const polar::index m = 5, n = 4;
  loss L{random(be, m, n, 10)};
  for (auto g : all_scopes)
    for (bool sp : {true, false})
      BOOST_TEST_CONTEXT("gains " << int(g) << " softplus " << sp) {
        polar::md_adamw opt;
        opt.gains = g;
        opt.phi = sp ? polar::gain_map::softplus : polar::gain_map::identity;
        dmat w = random(be, m, n, 11);
        auto s = opt.init(be, polar::make_view(w));
        // Move the gains away from their start so every factor matters.
        const polar::index nr = g == polar::gain_scope::scalar ? 1 : m;
        dmat r = host(be, s, s.r, nr, 1), c = host(be, s, s.c, 1, n);
        r.array() += dmat(random(be, nr, 1, 12)).array().abs() * 0.3;
        c.array() += dmat(random(be, 1, n, 13)).array().abs() * 0.3;
        std::memcpy(s.r.data(), r.data(), sizeof(double) * std::size_t(nr));
        std::memcpy(s.c.data(), c.data(), sizeof(double) * std::size_t(n));
        const dmat d = host(be, s, s.d, m, n);
        const dmat wf = fused(d, r, c, g, sp);
        opt.split(be, cv(L.grad(wf)), s);
        const double h = 1e-6;
        // D.
        const dmat gd = host(be, s, s.scratch->p, m, n);
        double err = 0, scale = 0;
        for (polar::index i = 0; i < m; ++i)
          for (polar::index j = 0; j < n; ++j) {
            dmat dp = d, dm = d;
            dp(i, j) += h;
            dm(i, j) -= h;
            const double fd = (L(fused(dp, r, c, g, sp)) - L(fused(dm, r, c, g, sp))) / (2 * h);
            err = std::max(err, std::abs(fd - gd(i, j)));
            scale = std::max(scale, std::abs(fd));
          }
        BOOST_TEST(err <= 1e-7 * scale);
        // The row gains (or the scalar gain).
        if (g != polar::gain_scope::cols) {
          const dmat gr = host(be, s, s.gr, nr, 1);
          for (polar::index i = 0; i < nr; ++i) {
            dmat rp = r, rm = r;
            rp(i, 0) += h;
            rm(i, 0) -= h;
            const double fd = (L(fused(d, rp, c, g, sp)) - L(fused(d, rm, c, g, sp))) / (2 * h);
            BOOST_TEST(std::abs(fd - gr(i, 0)) <= 1e-7 * std::max(1.0, std::abs(fd)));
          }
        }
        if (g == polar::gain_scope::both || g == polar::gain_scope::cols) {
          const dmat gc = host(be, s, s.gc, 1, n);
          for (polar::index j = 0; j < n; ++j) {
            dmat cp = c, cm = c;
            cp(0, j) += h;
            cm(0, j) -= h;
            const double fd = (L(fused(d, r, cp, g, sp)) - L(fused(d, r, cm, g, sp))) / (2 * h);
            BOOST_TEST(std::abs(fd - gc(0, j)) <= 1e-7 * std::max(1.0, std::abs(fd)));
          }
        }
      }
}

// After every step D is on its sphere and W is the state's fused weight.
template <class Opt, class B>
void steps_keep_d_on_its_sphere(B& be, Opt opt) {
  for (auto sph : all_spheres)
    for (bool project : {false, true})
      BOOST_TEST_CONTEXT("sphere " << int(sph) << " project " << project) {
        opt.sphere = sph;
        opt.project_gradient = project;
        dmat w = random(be, 8, 6, 20);
        auto s = opt.init(be, polar::make_view(w));
        const auto h = opt.geometry(8, 6);
        typename polar::hypersphere::template workspace<B, double> ws;
        double worst = 0, worst_fuse = 0;
        for (int k = 0; k < 25; ++k) {
          const dmat g = random(be, 8, 6, 30 + k);
          opt.step(be, polar::make_view(w), cv(g), s);
          worst = std::max(worst, h.distance(be, cv(dmat(host(be, s, s.d, 8, 6))), ws));
          dmat f(8, 6);
          opt.fuse(be, s, polar::make_view(f));
          worst_fuse = std::max(worst_fuse, (f - w).norm());
        }
        BOOST_TEST(worst <= 1e-13 * h.radius);
        BOOST_TEST(worst_fuse == 0.0);
        BOOST_TEST(s.steps == 25);
      }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(d_keeps_its_norm, B, gains_backends) {
  B be;
  polar::md_adamw adam;
  adam.direction.lr = 0.05;
  adam.gain_direction.lr = 0.05;
  steps_keep_d_on_its_sphere(be, adam);
  polar::md_muon muon;
  steps_keep_d_on_its_sphere(be, muon);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(zero_learning_rate_leaves_w_unchanged, B, gains_backends) {
  B be;
  for (auto g : all_scopes)
    for (auto sph : all_spheres) {
      if (!compatible(g, sph)) continue;
      BOOST_TEST_CONTEXT("gains " << int(g) << " sphere " << int(sph)) {
        polar::md_adamw opt;
        opt.gains = g;
        opt.sphere = sph;
        opt.direction.lr = 0;
        opt.gain_direction.lr = 0;
        dmat w = random(be, 6, 9, 40);
        const dmat w0 = w;
        auto s = opt.init(be, polar::make_view(w));
        for (int k = 0; k < 5; ++k) opt.step(be, polar::make_view(w), cv(dmat(random(be, 6, 9, 41 + k))), s);
        // To rounding: the fused weight is recomputed from D and the gains.
        BOOST_TEST((w - w0).norm() <= 1e-14 * w0.norm());
      }
    }
}

// Least squares to a target: the loss falls by orders of magnitude with
// AdamW and with Muon stepping D.
template <class Opt, class B>
double fit(B& be, Opt opt, int steps) {
  const dmat target = random(be, 12, 8, 50) * 2.0;
  dmat w = random(be, 12, 8, 51) * 0.1;
  auto s = opt.init(be, polar::make_view(w));
  const double start = (w - target).squaredNorm();
  for (int k = 0; k < steps; ++k) opt.step(be, polar::make_view(w), cv(dmat(w - target)), s);
  return (w - target).squaredNorm() / start;
}

BOOST_AUTO_TEST_CASE_TEMPLATE(converges_with_adamw_and_muon, B, gains_backends) {
  B be;
  polar::md_adamw adam;
  adam.direction.lr = 0.02;
  adam.gain_direction.lr = 0.02;
  const double ra = fit(be, adam, 600);
  BOOST_TEST(ra <= 1e-4);
  polar::md_muon muon;
  muon.direction.lr = 0.02;
  muon.gain_direction.lr = 0.02;
  const double rm = fit(be, muon, 600);
  BOOST_TEST(rm <= 1e-2);
}

// The fused step (AdamW on D) against the generic sequence, for
// every gain scope, sphere and map; the larger shape runs on several
// threads, so the threads' column sums are reduced.
template <class T, class B>
void fused_matches_generic(B& be, polar::index rows, polar::index cols, double tol) {
  using tmat = geometry_test::mat<T>;
  for (auto g : all_scopes)
    for (auto sph : all_spheres)
      for (bool sp : {true, false}) {
        if (!compatible(g, sph)) continue;
        BOOST_TEST_CONTEXT("gains " << int(g) << " sphere " << int(sph) << " softplus " << sp << " shape " << rows
                                    << "x" << cols) {
          polar::md_adamw fused;
          fused.gains = g;
          fused.sphere = sph;
          fused.phi = sp ? polar::gain_map::softplus : polar::gain_map::identity;
          fused.direction.lr = 0.01;
          fused.gain_direction.lr = 0.01;
          auto generic = fused;
          generic.fast_paths = false;
          tmat a = random<T>(be, rows, cols, 70);
          tmat b = a;
          auto sa = fused.init(be, polar::make_view(a));
          auto sb = generic.init(be, polar::make_view(b));
          BOOST_TEST(fused.takes_fast_path(polar::make_view(a), polar::make_view(static_cast<const tmat&>(a)), sa));
          BOOST_TEST(!generic.takes_fast_path(polar::make_view(b), polar::make_view(static_cast<const tmat&>(b)), sb));
          for (int k = 0; k < 10; ++k) {
            const tmat gr = random<T>(be, rows, cols, 71 + k);
            fused.step(be, polar::make_view(a), polar::make_view(gr), sa);
            generic.step(be, polar::make_view(b), polar::make_view(gr), sb);
          }
          BOOST_TEST(double((a - b).norm()) <= tol * double(b.norm()));
          // The fused kernel leaves D's factors pending; the generic
          // sequence never does.
          BOOST_TEST(sa.rows_pending);
          BOOST_TEST(sa.cols_pending == (sph == polar::sphere_scope::cols));
          BOOST_TEST(!sb.pending());
          sa.settle(be);
          BOOST_TEST(!sa.pending());
          const Eigen::Map<const tmat> da(sa.d.data(), rows, cols), db(sb.d.data(), rows, cols);
          BOOST_TEST(double((da - db).norm()) <= tol * double(db.norm()));
          BOOST_TEST(sa.steps == 10);
          BOOST_TEST(sa.dir.steps == sb.dir.steps);
        }
      }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(fused_step_matches_the_generic_step, B, gains_backends) {
  B be;
  fused_matches_generic<double>(be, 7, 5, 1e-12);
  fused_matches_generic<double>(be, 96, 400, 1e-12);
  fused_matches_generic<float>(be, 7, 5, 2e-5);
  fused_matches_generic<float>(be, 96, 400, 2e-5);
}

// The fused kernel leaves D's sphere factors pending in the state, and
// they may not show; nor may phi of the gains that it leaves in the state
// go stale. The same
// steps through the generic sequence are the reference, while the fused
// state is checkpointed, stepped by the generic sequence, has gains set by
// hand, and is loaded from a checkpoint.
BOOST_AUTO_TEST_CASE_TEMPLATE(pending_factors_and_remembered_gains_do_not_show, B, gains_backends) {
  B be;
  for (auto sph : all_spheres)
    BOOST_TEST_CONTEXT("sphere " << int(sph)) {
      polar::md_adamw fused;
      fused.sphere = sph;
      fused.direction.lr = 0.01;
      fused.gain_direction.lr = 0.01;
      auto generic = fused;
      generic.fast_paths = false;
      dmat a = random(be, 9, 6, 80), b = a;
      auto sa = fused.init(be, polar::make_view(a));
      auto sb = generic.init(be, polar::make_view(b));
      const auto step = [&](const polar::md_adamw& opt_a, std::uint64_t seed) {
        const dmat g = random(be, 9, 6, seed);
        opt_a.step(be, polar::make_view(a), cv(g), sa);
        generic.step(be, polar::make_view(b), cv(g), sb);
      };
      const auto same_w = [&](const char* when) {
        BOOST_TEST((a - b).norm() <= 1e-12 * b.norm(), when << ": |W_fused - W_generic| = " << (a - b).norm());
      };
      for (int k = 0; k < 3; ++k) step(fused, 81 + std::uint64_t(k));
      BOOST_TEST(sa.pending());
      // A checkpoint keeps D itself.
      polar::checkpoint ck;
      ck.put_state(be, "a", sa);
      BOOST_TEST(!sa.pending());
      dmat saved(1, 54), want(1, 54);  // buffers are saved as 1 x size
      ck.get(be, "a/d", polar::make_view(saved));
      std::memcpy(want.data(), sb.d.data(), sizeof(double) * 54);
      BOOST_TEST((saved - want).norm() <= 1e-12 * want.norm());
      // The generic sequence on a state whose factors are pending.
      step(fused, 84);
      step(generic, 85);
      step(fused, 86);
      same_w("after the paths took turns");
      // Gains set by hand between fused steps.
      step(fused, 87);
      sa.r.data()[2] += 0.25;
      sb.r.data()[2] += 0.25;
      sa.c.data()[1] -= 0.25;
      sb.c.data()[1] -= 0.25;
      step(fused, 88);
      same_w("after gains were set by hand");
      // The generic state loaded into the fused one.
      polar::checkpoint ckb;
      ckb.put_state(be, "b", sb);
      ckb.get_state(be, "b", sa);
      a = b;
      step(fused, 89);
      same_w("after a checkpoint was loaded");
      // fuse() of a state with factors pending gives W.
      dmat f(9, 6);
      fused.fuse(be, sa, polar::make_view(f));
      BOOST_TEST((f - a).norm() <= 1e-14 * a.norm());
    }
}

// stream_row, which row.stream of the host backends writes with (the
// fused kernel's second pass writes W so): every element, at every
// alignment and length, with streaming stores (where the machine has them)
// and without, with and without column factors; each element equal to the
// scalar form's, and the hook that asks for lines ahead called once a line.
template <class T, bool ColFactor>
bool stream_row_case(bool streaming, polar::index offset, polar::index n) {
  const std::size_t len = std::size_t(n);
  std::vector<T> out(len + 20, T(-7)), d(len), b(len), pc(len);
  for (polar::index j = 0; j < n; ++j) {
    d[std::size_t(j)] = T(j) * T(0.5);
    b[std::size_t(j)] = T(0.25) + T(j % 3);
    pc[std::size_t(j)] = T(1.5) - T(j % 5) * T(0.125);
  }
  const T* const dp = d.data();
  const T* const bp = b.data();
  const T* const pp = pc.data();
  const auto f = [=](polar::index j) {
    const T dn = ColFactor ? T(dp[j] * T(3) * bp[j]) : T(dp[j] * T(3));
    return T(dn * T(0.75) * pp[j]);
  };
  polar::index asked = 0;
  polar::detail::host::stream_row(out.data() + offset, n, streaming, f, [&](polar::index) { ++asked; });
  polar::detail::host::stream_fence();
  bool ok = true;
  for (polar::index j = 0; j < n + 20; ++j) {
    const bool in = j >= offset && j < offset + n;
    const T want = in ? f(j - offset) : T(-7);
    ok = ok && out[std::size_t(j)] == want;
  }
  if (POLAR_STREAMING_STORES && streaming)
    ok = ok && asked >= (n - 8) / polar::detail::line_elements<T> && asked <= n / polar::detail::line_elements<T>;
  else
    ok = ok && asked == 0;
  return ok;
}

BOOST_AUTO_TEST_CASE(stream_row_writes_every_element) {
  BOOST_TEST_MESSAGE("streaming stores compiled in: " << POLAR_STREAMING_STORES);
  for (bool streaming : {true, false})
    for (polar::index offset = 0; offset < 9; ++offset)
      for (polar::index n : {0, 1, 7, 8, 15, 16, 17, 63, 64, 65, 200, 1031}) {
        BOOST_TEST((stream_row_case<float, false>(streaming, offset, n)),
                   "float streaming " << streaming << " offset " << offset << " n " << n);
        BOOST_TEST((stream_row_case<float, true>(streaming, offset, n)),
                   "float with column factors, streaming " << streaming << " offset " << offset << " n " << n);
        BOOST_TEST((stream_row_case<double, false>(streaming, offset, n)),
                   "double streaming " << streaming << " offset " << offset << " n " << n);
        BOOST_TEST((stream_row_case<double, true>(streaming, offset, n)),
                   "double with column factors, streaming " << streaming << " offset " << offset << " n " << n);
      }
}

// A matrix large enough that the fused kernel writes W by streaming stores
// (detail::streaming_bytes), against the generic sequence.
BOOST_AUTO_TEST_CASE(fused_step_matches_the_generic_step_with_streaming_stores) {
  polar::backend::eigen be;
  const polar::index rows = 1024, cols = 2048;
  static_assert(sizeof(float) * 1024 * 2048 >= polar::detail::streaming_bytes);
  polar::md_adamw fused;
  fused.direction.lr = 0.01;
  fused.gain_direction.lr = 0.01;
  auto generic = fused;
  generic.fast_paths = false;
  using fmat = geometry_test::mat<float>;
  fmat a = random<float>(be, rows, cols, 90), b = a;
  auto sa = fused.init(be, polar::make_view(a));
  auto sb = generic.init(be, polar::make_view(b));
  for (int k = 0; k < 3; ++k) {
    const fmat g = random<float>(be, rows, cols, 91 + std::uint64_t(k));
    fused.step(be, polar::make_view(a), polar::make_view(g), sa);
    generic.step(be, polar::make_view(b), polar::make_view(g), sb);
  }
  BOOST_TEST(double((a - b).norm()) <= 2e-5 * double(b.norm()));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(bad_input_is_reported_and_changes_nothing, B, gains_backends) {
  B be;
  polar::md_adamw opt;
  // A zero row cannot be put on the row sphere.
  opt.sphere = polar::sphere_scope::rows;
  dmat w = random(be, 4, 5, 60);
  w.row(2).setZero();
  BOOST_CHECK_THROW(opt.init(be, polar::make_view(w)), polar::numerical_error);
  // Row spheres with only column gains cannot keep W's row norms.
  opt.gains = polar::gain_scope::cols;
  w = random(be, 4, 5, 61);
  BOOST_CHECK_THROW(opt.init(be, polar::make_view(w)), polar::value_error);
  // A zero matrix on the flat sphere.
  opt = {};
  dmat z = dmat::Zero(3, 3);
  BOOST_CHECK_THROW(opt.init(be, polar::make_view(z)), polar::numerical_error);
  // Identity gains that are not positive.
  opt.phi = polar::gain_map::identity;
  auto s = opt.init(be, polar::make_view(w));
  s.c.data()[3] = -0.5;
  const dmat w0 = w, d0 = host(be, s, s.d, 4, 5);
  polar_test::check_throws<polar::value_error>(
      [&] { opt.step(be, polar::make_view(w), cv(dmat(random(be, 4, 5, 62))), s); }, {"-0.5", "column"});
  BOOST_TEST((w - w0).norm() == 0.0);
  BOOST_TEST((host(be, s, s.d, 4, 5) - d0).norm() == 0.0);
  BOOST_TEST(s.steps == 0);
  // Shapes that do not match the state, G with NaN, hyperparameters.
  s.c.data()[3] = 1.0;
  dmat wrong = random(be, 5, 4, 63);
  const dmat wrong_g = wrong;
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(wrong), cv(wrong_g), s), polar::shape_error);
  dmat bad = random(be, 4, 5, 64);
  bad(1, 1) = std::nan("");
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(w), cv(bad), s), polar::non_finite_error);
  BOOST_TEST((w - w0).norm() == 0.0);
  opt.floor = 0;
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(w), cv(w0), s), polar::value_error);
  opt.floor = 1e-8;
  opt.radius = -1;
  BOOST_CHECK_THROW(opt.init(be, polar::make_view(w)), polar::value_error);
  BOOST_TEST(s.steps == 0);
  // lr * weight_decay = 1 decays D to zero in one step: a row whose update
  // is zero too (a zero gradient row, fresh moments) cannot be put back on
  // its sphere. That setting takes the generic sequence, which refuses it
  // before writing W or the state.
  polar::md_adamw decays;
  decays.sphere = polar::sphere_scope::rows;
  decays.direction.lr = 0.5;
  decays.direction.weight_decay = 2;
  dmat wd = random(be, 4, 5, 65);
  auto sd = decays.init(be, polar::make_view(wd));
  dmat gz = random(be, 4, 5, 66);
  gz.row(1).setZero();
  BOOST_TEST(!decays.takes_fast_path(polar::make_view(wd), cv(gz), sd));
  const dmat wd0 = wd;
  const auto sd0 = core_test::state_bytes(be, sd);
  polar_test::check_throws<polar::numerical_error>([&] { decays.step(be, polar::make_view(wd), cv(gz), sd); },
                                                   {"zero norm"});
  BOOST_TEST((wd - wd0).norm() == 0.0);
  BOOST_TEST(core_test::state_bytes(be, sd) == sd0);
  // Any other weight decay keeps the fused kernel.
  decays.direction.weight_decay = 1;
  BOOST_TEST(decays.takes_fast_path(polar::make_view(wd), cv(gz), sd));
}

// A convolution kernel (out, in, kh, kw) steps as the matrix (out, in kh kw):
// the same weights, bit for bit, as the matrix's own steps.
BOOST_AUTO_TEST_CASE_TEMPLATE(tensors_step_as_their_matrices, B, gains_backends) {
  B be;
  polar::md_adamw opt;
  opt.direction.lr = 0.02;
  opt.gain_direction.lr = 0.02;
  dmat w = random(be, 6, 12, 90);
  dmat wm = w;
  const polar::tensor_view<double> wt(w.data(), {6, 3, 2, 2});
  auto st = opt.init(be, wt);
  auto sm = opt.init(be, polar::make_view(wm));
  BOOST_TEST(st.rows == 6);
  BOOST_TEST(st.cols == 12);
  dmat g;
  for (int k = 0; k < 4; ++k) {
    g = random(be, 6, 12, 91 + k);
    opt.step(be, wt, polar::tensor_view<const double>(g.data(), {6, 3, 2, 2}), st);
    opt.step(be, polar::make_view(wm), cv(g), sm);
  }
  BOOST_TEST((w - wm).norm() == 0.0);
  dmat f(6, 12);
  opt.fuse(be, st, polar::tensor_view<double>(f.data(), {6, 3, 2, 2}));
  BOOST_TEST((f - w).norm() <= 1e-14 * w.norm());
  // A stack of matrices, a vector, and tensors of different shapes.
  const dmat w0 = w;
  polar_test::check_throws<polar::unsupported_error>(
      [&] { opt.init(be, polar::tensor_view<double>(w.data(), {2, 6, 6})); }, {"2x6x6"});
  BOOST_CHECK_THROW(opt.init(be, polar::tensor_view<double>(w.data(), {72})), polar::unsupported_error);
  BOOST_CHECK_THROW(opt.step(be, wt, polar::tensor_view<const double>(g.data(), {6, 12, 1, 1}), st),
                    polar::shape_error);
  BOOST_TEST((w - w0).norm() == 0.0);
  BOOST_TEST(st.steps == 4);
}

// Gains over a direction with its own manifold: D lies on the Stiefel
// manifold (Riemannian Adam, manifold Muon) instead of a sphere. The fresh
// state keeps W's norm; D stays on the manifold after every step; a target
// of the factorization's form, diag(a) Q diag(b) with orthonormal Q, is fitted;
// a sphere setting that conflicts with the manifold is refused.
template <class Opt, class B>
void gains_on_stiefel(B& be, Opt opt, int steps, double reach) {
  static_assert(Opt::on_direction_manifold);
  const polar::index m = 10, n = 4;
  dmat q = random(be, m, n, 60);
  q = Eigen::HouseholderQR<dmat>(q).householderQ() * dmat::Identity(m, n);
  Eigen::VectorXd a(m), b(n);
  for (polar::index i = 0; i < m; ++i) a(i) = 0.5 + 0.1 * double(i);
  for (polar::index j = 0; j < n; ++j) b(j) = 2.0 - 0.3 * double(j);
  const dmat target = a.asDiagonal() * q * b.asDiagonal();
  dmat w = random(be, m, n, 61);
  const double w_norm = w.norm();
  auto s = opt.init(be, polar::make_view(w));
  // The fused weight of the fresh state has W's norm.
  dmat f(m, n);
  opt.fuse(be, s, polar::make_view(f));
  BOOST_TEST(std::abs(f.norm() - w_norm) <= 1e-12 * w_norm);
  const double start = (w - target).squaredNorm();
  for (int k = 0; k < steps; ++k) {
    opt.step(be, polar::make_view(w), cv(dmat(w - target)), s);
    const dmat d = host(be, s, s.d, m, n);
    const double off = (d.transpose() * d - dmat::Identity(n, n)).norm();
    if (off > 1e-10) {
      BOOST_TEST(off <= 1e-10, "D left the Stiefel manifold at step " << k);
      break;
    }
  }
  const double end = (w - target).squaredNorm();
  BOOST_TEST(end <= reach * start, "from " << start << " to " << end);
  BOOST_TEST_MESSAGE("gains on Stiefel: squared error from " << start << " to " << end);
  // Conflicting sphere settings.
  opt.radius = 2;
  BOOST_CHECK_THROW(opt.init(be, polar::make_view(w)), polar::value_error);
  opt.radius = 0;
  opt.sphere = polar::sphere_scope::rows;
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(w), cv(dmat(w - target)), s), polar::value_error);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gains_over_a_direction_on_its_own_manifold, B, gains_backends) {
  B be;
  using md_stiefel_adam = polar::row_col_gains<polar::riemannian_adam<polar::stiefel<>>>;
  md_stiefel_adam adam;
  adam.direction.direction.lr = 0.02;
  adam.gain_direction.lr = 0.02;
  gains_on_stiefel(be, adam, 800, 1e-3);
  polar::row_col_gains<polar::manifold_muon<>> muon;
  muon.direction.lr = 0.05;
  muon.direction.max_dual_steps = 20;
  muon.gain_direction.lr = 0.02;
  gains_on_stiefel(be, muon, 800, 1e-3);
  // Euclidean "geometry" is not a manifold of its own: D stays on the sphere.
  static_assert(!polar::row_col_gains<polar::riemannian_adam<polar::euclidean>>::on_direction_manifold);
}

BOOST_AUTO_TEST_SUITE_END()
