// polar/geometry/stiefel.hpp: the Stiefel manifold of n x p matrices with
// orthonormal columns (X^T X = I, p <= n). A wide matrix is handled as its
// transpose (orthonormal rows).
//
//   tangent projection   Euclidean metric:  U - X sym(X^T U)
//                        canonical metric:  U - X U^T X
//   retractions          qr:     qf(X + U), signs of diag(R) made positive
//                        polar:  the polar factor of X + U (any orthogonalizer;
//                                the exact SVD factor by default)
//                        cayley: (I - A/2)^-1 (I + A/2) X with
//                                A = P U X^T - X U^T P^T, P = I - X X^T / 2,
//                                through the low-rank form A = [PU, X][X, -PU]^T:
//                                Y = X + [PU, X] (I - K/2)^-1 [X, -PU]^T X,
//                                K = [X, -PU]^T [PU, X], a 2p x 2p solve
//                        exponential: the geodesic of the Euclidean metric,
//                                [X U] expm([[X^T U, -U^T U], [I, X^T U]]) [expm(-X^T U); 0]
//                                (Edelman, Arias and Smith 1998)
//                        Cayley, exponential and (in float) polar end with one Newton step
//                        toward the polar factor, X (3I - X^T X) / 2, so that
//                        rounding does not accumulate over many steps
//   transport            projection: the orthogonal tangent projection at the
//                                new point (tangent_part, either metric)
//                        cayley: the Cayley transform of the last retraction
//                                applied to v, v + [PU, X] (I - K/2)^-1 [X, -PU]^T v,
//                                an isometry for the canonical metric
//
// Every operation costs O(n p^2); nothing n x n is formed.
#pragma once

#include <cmath>
#include <type_traits>

#include "polar/core/scratch.hpp"
#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/functors.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/geometry/detail/common.hpp"
#include "polar/geometry/detail/expm.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"

namespace polar {

/// The Riemannian metric a Stiefel tangent projection follows.
enum class stiefel_metric : unsigned char {
  euclidean,  ///< U - X sym(X^T U)
  canonical,  ///< U - X U^T X
};

/// How a Stiefel step returns to the manifold.
enum class stiefel_retraction : unsigned char {
  qr,      ///< the Q factor of X + U with a non-negative diagonal of R
  polar,   ///< the polar factor of X + U
  cayley,       ///< the Cayley transform, through a 2p x 2p solve
  exponential,  ///< the geodesic of the Euclidean metric (two small matrix exponentials)
};

/// How a Stiefel geometry moves a tangent vector (momentum) to the new point.
enum class stiefel_transport : unsigned char {
  projection,  ///< the tangent projection at the new point
  cayley,      ///< the Cayley transform of the last (Cayley) retraction; isometric
};

namespace detail {
template <class T>
struct half_sum_transpose {  // (a + b) / 2
  POLAR_HOST_DEVICE T operator()(T a, T b) const { return T(T(0.5) * (a + b)); }
};
}  // namespace detail

/// Buffers of the Stiefel operations for n x p points.
template <class Backend, class T>
struct stiefel_workspace {
  typename Backend::template buffer<T> s;    ///< singular values (polar retraction)
  typename Backend::template buffer<T> u1;   ///< left factor, n x p
  typename Backend::template buffer<T> v1;   ///< right factor, p x p
  typename Backend::template buffer<T> pp;   ///< p x p scratch
  typename Backend::template buffer<T> pp2;  ///< p x p scratch
  typename Backend::template buffer<T> f;    ///< n x 2p: the low-rank Cayley factors
  typename Backend::template buffer<T> k;    ///< 2p x 2p: the Cayley system
  typename Backend::template buffer<T> e;    ///< 2p x p: its right-hand side and solution
  typename Backend::template buffer<T> rhs;  ///< n x p scratch
  detail::expm_workspace<Backend, T> expm;  ///< the matrix exponential's (exponential retraction)
  /// The point the last Cayley retraction produced (the Cayley transport
  /// needs that retraction's factors, kept in u1, v1 and k).
  const T* cayley_point = nullptr;
  index cayley_n = 0;  ///< the shape of the point the last Cayley retraction produced: rows
  index cayley_p = 0;  ///< and columns
  /// Sizes the buffers for an n x p point (no allocation when they fit).
  void reserve(Backend& be, index n, index p) {
    if (s.size() < n * p) s = be.template allocate<T>(n * p);
    if (u1.size() < 2 * n * p) {
      u1 = be.template allocate<T>(2 * n * p);
      v1 = be.template allocate<T>(2 * n * p);
    }
    if (pp.size() < p * p) {
      pp = be.template allocate<T>(p * p);
      pp2 = be.template allocate<T>(p * p);
      f = be.template allocate<T>(p * p);
    }
    if (k.size() < 4 * p * p) {
      k = be.template allocate<T>(4 * p * p);
      e = be.template allocate<T>(4 * p * p);
      rhs = be.template allocate<T>(2 * p * p);
    }
  }
  /// Bytes held.
  std::size_t bytes() const { return detail::buffer_bytes(s, u1, v1, pp, pp2, f, k, e, rhs) + expm.bytes(); }
};

/// The Stiefel geometry. `Orthogonalizer` computes the polar retraction and
/// the projection onto the manifold (svd_polar: exact).
template <class Orthogonalizer = svd_polar>
struct stiefel {
  /// The buffers the operations reuse.
  template <class Backend, class T>
  struct workspace {
    stiefel_workspace<Backend, T> own;  ///< the retractions' and projections' buffers
    typename Orthogonalizer::template workspace<Backend, T> orth;  ///< the polar retraction's orthogonalizer
    /// Bytes held.
    std::size_t bytes() const { return own.bytes() + detail::workspace_bytes(orth); }
  };

