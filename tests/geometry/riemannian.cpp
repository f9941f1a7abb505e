// Tests of riemannian<Direction, Geometry> and manifold Muon: a battery of
// problems that know their answer (the Rayleigh quotient on every sphere, the
// Brockett cost and orthogonal Procrustes on the Stiefel manifold with every
// retraction), solved by every direction (SGD, heavy-ball and Nesterov
// momentum, Adam, Muon) and by manifold Muon; the Euclidean geometry giving
// the direction's own step bit for bit; transported momentum staying
// tangent; the dual ascent's optimality; and bad input. On the Eigen backend
// and Thrust's OMP system.
#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/manifold_muon.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/geometry/stiefel.hpp"
#include "core/state_bytes.hpp"
#include "geometry/geometry_support.hpp"
#include "support.hpp"

namespace {

using geometry_test::backends;
using geometry_test::cv;
using geometry_test::dmat;
using geometry_test::random;

/// A symmetric matrix with eigenvalues 1, 2, ..., n (over n) in a random basis.
template <class B>
dmat spectrum_matrix(B& be, polar::index n, std::uint64_t seed) {
  const dmat q = Eigen::HouseholderQR<dmat>(random(be, n, n, seed)).householderQ();
  Eigen::VectorXd lambda(n);
  for (polar::index i = 0; i < n; ++i) lambda(i) = double(i + 1) / double(n);
  return q * lambda.asDiagonal() * q.transpose();
}

/// A problem that knows its answer: the loss, its Euclidean gradient, the
/// optimal loss, and a starting point.
struct problem {
  std::string name;
  std::function<double(const dmat&)> loss;
  std::function<dmat(const dmat&)> grad;
  double optimum;
  dmat start;
};

/// The Rayleigh quotient of each group: sum over groups of x^T A x; on unit
/// spheres its minimum is lambda_min per group.
template <class B>
problem rayleigh(B& be, polar::sphere_scope scope) {
  const polar::index n = 10, k = 3;
  const dmat A = spectrum_matrix(be, n, 7);
  problem pr;
  pr.name = "rayleigh";
  const bool rows = scope == polar::sphere_scope::rows;
  // rows: X is k x n (each row a point); flat and cols: X is n x k.
  pr.loss = [A, rows](const dmat& x) { return rows ? (x * A * x.transpose()).trace() : (x.transpose() * A * x).trace(); };
  pr.grad = [A, rows](const dmat& x) { return dmat(rows ? dmat(2 * x * A) : dmat(2 * A * x)); };
  const double lmin = 1.0 / double(n);
  pr.optimum = scope == polar::sphere_scope::flat ? lmin : double(k) * lmin;
  pr.start = rows ? random(be, k, n, 8) : random(be, n, k, 8);
  return pr;
}

/// The Brockett cost -tr(X^T A X N), N = diag(p, ..., 1): its minimizers are
/// the leading eigenvectors of A, in order.
template <class B>
problem brockett(B& be) {
  const polar::index n = 10, p = 3;
  const dmat A = spectrum_matrix(be, n, 9);
  dmat N = dmat::Zero(p, p);
  double optimum = 0;
  for (polar::index j = 0; j < p; ++j) {
    N(j, j) = double(p - j);
    optimum -= N(j, j) * double(n - j) / double(n);
  }
  problem pr;
  pr.name = "brockett";
  pr.loss = [A, N](const dmat& x) { return -(x.transpose() * A * x * N).trace(); };
  pr.grad = [A, N](const dmat& x) { return dmat(-2 * A * x * N); };
  pr.optimum = optimum;
  pr.start = random(be, n, p, 10);
  return pr;
}

/// Orthogonal Procrustes, |X - C|_F^2 / 2: the minimizer is C's polar factor.
template <class B>
problem procrustes(B& be) {
  const polar::index n = 10, p = 3;
  const dmat C = random(be, n, p, 11);
  Eigen::JacobiSVD<dmat> svd(C, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const dmat polar_factor = svd.matrixU() * svd.matrixV().transpose();
  problem pr;
  pr.name = "procrustes";
  pr.loss = [C](const dmat& x) { return 0.5 * (x - C).squaredNorm(); };
  pr.grad = [C](const dmat& x) { return dmat(x - C); };
  pr.optimum = 0.5 * (polar_factor - C).squaredNorm();
  pr.start = random(be, n, p, 12);
  return pr;
}

/// Runs `steps` steps of opt with a learning rate decaying linearly from lr0
/// to zero; returns the final loss gap, checking the point stays on the set.
template <class Opt, class B>
double solve(B& be, Opt opt, const problem& pr, double lr0, int steps) {
  dmat x = pr.start;
  typename decltype(opt.geometry)::template workspace<B, double> gws;
  opt.geometry.project(be, polar::make_view(x), gws);
  auto s = opt.init(be, polar::make_view(x));
  for (int t = 0; t < steps; ++t) {
    opt.direction.lr = lr0 * (1.0 - double(t) / double(steps));
    const dmat g = pr.grad(x);
    opt.step(be, polar::make_view(x), cv(g), s);
  }
  BOOST_TEST(opt.geometry.distance(be, cv(x), gws) <= 1e-10);
  return pr.loss(x) - pr.optimum;
}

/// Every direction on one geometry, each with its own learning rate.
template <class Geometry, class B>
void every_direction(B& be, const Geometry& geo, const problem& pr, double tolerance) {
  const int steps = 1500;
  BOOST_TEST_CONTEXT(pr.name) {
    {
      polar::riemannian_sgd<Geometry> opt;
      opt.geometry = geo;
      const double gap = solve(be, opt, pr, 0.1, steps);
      BOOST_TEST_MESSAGE(pr.name << " sgd gap " << gap);
      BOOST_TEST(std::abs(gap) <= tolerance, "sgd gap " << gap);
    }
    for (bool nesterov : {false, true}) {
      polar::riemannian_momentum<Geometry> opt;
      opt.geometry = geo;
      opt.direction.nesterov = nesterov;
      const double gap = solve(be, opt, pr, 0.02, steps);
      BOOST_TEST_MESSAGE(pr.name << " momentum nesterov " << nesterov << " gap " << gap);
      BOOST_TEST(std::abs(gap) <= tolerance, "momentum (nesterov " << nesterov << ") gap " << gap);
    }
    {
      polar::riemannian_adam<Geometry> opt;
      opt.geometry = geo;
      const double gap = solve(be, opt, pr, 0.05, steps);
      BOOST_TEST_MESSAGE(pr.name << " adam gap " << gap);
      BOOST_TEST(std::abs(gap) <= tolerance, "adam gap " << gap);
    }
    {
      polar::riemannian_muon<Geometry, polar::svd_polar> opt;
      opt.geometry = geo;
      const double gap = solve(be, opt, pr, 0.05, steps);
      BOOST_TEST_MESSAGE(pr.name << " muon gap " << gap);
      BOOST_TEST(std::abs(gap) <= tolerance, "muon gap " << gap);
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(riemannian)

BOOST_AUTO_TEST_CASE_TEMPLATE(battery_on_the_spheres, B, backends) {
  B be;
  for (auto scope : {polar::sphere_scope::flat, polar::sphere_scope::rows, polar::sphere_scope::cols})
    for (auto retr : {polar::sphere_retraction::normalize, polar::sphere_retraction::exponential}) {
      BOOST_TEST_CONTEXT("scope " << int(scope) << " retraction " << int(retr)) {
        every_direction(be, polar::hypersphere{scope, 1.0, retr}, rayleigh(be, scope), 1e-6);
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(battery_on_the_stiefel_manifold, B, backends) {
  B be;
  const polar::stiefel<> geometries[] = {
      {polar::stiefel_metric::euclidean, polar::stiefel_retraction::qr},
      {polar::stiefel_metric::euclidean, polar::stiefel_retraction::polar},
      {polar::stiefel_metric::euclidean, polar::stiefel_retraction::exponential},
      {polar::stiefel_metric::canonical, polar::stiefel_retraction::cayley, polar::stiefel_transport::cayley},
      {polar::stiefel_metric::canonical, polar::stiefel_retraction::qr},
  };
  for (const auto& geo : geometries) {
    BOOST_TEST_CONTEXT("metric " << int(geo.metric) << " retraction " << int(geo.retraction) << " transport "
                                 << int(geo.transport_by)) {
      every_direction(be, geo, brockett(be), 1e-6);
      every_direction(be, geo, procrustes(be), 1e-6);
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(manifold_muon_battery, B, backends) {
  B be;
  for (const problem& pr : {brockett(be), procrustes(be)}) {
    BOOST_TEST_CONTEXT(pr.name) {
      polar::manifold_muon<> opt;
      dmat x = pr.start;
      auto geo = opt.geometry();
      typename polar::stiefel<>::template workspace<B, double> gws;
      geo.project(be, polar::make_view(x), gws);
      auto s = opt.init(be, polar::make_view(x));
      const int steps = 600;
      for (int t = 0; t < steps; ++t) {
        opt.lr = 0.1 * (1.0 - double(t) / double(steps));
        const dmat g = pr.grad(x);
        opt.step(be, polar::make_view(x), cv(g), s);
        BOOST_TEST(s.dual_iterations >= 1);
        BOOST_TEST(s.dual_iterations <= opt.max_dual_steps);
      }
      BOOST_TEST(geo.distance(be, cv(x), gws) <= 1e-12);
      const double gap = pr.loss(x) - pr.optimum;
      BOOST_TEST_MESSAGE(pr.name << " manifold muon gap " << gap);
      BOOST_TEST(std::abs(gap) <= 1e-6, "gap " << gap);
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(euclidean_geometry_is_the_direction_itself, B, backends) {
  B be;
  const dmat w0 = random(be, 9, 5, 20), g1 = random(be, 9, 5, 21), g2 = random(be, 9, 5, 22);
  polar::riemannian<polar::adamw_direction, polar::euclidean> composed;
  BOOST_TEST(composed.direction.weight_decay == 0.01);  // AdamW's default kept off a manifold
  polar::adamw_direction plain;
  dmat a = w0, b = w0;
  auto sa = composed.init(be, polar::make_view(a));
  auto sb = plain.init(be, polar::make_view(b));
  for (const dmat* g : {&g1, &g2}) {
    composed.step(be, polar::make_view(a), cv(*g), sa);
    plain.step(be, polar::make_view(b), cv(*g), sb);
  }
  BOOST_TEST((a - b).norm() == 0.0);
  BOOST_TEST(sa.steps == 2);
  // On a manifold the default weight decay is 0.
  BOOST_TEST(polar::riemannian_adam<polar::stiefel<>>{}.direction.weight_decay == 0.0);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(update_matches_step, B, backends) {
  // W + update(G) is the step without weight decay, for every direction.
  B be;
  const dmat w0 = random(be, 8, 6, 30), g1 = random(be, 8, 6, 31), g2 = random(be, 8, 6, 32);
  const auto check = [&](auto dir) {
    dir.weight_decay = 0;
    dmat a = w0, d(8, 6);
    dmat b = w0;
    auto sa = dir.init(be, polar::make_view(a));
    auto sb = dir.init(be, polar::make_view(b));
    for (const dmat* g : {&g1, &g2}) {
      dir.update(be, cv(*g), sa, polar::make_view(d));
      a += d;
      dir.step(be, polar::make_view(b), cv(*g), sb);
    }
    BOOST_TEST((a - b).norm() <= 1e-14 * b.norm());
  };
  check(polar::sgd_direction{});
  check(polar::momentum_direction{0.01, 0.9, false});
  check(polar::momentum_direction{0.01, 0.9, true, polar::momentum_kind::ema});
  check(polar::adamw_direction{});
  check(polar::muon_direction<>{});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(transported_momentum_is_tangent, B, backends) {
  B be;
  const polar::index n = 12, p = 4;
  for (auto transport : {polar::stiefel_transport::projection, polar::stiefel_transport::cayley}) {
    polar::riemannian_momentum<polar::stiefel<>> opt;
    opt.geometry = {polar::stiefel_metric::canonical, polar::stiefel_retraction::cayley, transport};
    opt.direction.lr = 0.05;
    typename polar::stiefel<>::template workspace<B, double> ws;
    dmat x = random(be, n, p, 40);
    opt.geometry.project(be, polar::make_view(x), ws);
    auto s = opt.init(be, polar::make_view(x));
    for (int k = 0; k < 5; ++k) {
      const dmat g = random(be, n, p, 41 + std::uint64_t(k));
      opt.step(be, polar::make_view(x), cv(g), s);
      const Eigen::Map<const dmat> buf(s.dir.buf.data(), n, p);
      BOOST_TEST((x.transpose() * buf + buf.transpose() * x).norm() <= 1e-12 * buf.norm());
    }
  }
  // Adam on the row sphere: the first moment tangent row by row, one second
  // moment per row.
  polar::riemannian_adam<polar::hypersphere> adam;
  adam.geometry.scope = polar::sphere_scope::rows;
  typename polar::hypersphere::template workspace<B, double> ws;
  dmat x = random(be, 5, 7, 50);
  adam.geometry.project(be, polar::make_view(x), ws);
  auto s = adam.init(be, polar::make_view(x));
  BOOST_TEST(s.dir.v.size() == 5);
  for (int k = 0; k < 3; ++k) {
    const dmat g = random(be, 5, 7, 51 + std::uint64_t(k));
    adam.step(be, polar::make_view(x), cv(g), s);
  }
  const Eigen::Map<const dmat> m(s.dir.m.data(), 5, 7);
  BOOST_TEST((x.cwiseProduct(m).rowwise().sum()).norm() <= 1e-12 * m.norm());
}

// The fused row-sphere kernels (host memory) against the generic sequence.
template <class T, class B, class Direction>
void fused_matches_generic(B& be, Direction dir, double tol, polar::index rows, polar::index cols) {
  using tmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  polar::riemannian<Direction, polar::hypersphere> fused{dir, {polar::sphere_scope::rows, 2.0}};
  auto generic = fused;
  generic.fast_paths = false;
  BOOST_TEST(fused.template takes_fast_path<B>());
  BOOST_TEST(!generic.template takes_fast_path<B>());
  typename polar::hypersphere::template workspace<B, T> ws;
  tmat a(rows, cols);
  be.fill_random(polar::make_view(a), polar::rng_key{80}, polar::distribution::normal);
  fused.geometry.project(be, polar::make_view(a), ws);
  tmat b = a;
  auto sa = fused.init(be, polar::make_view(a));
  auto sb = generic.init(be, polar::make_view(b));
  for (int k = 0; k < 20; ++k) {
    tmat g(rows, cols);
    be.fill_random(polar::make_view(g), polar::rng_key{81, 0, std::uint32_t(k)}, polar::distribution::normal);
    fused.step(be, polar::make_view(a), polar::make_view(static_cast<const tmat&>(g)), sa);
    generic.step(be, polar::make_view(b), polar::make_view(static_cast<const tmat&>(g)), sb);
  }
  BOOST_TEST(double((a - b).norm()) <= tol * double(b.norm()));
  BOOST_TEST(fused.geometry.distance(be, polar::make_view(static_cast<const tmat&>(a)), ws) <= 100 * tol);
  BOOST_TEST(sa.dir.steps == sb.dir.steps);
  BOOST_TEST(sa.steps == 20);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(fused_row_sphere_matches_the_generic_step, B, backends) {
  B be;
  for (double tol : {1e-12, 2e-5}) {
    BOOST_TEST_CONTEXT((tol < 1e-6 ? "double" : "float")) {
      const auto run = [&](auto dir) {
        dir.lr = 0.05;
        // Short rows, and rows of several of the kernels' summation blocks
        // (polar::row_sum_block) with a ragged tail.
        for (const auto& [rows, cols] : {std::pair<polar::index, polar::index>{6, 11}, {3, 1100}}) {
          if (tol < 1e-6)
            fused_matches_generic<double>(be, dir, tol, rows, cols);
          else
            fused_matches_generic<float>(be, dir, tol, rows, cols);
        }
      };
      run(polar::sgd_direction{});
      run(polar::momentum_direction{0.01, 0.9, false});
      run(polar::momentum_direction{0.01, 0.9, true});
      run(polar::momentum_direction{0.01, 0.9, true, polar::momentum_kind::ema});
      run(polar::momentum_direction{0.01, 0.9, false, polar::momentum_kind::ema});
      run(polar::adamw_direction{0.01, 0.9, 0.999, 1e-8, 0.0});
    }
  }
}

// A zero row of W on the fused row-sphere path, with check_point off (the
// release default, so nothing else looks at W before the kernel writes),
// against the generic sequence. With something to step along (its gradient
// row, or the direction's memory of the row) both step it onto the sphere
// and agree; with nothing, both refuse it before writing anything.
template <class T, class B, class Direction>
void fused_zero_row(B& be, Direction dir, polar::index rows, polar::index cols, polar::index z) {
  using tmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using cmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  dir.lr = 0.05;
  polar::riemannian<Direction, polar::hypersphere> opt{dir, {polar::sphere_scope::rows, 2.0}};
  opt.check_point = false;
  auto generic = opt;
  generic.fast_paths = false;
  BOOST_TEST(opt.template takes_fast_path<B>());
  const double tol = polar_test::tolerance<T>();
  typename polar::hypersphere::template workspace<B, T> ws;
  tmat w = geometry_test::random<T>(be, rows, cols, 90);
  opt.geometry.project(be, polar::make_view(w), ws);
  tmat wg = w;
  auto s = opt.init(be, polar::make_view(w));
  auto sg = generic.init(be, polar::make_view(wg));
  const auto both = [&](const tmat& g, const char* what) {
    BOOST_TEST_CONTEXT(what) {
      opt.step(be, polar::make_view(w), cv(g), s);
      generic.step(be, polar::make_view(wg), cv(g), sg);
      BOOST_TEST(w.allFinite());
      BOOST_TEST(double((w - wg).norm()) <= tol * double(wg.norm()));
      BOOST_TEST(std::abs(double(w.row(z).norm()) - 2.0) <= tol);
    }
  };
  // One ordinary step, so that the state remembers every row.
  both(geometry_test::random<T>(be, rows, cols, 91), "ordinary");
  // A zero row whose gradient row is zero but whose memory is not
  // (momentum, Adam; SGD has none and is refused below).
  tmat g = geometry_test::random<T>(be, rows, cols, 92);
  g.row(z).setZero();
  const bool remembers = !std::is_same_v<Direction, polar::sgd_direction>;
  if (remembers) {
    w.row(z).setZero();
    wg.row(z).setZero();
    both(g, "zero W and G rows, memory of the row");
  }
  // A zero row whose gradient row is not zero.
  w.row(z).setZero();
  wg.row(z).setZero();
  both(geometry_test::random<T>(be, rows, cols, 93), "zero W row");
  // Nothing to step along: W's row, G's row and the memory of the row zero.
  w.row(z).setZero();
  wg.row(z).setZero();
  const auto forget_row = [&](auto& st) {
    if constexpr (std::is_same_v<Direction, polar::momentum_direction>)
      for (polar::index j = 0; j < cols; ++j) st.dir.buf.data()[z * cols + j] = T(0);
    if constexpr (std::is_same_v<Direction, polar::adamw_direction>)
      for (polar::index j = 0; j < cols; ++j) st.dir.m.data()[z * cols + j] = T(0);
  };
  forget_row(s);
  forget_row(sg);
  const tmat w0 = w;
  const auto s0 = core_test::state_bytes(be, s), sg0 = core_test::state_bytes(be, sg);
  const long steps = s.steps;
  const auto refused = [&](auto& o, auto& st, const std::vector<std::uint8_t>& st0, polar::matrix_view<const T> gv,
                           const char* what) {
    BOOST_TEST_CONTEXT(what) {
      const auto step = [&] { o.step(be, polar::make_view(w), gv, st); };
      // The generic sequence's error comes from the retraction.
      if (o.template takes_fast_path<B>())
        polar_test::check_throws<polar::numerical_error>(
            step, {"zero", "polar::riemannian::step",
                   "row " + std::to_string(z) + " of the " + std::to_string(rows) + "x" + std::to_string(cols)});
      else
        polar_test::check_throws<polar::numerical_error>(step, {"zero"});
      BOOST_TEST((w - w0).norm() == T(0));
      BOOST_TEST(core_test::state_bytes(be, st) == st0);
      BOOST_TEST(st.steps == steps);
    }
  };
  refused(opt, s, s0, cv(g), "fused, row-major G");
  // Rows of G that are not contiguous take the strided scan.
  const cmat gc = g;
  refused(opt, s, s0, polar::make_view(gc), "fused, column-major G");
  refused(generic, sg, sg0, cv(g), "generic");
  // A NaN in G is found by the same pass, wherever it is.
  tmat nan_g = g;
  nan_g(rows - 1, cols - 1) = std::numeric_limits<T>::quiet_NaN();
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(w), cv(nan_g), s), polar::non_finite_error);
  BOOST_TEST((w - w0).norm() == T(0));
  BOOST_TEST(core_test::state_bytes(be, s) == s0);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(fused_row_sphere_reports_a_zero_row, B, backends) {
  B be;
  const auto run = [&](auto dir) {
    // A small matrix (one thread) and one past the threading threshold.
    for (const auto& [rows, cols, z] : {std::tuple<polar::index, polar::index, polar::index>{6, 11, 2},
                                        {64, 1100, 37}}) {
      BOOST_TEST_CONTEXT(rows << "x" << cols) {
        fused_zero_row<double>(be, dir, rows, cols, z);
        fused_zero_row<float>(be, dir, rows, cols, z);
      }
    }
  };
  run(polar::sgd_direction{});
  run(polar::momentum_direction{0.01, 0.9, false});
  run(polar::momentum_direction{0.01, 0.9, true});
  run(polar::adamw_direction{0.01, 0.9, 0.999, 1e-8, 0.0});
  // A learning rate of 0 takes the generic sequence, which refuses a zero
  // row of W whatever its gradient (the step leaves it zero).
  polar::riemannian_sgd<polar::hypersphere> zero_lr;
  zero_lr.geometry.scope = polar::sphere_scope::rows;
  zero_lr.check_point = false;
  zero_lr.direction.lr = 0;
  BOOST_TEST(!zero_lr.template takes_fast_path<B>());
  typename polar::hypersphere::template workspace<B, double> ws;
  dmat w = random(be, 6, 11, 94);
  zero_lr.geometry.project(be, polar::make_view(w), ws);
  auto s = zero_lr.init(be, polar::make_view(w));
  w.row(4).setZero();
  const dmat w0 = w;
  BOOST_CHECK_THROW(zero_lr.step(be, polar::make_view(w), cv(dmat(random(be, 6, 11, 95))), s),
                    polar::numerical_error);
  BOOST_TEST((w - w0).norm() == 0.0);
}

// What check_fused_rows cannot see: a zero row of W whose gradient row is
// not zero but whose update cancels exactly (heavy-ball momentum with mu =
// 1/2 and a buffer row of -2 g: mu b + g = 0). The kernel leaves that row
// as it was, steps the others, and the error says so; no NaN is written.
BOOST_AUTO_TEST_CASE_TEMPLATE(fused_row_sphere_leaves_a_cancelled_row, B, backends) {
  B be;
  for (const auto& [rows, cols, z] : {std::tuple<polar::index, polar::index, polar::index>{6, 11, 2},
                                      {64, 1100, 37}}) {
    BOOST_TEST_CONTEXT(rows << "x" << cols) {
      polar::riemannian_momentum<polar::hypersphere> opt;
      opt.geometry.scope = polar::sphere_scope::rows;
      opt.check_point = false;
      opt.direction.momentum = 0.5;
      opt.direction.lr = 0.1;
      BOOST_TEST(opt.template takes_fast_path<B>());
      typename polar::hypersphere::template workspace<B, double> ws;
      dmat w = random(be, rows, cols, 96);
      opt.geometry.project(be, polar::make_view(w), ws);
      auto s = opt.init(be, polar::make_view(w));
      const dmat g = random(be, rows, cols, 97);
      w.row(z).setZero();
      for (polar::index j = 0; j < cols; ++j) s.dir.buf.data()[z * cols + j] = -2 * g(z, j);
      const dmat w0 = w;
      polar_test::check_throws<polar::numerical_error>([&] { opt.step(be, polar::make_view(w), cv(g), s); },
                                                       {"row " + std::to_string(z), "left as it was"});
      BOOST_TEST(w.allFinite());
      BOOST_TEST(w.row(z).norm() == 0.0);
      for (polar::index i = 0; i < rows; ++i)
        if (i != z) {
          BOOST_TEST((w.row(i) - w0.row(i)).norm() > 0.0);
          BOOST_TEST(std::abs(w.row(i).norm() - 1.0) <= 1e-12);
        }
      BOOST_TEST(s.steps == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(bad_input_changes_nothing, B, backends) {
  B be;
  polar::riemannian_adam<polar::stiefel<>> opt;
  opt.check_point = true;
  typename polar::stiefel<>::template workspace<B, double> ws;
  dmat x = random(be, 10, 3, 60);
  opt.geometry.project(be, polar::make_view(x), ws);
  auto s = opt.init(be, polar::make_view(x));
  const dmat g = random(be, 10, 3, 61), x0 = x;
  // Weight decay on a manifold.
  opt.direction.weight_decay = 0.1;
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(x), cv(g), s), polar::value_error);
  opt.direction.weight_decay = 0;
  // A non-finite gradient.
  dmat bad = g;
  bad(2, 1) = std::nan("");
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(x), cv(bad), s), polar::non_finite_error);
  // A point off the manifold, with the distance in the message.
  dmat off = x;
  off(0, 0) += 0.01;
  const dmat off0 = off;
  polar_test::check_throws<polar::value_error>([&] { opt.step(be, polar::make_view(off), cv(g), s); },
                                               {"polar::riemannian::step", "off the manifold"});
  BOOST_TEST((off - off0).norm() == 0.0);
  // A wrong shape.
  dmat wrong = random(be, 10, 4, 62);
  BOOST_CHECK_THROW(opt.step(be, polar::make_view(wrong), cv(dmat(random(be, 10, 4, 63))), s), polar::shape_error);
  BOOST_TEST((x - x0).norm() == 0.0);
  BOOST_TEST(s.steps == 0);
  BOOST_TEST(s.dir.steps == 0);
  // A zero row cannot be put on the row sphere: reported, not NaN.
  polar::hypersphere rows{polar::sphere_scope::rows};
  typename polar::hypersphere::template workspace<B, double> sws;
  dmat z = random(be, 4, 5, 64);
  z.row(2).setZero();
  const dmat z0 = z;
  BOOST_CHECK_THROW(rows.project(be, polar::make_view(z), sws), polar::numerical_error);
  BOOST_TEST((z - z0).norm() == 0.0);
  // A bad radius is caught on the fused row-sphere path too.
  polar::riemannian_sgd<polar::hypersphere> sphere_sgd;
  sphere_sgd.geometry.scope = polar::sphere_scope::rows;
  sphere_sgd.check_point = false;
  dmat on_sphere = random(be, 4, 5, 67);
  sphere_sgd.geometry.project(be, polar::make_view(on_sphere), sws);
  auto sphere_state = sphere_sgd.init(be, polar::make_view(on_sphere));
  const dmat sphere0 = on_sphere;
  sphere_sgd.geometry.radius = -1;
  BOOST_TEST(sphere_sgd.template takes_fast_path<B>());
  BOOST_CHECK_THROW(sphere_sgd.step(be, polar::make_view(on_sphere), cv(dmat(random(be, 4, 5, 68))), sphere_state),
                    polar::value_error);
  BOOST_TEST((on_sphere - sphere0).norm() == 0.0);
  // A state with a grouped second moment cannot take AdamW's own step.
  polar::adamw_direction adamw;
  dmat w = random(be, 4, 5, 65);
  auto grouped = adamw.init(be, polar::make_view(w), polar::moment_groups::rows);
  BOOST_CHECK_THROW(adamw.step(be, polar::make_view(w), cv(dmat(random(be, 4, 5, 66))), grouped), polar::value_error);
  // Manifold Muon's hyperparameters.
  polar::manifold_muon<> mm;
  mm.max_dual_steps = 0;
  BOOST_CHECK_THROW(mm.check(), polar::value_error);
  mm = {};
  mm.dual_lr = -1;
  BOOST_CHECK_THROW(mm.check(), polar::value_error);
}

// The dual ascent's answer: tangent, spectral norm 1, and at least as good
// as the projected-then-normalized polar factor, the obvious feasible guess.
BOOST_AUTO_TEST_CASE_TEMPLATE(manifold_muon_direction_is_optimal, B, backends) {
  B be;
  for (bool wide : {false, true})
    for (polar::index n : {polar::index(9), polar::index(4)}) {
      if (wide && n == 4) continue;  // square: no orientation
      BOOST_TEST_CONTEXT("wide " << wide << " n " << n) {
        const polar::index p = 4;
        polar::manifold_muon<> opt;
        opt.momentum = 0;
        opt.lr = 0.1;
        auto geo = opt.geometry();
        typename polar::stiefel<>::template workspace<B, double> ws;
        dmat x = wide ? random(be, p, n, 70) : random(be, n, p, 70);
        geo.project(be, polar::make_view(x), ws);
        const dmat g = wide ? random(be, p, n, 71) : random(be, n, p, 71);
        const dmat x0 = x;
        auto s = opt.init(be, polar::make_view(x));
        opt.step(be, polar::make_view(x), cv(g), s);
        BOOST_TEST(geo.distance(be, cv(x), ws) <= 1e-12);
        // The state holds -lr A in the tall orientation.
        const dmat X = wide ? dmat(x0.transpose()) : x0, G = wide ? dmat(g.transpose()) : g;
        const dmat A = -Eigen::Map<const dmat>(s.scratch->a.data(), X.rows(), X.cols()) / opt.lr;
        if (n == p) {
          BOOST_TEST(s.dual_iterations == 0);  // closed form
        } else {
          BOOST_TEST(s.dual_iterations >= 1);
          BOOST_TEST(s.dual_residual < opt.tolerance);
        }
        BOOST_TEST((X.transpose() * A + A.transpose() * X).norm() <= 1e-5);
        Eigen::JacobiSVD<dmat> sa(A);
        BOOST_TEST(sa.singularValues()(0) <= 1.0 + 1e-9);
        // The alternative: the polar factor of the tangent part, projected
        // again and scaled to spectral norm 1.
        const dmat PG = G - X * (0.5 * (X.transpose() * G + G.transpose() * X));
        Eigen::JacobiSVD<dmat> sp(PG, Eigen::ComputeThinU | Eigen::ComputeThinV);
        dmat alt = sp.matrixU() * sp.matrixV().transpose();
        alt = alt - X * (0.5 * (X.transpose() * alt + alt.transpose() * X));
        alt /= Eigen::JacobiSVD<dmat>(alt).singularValues()(0);
        const double got = (G.cwiseProduct(A)).sum(), other = (G.cwiseProduct(alt)).sum();
        BOOST_TEST(got >= other - 1e-6, "<G, A> " << got << " < " << other);
        if (n == p) {
          // Square: <G, A> is the nuclear norm of skew(X^T G).
          const dmat K = 0.5 * (X.transpose() * G - G.transpose() * X);
          BOOST_TEST(std::abs(got - Eigen::JacobiSVD<dmat>(K).singularValues().sum()) <= 1e-10);
        }
      }
    }
}

BOOST_AUTO_TEST_SUITE_END()
