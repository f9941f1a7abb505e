// Tests of polar/geometry: the hypersphere (flat, rows, columns; normalize
// and exponential retractions; Bernstein's descent step) and the Stiefel
// manifold (both metrics; QR, polar and low-rank Cayley retractions): points
// land on the set, projections are tangent and idempotent, retractions agree
// with x + t u to first order, Cayley agrees with its dense n x n form, and
// zero groups raise instead of turning into NaN. On the Eigen backend and
// Thrust's OMP system.
#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/stiefel.hpp"
#include "geometry/geometry_support.hpp"
#include "support.hpp"

namespace {

using geometry_test::backends;
using geometry_test::cv;
using geometry_test::dmat;
using geometry_test::random;

/// The groups of a matrix for a scope, as rows of a matrix.
dmat groups(const dmat& m, polar::sphere_scope s) {
  if (s == polar::sphere_scope::cols) return m.transpose();
  if (s == polar::sphere_scope::flat) return Eigen::Map<const dmat>(m.data(), 1, m.size());
  return m;
}

const polar::sphere_scope scopes[] = {polar::sphere_scope::flat, polar::sphere_scope::rows, polar::sphere_scope::cols};

}  // namespace

BOOST_AUTO_TEST_SUITE(geometry)

BOOST_AUTO_TEST_CASE_TEMPLATE(hypersphere_projections_and_retractions, B, backends) {
  B be;
  for (auto scope : scopes)
    for (auto retr : {polar::sphere_retraction::normalize, polar::sphere_retraction::exponential}) {
      BOOST_TEST_CONTEXT("scope " << int(scope) << " retraction " << int(retr)) {
        polar::hypersphere sph{scope, 2.5, retr};
        typename polar::hypersphere::template workspace<B, double> ws;
        dmat x = random(be, 6, 9, 1);
        sph.project(be, polar::make_view(x), ws);
        BOOST_TEST(sph.distance(be, cv(x), ws) <= 1e-12);
        const dmat gx = groups(x, scope);
        for (polar::index i = 0; i < gx.rows(); ++i) BOOST_TEST(std::abs(gx.row(i).norm() - 2.5) <= 1e-12);
        // Tangent, and idempotent.
        const dmat u = random(be, 6, 9, 2);
        dmat pu(6, 9), ppu(6, 9);
        sph.project_tangent(be, cv(x), cv(u), polar::make_view(pu), ws);
        sph.project_tangent(be, cv(x), cv(pu), polar::make_view(ppu), ws);
        BOOST_TEST((ppu - pu).norm() <= 1e-12 * pu.norm());
        const dmat gp = groups(pu, scope);
        for (polar::index i = 0; i < gx.rows(); ++i) BOOST_TEST(std::abs(gx.row(i).dot(gp.row(i))) <= 1e-12);
        // In place: out = u.
        dmat inplace = u;
        sph.project_tangent(be, cv(x), cv(inplace), polar::make_view(inplace), ws);
        BOOST_TEST((inplace - pu).norm() <= 1e-14 * pu.norm());
        // Retraction: on the sphere, and x + t u to first order.
        double prev = 0;
        for (double t : {1e-2, 1e-3}) {
          dmat y = x;
          const dmat step = t * pu;
          sph.retract(be, polar::make_view(y), cv(step), ws);
          BOOST_TEST(sph.distance(be, cv(y), ws) <= 1e-12);
          const double err = (y - x - step).norm();
          if (prev > 0) BOOST_TEST(prev / err >= 50.0);  // slope 2: error falls 100x for 10x smaller t
          prev = err;
        }
        // The exponential map moves each group by the angle |u| / r.
        if (retr == polar::sphere_retraction::exponential) {
          dmat y = x;
          const dmat step = 0.7 * pu;
          sph.retract(be, polar::make_view(y), cv(step), ws);
          const dmat gy = groups(y, scope), gs = groups(step, scope);
          for (polar::index i = 0; i < gx.rows(); ++i) {
            const double angle = std::acos(std::min(1.0, gx.row(i).dot(gy.row(i)) / (2.5 * 2.5)));
            BOOST_TEST(std::abs(angle - gs.row(i).norm() / 2.5) <= 1e-10);
          }
          // Below the small angle it normalizes: finite and on the sphere.
          dmat z = x;
          const dmat tiny = 1e-12 * pu;
          sph.retract(be, polar::make_view(z), cv(tiny), ws);
          BOOST_TEST(z.allFinite());
          BOOST_TEST((z - x).norm() <= 1e-11);
        }
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(hypersphere_descent_step_and_zero_groups, B, backends) {
  B be;
  polar::hypersphere rows{polar::sphere_scope::rows, 1.0};
  typename polar::hypersphere::template workspace<B, double> ws;
  dmat x = random(be, 5, 7, 3);
  rows.project(be, polar::make_view(x), ws);
  dmat g = random(be, 5, 7, 4);
  g.row(2) = 3.0 * x.row(2);  // radial: its tangent part is zero, the row stays
  const dmat x0 = x;
  rows.descent_step(be, polar::make_view(x), cv(g), 0.3, ws);
  BOOST_TEST(rows.distance(be, cv(x), ws) <= 1e-12);
  for (polar::index i = 0; i < 5; ++i) {
    const double angle = std::acos(std::min(1.0, x0.row(i).dot(x.row(i))));
    BOOST_TEST(std::abs(angle - (i == 2 ? 0.0 : std::atan(0.3))) <= 1e-7);
  }
  // A zero row cannot be normalized: numerical_error, nothing written.
  dmat z = x;
  z.row(1).setZero();
  const dmat z0 = z;
  polar_test::check_throws<polar::numerical_error>([&] { rows.project(be, polar::make_view(z), ws); },
                                                   {"polar::hypersphere::project", "row", "zero norm"});
  BOOST_TEST((z - z0).norm() == 0.0);
  dmat back = -x;
  dmat y = x;
  polar_test::check_throws<polar::numerical_error>([&] { rows.retract(be, polar::make_view(y), cv(back), ws); },
                                                   {"polar::hypersphere::retract", "zero norm"});
  BOOST_TEST((y - x).norm() == 0.0);
  polar::hypersphere bad{polar::sphere_scope::flat, -1.0};
  polar_test::check_throws<polar::value_error>([&] { bad.project(be, polar::make_view(y), ws); },
                                               {"radius must be finite and > 0, got -1"});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(stiefel_projections_and_retractions, B, backends) {
  B be;
  for (bool wide : {false, true})
    for (auto metric : {polar::stiefel_metric::euclidean, polar::stiefel_metric::canonical})
      for (auto retr : {polar::stiefel_retraction::qr, polar::stiefel_retraction::polar, polar::stiefel_retraction::cayley}) {
        BOOST_TEST_CONTEXT("wide " << wide << " metric " << int(metric) << " retraction " << int(retr)) {
          polar::stiefel<> st{metric, retr};
          typename polar::stiefel<>::template workspace<B, double> ws;
          const polar::index n = 20, p = 6;
          dmat x = wide ? random(be, p, n, 5) : random(be, n, p, 5);
          st.project(be, polar::make_view(x), ws);
          BOOST_TEST(st.distance(be, cv(x), ws) <= 1e-12);
          const dmat X = wide ? dmat(x.transpose()) : x;
          const dmat u = wide ? random(be, p, n, 6) : random(be, n, p, 6);
          dmat pu(u.rows(), u.cols()), ppu(u.rows(), u.cols());
          st.project_tangent(be, cv(x), cv(u), polar::make_view(pu), ws);
          st.project_tangent(be, cv(x), cv(pu), polar::make_view(ppu), ws);
          const dmat PU = wide ? dmat(pu.transpose()) : pu;
          // Tangent: X^T V is skew.
          BOOST_TEST((X.transpose() * PU + PU.transpose() * X).norm() <= 1e-12 * PU.norm());
          if (metric == polar::stiefel_metric::euclidean) BOOST_TEST((ppu - pu).norm() <= 1e-12 * pu.norm());
          for (double t : {1e-3}) {
            dmat y = x;
            const dmat step = t * pu;
            st.retract(be, polar::make_view(y), cv(step), ws);
            BOOST_TEST(st.distance(be, cv(y), ws) <= 1e-12);
            BOOST_TEST((y - x - step).norm() <= 10 * t * t * pu.squaredNorm() + 1e-13);
          }
          if (retr == polar::stiefel_retraction::cayley && !wide) {
            // The dense form (I - A/2)^-1 (I + A/2) X.
            const dmat step = 0.3 * PU;
            const dmat P = dmat::Identity(n, n) - 0.5 * X * X.transpose();
            const dmat A = P * step * X.transpose() - X * step.transpose() * P.transpose();
            const dmat I = dmat::Identity(n, n);
            const dmat want = (I - 0.5 * A).lu().solve((I + 0.5 * A) * X);
            dmat y = x;
            st.retract(be, polar::make_view(y), cv(step), ws);
            BOOST_TEST((y - want).norm() <= 1e-12);
          }
          if (retr == polar::stiefel_retraction::qr && !wide) {
            const dmat step = 0.3 * PU;
            Eigen::HouseholderQR<dmat> qr(X + step);
            dmat q = qr.householderQ() * dmat::Identity(n, p);
            const dmat r = qr.matrixQR().topRows(p).triangularView<Eigen::Upper>();
            for (polar::index j = 0; j < p; ++j)
              if (r(j, j) < 0) q.col(j) *= -1;
            dmat y = x;
            st.retract(be, polar::make_view(y), cv(step), ws);
            BOOST_TEST((y - q).norm() <= 1e-12);
          }
        }
      }
}

BOOST_AUTO_TEST_SUITE_END()