  stiefel_metric metric = stiefel_metric::euclidean;       ///< the tangent projection's metric
  stiefel_retraction retraction = stiefel_retraction::qr;  ///< how steps return to the manifold
  stiefel_transport transport_by = stiefel_transport::projection;  ///< how tangent vectors move
  Orthogonalizer orthogonalizer{};                         ///< for the polar retraction and project()

  /// Adam shares one second moment over the whole matrix.
  moment_groups natural_groups() const noexcept { return moment_groups::matrix; }
  /// What distance() measures, for messages.
  static constexpr const char* distance_formula() noexcept { return "|X^T X - I|_F"; }
  /// The unit of distance().
  double distance_scale() const noexcept { return 1.0; }

  /// out = the projection of u onto the tangent space at x; out may be u.
  template <class Backend, class T>
  void project_tangent(Backend& be, in_matrix<T> x, in_matrix<T> u, matrix_view<T> out,
                       workspace<Backend, T>& ws) const {
    project_with(metric, "polar::stiefel::project_tangent", be, x, u, out, ws);
  }

  /// out = the orthogonal projection of u onto the tangent space at x,
  /// U - X sym(X^T U), whatever the metric; out may be u. Unlike the
  /// canonical metric's project_tangent (the Riemannian gradient, which
  /// doubles the X X^T U part of a tangent vector), it leaves tangent
  /// vectors as they are: the composition projects updates and transports
  /// momentum with it.
  template <class Backend, class T>
  void tangent_part(Backend& be, in_matrix<T> x, in_matrix<T> u, matrix_view<T> out, workspace<Backend, T>& ws) const {
    project_with(stiefel_metric::euclidean, "polar::stiefel::tangent_part", be, x, u, out, ws);
  }

  /// v <- the transport of v to the tangent space at x, the point the last
  /// retract() with this workspace produced (by projection, or by that
  /// retraction's Cayley transform).
  /// @throws value_error for the Cayley transport when the workspace holds
  ///         no Cayley retraction to x.
  template <class Backend, class T>
  void transport(Backend& be, in_matrix<T> x, matrix_view<T> v, workspace<Backend, T>& ws) const {
    if (transport_by == stiefel_transport::projection) {
      tangent_part(be, x, as_const(v), v, ws);
      return;
    }
    constexpr const char* op = "polar::stiefel::transport";
    detail::check_point_and_tangent(op, x, as_const(v), v);
    const bool wide = x.rows() < x.cols();
    const auto X = wide ? x.transpose() : x;
    const auto V = wide ? v.transpose() : v;
    const index n = X.rows(), p = X.cols();
    if (ws.own.cayley_point != X.data() || ws.own.cayley_n != n || ws.own.cayley_p != p)
      detail::raise<value_error>(op, "the Cayley transport to the ", x.rows(), "x", x.cols(),
                                 " point X needs the workspace of the Cayley retraction that produced X; "
                                 "use retraction = stiefel_retraction::cayley, or the projection transport");
    const auto sp = Backend::space;
    const auto U1 = row_major_view(ws.own.u1.data(), n, 2 * p, -1, sp);
    const auto V1 = row_major_view(ws.own.v1.data(), n, 2 * p, -1, sp);
    const auto K = row_major_view(ws.own.k.data(), 2 * p, 2 * p, -1, sp);
    const auto rhs = row_major_view(ws.own.rhs.data(), 2 * p, p, -1, sp);
    be.gemm(T(1), op::t, as_const(V1), op::n, as_const(V), T(0), rhs);
    be.solve(as_const(K), rhs);
    be.gemm(T(1), op::n, as_const(U1), op::n, as_const(rhs), T(1), V);
  }

  /// Throws value_error for settings no step can use: the Cayley transport
  /// needs the Cayley retraction (it reuses that retraction's system).
  void check_settings(const char* op) const {
    if (transport_by == stiefel_transport::cayley && retraction != stiefel_retraction::cayley)
      detail::raise<value_error>(op, "the Cayley transport needs retraction = stiefel_retraction::cayley; "
                                     "use it, or the projection transport");
  }

  /// x <- R_x(u), the retraction of the tangent step u.
  template <class Backend, class T>
  void retract(Backend& be, matrix_view<T> x, in_matrix<T> u, workspace<Backend, T>& ws) const {
    constexpr const char* op = "polar::stiefel::retract";
    check_args(op, as_const(x), u, x);
    check_no_alias(op, "X", x, "U", u);
    const bool wide = x.rows() < x.cols();
    const auto X = wide ? x.transpose() : x;
    const auto U = wide ? u.transpose() : u;
    const index n = X.rows(), p = X.cols();
    ws.own.reserve(be, n, p);
    const auto S = row_major_view(ws.own.s.data(), n, p, -1, Backend::space);
    ws.own.cayley_point = nullptr;
    if (retraction == stiefel_retraction::cayley) {
      cayley(be, X, U, ws);
      ws.own.cayley_point = X.data();
      ws.own.cayley_n = n;
      ws.own.cayley_p = p;
      return;
    }
    if (retraction == stiefel_retraction::exponential) {
      exponential(be, X, U, ws);
      return;
    }
    be.map(detail::plus_fn<T>{}, S, as_const(X), U);  // S = X + U
    if (retraction == stiefel_retraction::qr) {
      const auto R = row_major_view(ws.own.pp.data(), p, p, -1, Backend::space);
      be.qr(as_const(S), X, R);
    } else {
      orthogonalizer(be, as_const(S), X, ws.orth);
      // The polar factor of an SVD in float is orthonormal to a few hundred
      // epsilon (Eigen's BDCSVD: 5-25x LAPACK's), and steps add it up; one
      // Newton step squares that distance, as for Cayley and exp. In double
      // the factor is orthonormal to about 1e-15 already, and the step is
      // left out so that double results stay those of the SVD.
      if constexpr (!std::is_same_v<T, double>) {
        be.copy(as_const(X), S);
        polish(be, as_const(S), X, ws);
      }
    }
  }

  /// x <- the nearest point of the manifold (its polar factor).
  template <class Backend, class T>
  void project(Backend& be, matrix_view<T> x, workspace<Backend, T>& ws) const {
    constexpr const char* op = "polar::stiefel::project";
    check_output(op, "X", x);
    check_shape_ok(op, x.rows(), x.cols());
    const bool wide = x.rows() < x.cols();
    const auto X = wide ? x.transpose() : x;
    ws.own.reserve(be, X.rows(), X.cols());
    const auto S = row_major_view(ws.own.s.data(), X.rows(), X.cols(), -1, Backend::space);
    be.copy(as_const(X), S);
    orthogonalizer(be, as_const(S), X, ws.orth);
  }

  /// |X^T X - I|_F: zero on the manifold.
  template <class Backend, class T>
  double distance(Backend& be, in_matrix<T> x, workspace<Backend, T>& ws) const {
    check_input("polar::stiefel::distance", "X", x);
    const bool wide = x.rows() < x.cols();
    const auto X = wide ? x.transpose() : x;
    const index n = X.rows(), p = X.cols();
    ws.own.reserve(be, n, p);
    const auto M = row_major_view(ws.own.pp.data(), p, p, -1, Backend::space);
    be.gemm(T(1), op::t, X, op::n, X, T(0), M);
    detail::add_to_diagonal(be, T(-1), M);
    return double(be.norm(as_const(M)));
  }

 private:
  // out = U - X sym(X^T U) (euclidean) or U - X U^T X (canonical).
  template <class Backend, class T>
  void project_with(stiefel_metric m, const char* op, Backend& be, matrix_view<const T> x, matrix_view<const T> u,
                    matrix_view<T> out, workspace<Backend, T>& ws) const {
    check_args(op, x, u, out);
    const bool wide = x.rows() < x.cols();
    const auto X = wide ? x.transpose() : x;
    const auto U = wide ? u.transpose() : u;
    const auto O = wide ? out.transpose() : out;
    const index n = X.rows(), p = X.cols();
    ws.own.reserve(be, n, p);
    const auto M = row_major_view(ws.own.pp.data(), p, p, -1, Backend::space);
    const auto Sym = row_major_view(ws.own.pp2.data(), p, p, -1, Backend::space);
    if (m == stiefel_metric::euclidean) {
      be.gemm(T(1), op::t, X, op::n, U, T(0), M);  // X^T U
      be.map(detail::half_sum_transpose<T>{}, Sym, as_const(M), as_const(M.transpose()));
    } else {
      be.gemm(T(1), op::t, U, op::n, X, T(0), Sym);  // U^T X
    }
    if (O.data() != U.data()) be.copy(U, O);
    be.gemm(T(-1), op::n, X, op::n, as_const(Sym), T(1), O);
  }

  template <class T>
  static void check_args(const char* op, const matrix_view<const T>& x, const matrix_view<const T>& u,
                         const matrix_view<T>& out) {
    detail::check_point_and_tangent(op, x, u, out);
    check_shape_ok(op, x.rows(), x.cols());
  }
  static void check_shape_ok(const char* op, index rows, index cols) {
    if (rows < 1 || cols < 1)
      detail::raise<shape_error>(op, "a ", rows, "x", cols, " matrix has no Stiefel manifold");
  }

  // X <- [X U] E(:, 0:p) expm(-A), E = expm([[A, -U^T U], [I, A]]), A = X^T U.
  template <class Backend, class T>
  void exponential(Backend& be, matrix_view<T> X, matrix_view<const T> U, workspace<Backend, T>& ws) const {
    const index n = X.rows(), p = X.cols();
    const auto sp = Backend::space;
    const auto B = row_major_view(ws.own.k.data(), 2 * p, 2 * p, -1, sp);
    const auto E = row_major_view(ws.own.e.data(), 2 * p, 2 * p, -1, sp);
    const auto A = B.block(0, 0, p, p);
    be.gemm(T(1), op::t, as_const(X), op::n, U, T(0), A);
    be.gemm(T(-1), op::t, U, op::n, U, T(0), B.block(0, p, p, p));
    const auto I = B.block(p, 0, p, p);
    be.fill(I, T(0));
    detail::add_to_diagonal(be, T(1), I);
    be.copy(as_const(A), B.block(p, p, p, p));
    detail::expm(be, as_const(B), E, ws.own.expm);
    const auto minus_a = row_major_view(ws.own.pp.data(), p, p, -1, sp);
    const auto F = row_major_view(ws.own.f.data(), p, p, -1, sp);
    be.axpby(T(-1), as_const(A), T(0), minus_a);
    detail::expm(be, as_const(minus_a), F, ws.own.expm);
    const auto rhs = row_major_view(ws.own.rhs.data(), 2 * p, p, -1, sp);
    be.gemm(T(1), op::n, as_const(E.block(0, 0, 2 * p, p)), op::n, as_const(F), T(0), rhs);
    const auto S = row_major_view(ws.own.s.data(), n, p, -1, sp);
    be.gemm(T(1), op::n, as_const(X), op::n, as_const(rhs.block(0, 0, p, p)), T(0), S);
    be.gemm(T(1), op::n, U, op::n, as_const(rhs.block(p, 0, p, p)), T(1), S);
    polish(be, as_const(S), X, ws);
  }

  // X <- X + [PU, X] (I - K/2)^-1 [X, -PU]^T X, K = [X, -PU]^T [PU, X].
  template <class Backend, class T>
  void cayley(Backend& be, matrix_view<T> X, matrix_view<const T> U, workspace<Backend, T>& ws) const {
    const index n = X.rows(), p = X.cols();
    const auto sp = Backend::space;
    const auto U1 = row_major_view(ws.own.u1.data(), n, 2 * p, -1, sp);
    const auto V1 = row_major_view(ws.own.v1.data(), n, 2 * p, -1, sp);
    const auto PU = U1.block(0, 0, n, p);
    const auto M = row_major_view(ws.own.pp.data(), p, p, -1, sp);
    // PU = U - X (X^T U) / 2
    be.gemm(T(1), op::t, as_const(X), op::n, U, T(0), M);
    be.copy(U, PU);
    be.gemm(T(-0.5), op::n, as_const(X), op::n, as_const(M), T(1), PU);
    be.copy(as_const(X), U1.block(0, p, n, p));
    be.copy(as_const(X), V1.block(0, 0, n, p));
    be.axpby(T(-1), as_const(PU), T(0), V1.block(0, p, n, p));
    // K = V1^T U1; Mk = I - K / 2
    const auto K = row_major_view(ws.own.k.data(), 2 * p, 2 * p, -1, sp);
    be.gemm(T(-0.5), op::t, as_const(V1), op::n, as_const(U1), T(0), K);
    detail::add_to_diagonal(be, T(1), K);
    // rhs = Mk^-1 V1^T X; X += U1 rhs
    const auto rhs = row_major_view(ws.own.rhs.data(), 2 * p, p, -1, sp);
    be.gemm(T(1), op::t, as_const(V1), op::n, as_const(X), T(0), rhs);
    be.solve(as_const(K), rhs);
    const auto S = row_major_view(ws.own.s.data(), n, p, -1, sp);
    be.copy(as_const(X), S);
    be.gemm(T(1), op::n, as_const(U1), op::n, as_const(rhs), T(1), S);
    polish(be, as_const(S), X, ws);
  }

  // X = S (3I - S^T S) / 2: one Newton step toward the polar factor of S.
  // The Cayley and exponential maps land on the manifold only in exact
  // arithmetic; in float their rounding (a few epsilon per step) would add
  // up over thousands of steps. This step squares the distance instead, and
  // moves a point that is on the manifold to working precision by no more
  // than that precision.
  template <class Backend, class T>
  void polish(Backend& be, matrix_view<const T> S, matrix_view<T> X, workspace<Backend, T>& ws) const {
    const index p = S.cols();
    const auto C = row_major_view(ws.own.pp2.data(), p, p, -1, Backend::space);
    be.gemm(T(-0.5), op::t, S, op::n, S, T(0), C);
    detail::add_to_diagonal(be, T(1.5), C);
    be.gemm(T(1), op::n, S, op::n, as_const(C), T(0), X);
  }
};

}  // namespace polar
