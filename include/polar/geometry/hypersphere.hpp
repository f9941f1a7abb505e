// polar/geometry/hypersphere.hpp: matrices on spheres: the whole matrix on a
// sphere of Frobenius radius r, or each row, or each column on its own
// sphere of radius r (the oblique manifold).
//
// For one group x (the matrix, a row or a column) of norm r:
//
//   tangent projection   u - x <x, u> / r^2
//   retraction           r (x + u) / |x + u|                     (normalize)
//                        x cos t + r sin t u / |u|, t = |u| / r  (exponential)
//   transport            the tangent projection at the new point
//   descent step         a = P g / |P g|,  x <- (x - eta r a) / sqrt(1 + eta^2)
//                        (Bernstein's hyperspherical descent)
//
// The exponential map switches to normalization below a small angle (1e-4 in
// float, 1e-7 in double), where cos and sin lose nothing the normalization
// keeps. A group of zero norm where a norm is divided by raises
// numerical_error and leaves the matrix unchanged; it never becomes NaN.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

#include "polar/core/scratch.hpp"
#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/functors.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/geometry/detail/common.hpp"

namespace polar {

/// Which groups of a matrix lie on a sphere.
enum class sphere_scope : unsigned char {
  flat,  ///< the whole matrix: |X|_F = r
  rows,  ///< every row: |X(i, :)| = r
  cols,  ///< every column: |X(:, j)| = r
};

/// How a hypersphere maps a tangent step back onto the sphere.
enum class sphere_retraction : unsigned char {
  normalize,    ///< r (x + u) / |x + u|
  exponential,  ///< the geodesic: x cos t + r sin t u / |u|
};

namespace detail {
/// r / n; infinity for a zero norm (caught by the finiteness check).
template <class T>
struct radius_over {
  T r;
  POLAR_HOST_DEVICE T operator()(T n) const { return n > T(0) ? T(r / n) : std::numeric_limits<T>::infinity(); }
};
/// d / r^2.
template <class T>
struct over_r2 {
  T inv_r2;
  POLAR_HOST_DEVICE T operator()(T d) const { return T(d * inv_r2); }
};
/// cos(|u| / r), or 1 below the small angle.
template <class T>
struct exp_cos {
  T inv_r, small;
  POLAR_HOST_DEVICE T operator()(T q) const {
    const T t = q * inv_r;
    using std::cos;
    return t < small ? T(1) : T(cos(t));
  }
};
/// r sin(|u| / r) / |u|, or 1 below the small angle.
template <class T>
struct exp_sin {
  T r, inv_r, small;
  POLAR_HOST_DEVICE T operator()(T q) const {
    const T t = q * inv_r;
    using std::sin;
    return t < small ? T(1) : T(r * sin(t) / q);
  }
};
/// -step / n for a non-zero n, else 0 (a group whose tangent gradient is zero
/// does not move).
template <class T>
struct descent_coefficient {
  T step;
  POLAR_HOST_DEVICE T operator()(T n) const { return n > T(0) ? T(-step / n) : T(0); }
};
}  // namespace detail

/// Buffers of a hypersphere's operations.
template <class Backend, class T>
struct sphere_workspace {
  typename Backend::template buffer<T> s;  ///< per-group scratch
  typename Backend::template buffer<T> t;  ///< per-group scratch
  typename Backend::template buffer<T> v;  ///< per-group scratch
  typename Backend::template buffer<T> w;  ///< per-group scratch
  /// Sizes the buffers for a rows x cols point (no allocation when they fit).
  void reserve(Backend& be, index rows, index cols) {
    if (s.size() < rows * cols) {
      s = be.template allocate<T>(rows * cols);
      t = be.template allocate<T>(rows * cols);
    }
    const index lines = rows > cols ? rows : cols;
    if (v.size() < lines) {
      v = be.template allocate<T>(lines);
      w = be.template allocate<T>(lines);
    }
  }
  /// Bytes held.
  std::size_t bytes() const { return detail::buffer_bytes(s, t, v, w); }
};

/// The hypersphere geometry: a plain aggregate of its settings.
struct hypersphere {
  /// The buffers the operations reuse.
  template <class Backend, class T>
  using workspace = sphere_workspace<Backend, T>;

  sphere_scope scope = sphere_scope::flat;                  ///< which groups lie on a sphere
  double radius = 1.0;                                       ///< each group's norm, > 0
  sphere_retraction retraction = sphere_retraction::normalize;  ///< how steps return to the sphere

  /// The groups Adam shares a second moment over: the matrix, each row or
  /// each column, the same groups that lie on a sphere.
  moment_groups natural_groups() const noexcept {
    return scope == sphere_scope::flat ? moment_groups::matrix
           : scope == sphere_scope::rows ? moment_groups::rows
                                         : moment_groups::cols;
  }
  /// What distance() measures, for messages.
  static constexpr const char* distance_formula() noexcept { return "max | |group| - r |"; }
  /// The unit of distance(): the radius.
  double distance_scale() const noexcept { return radius; }

  /// The angle below which the exponential map normalizes instead.
  template <class T>
  static constexpr double small_angle() noexcept {
    return std::is_same_v<T, float> ? 1e-4 : 1e-7;
  }

  /// out = the projection of u onto the tangent space at x; out may be u.
  template <class Backend, class T>
  void project_tangent(Backend& be, in_matrix<T> x, in_matrix<T> u, matrix_view<T> out,
                       workspace<Backend, T>& ws) const {
    constexpr const char* op = "polar::hypersphere::project_tangent";
    check_args(op, x, u, out);
    if (scope == sphere_scope::flat) {
      const T d = T(double(be.dot(x, u)) / (radius * radius));
      if (out.data() != u.data()) be.copy(u, out);
      be.axpby(T(-d), x, T(1), out);
      return;
    }
    const bool cols = scope == sphere_scope::cols;
    project_lines(be, cols ? x.transpose() : x, cols ? u.transpose() : u, cols ? out.transpose() : out, ws);
  }

  /// The orthogonal tangent projection: project_tangent itself.
  template <class Backend, class T>
  void tangent_part(Backend& be, in_matrix<T> x, in_matrix<T> u, matrix_view<T> out, workspace<Backend, T>& ws) const {
    project_tangent(be, x, u, out, ws);
  }

  /// v <- the transport of v to the tangent space at x (by projection).
  template <class Backend, class T>
  void transport(Backend& be, in_matrix<T> x, matrix_view<T> v, workspace<Backend, T>& ws) const {
    project_tangent(be, x, as_const(v), v, ws);
  }

  /// x <- R_x(u), the retraction of the tangent step u.
  /// @throws numerical_error when a group of x + u is zero (normalize);
  ///         x is unchanged then.
  template <class Backend, class T>
  void retract(Backend& be, matrix_view<T> x, in_matrix<T> u, workspace<Backend, T>& ws) const {
    constexpr const char* op = "polar::hypersphere::retract";
    check_args(op, as_const(x), u, x);
    check_no_alias(op, "X", x, "U", u);
    const bool cols = scope == sphere_scope::cols;
    const auto xv = cols ? x.transpose() : x;
    const auto uv = cols ? u.transpose() : u;
    ws.reserve(be, xv.rows(), xv.cols());
    const auto S = scratch(ws.s, xv), Tm = scratch(ws.t, xv);
    if (retraction == sphere_retraction::exponential) {
      exponential_into(be, as_const(xv), uv, S, Tm, ws);
    } else {
      be.map(detail::plus_fn<T>{}, S, as_const(xv), uv);
    }
    normalize_into(be, op, S, ws);
    be.copy(as_const(S), xv);
  }

  /// Bernstein's hyperspherical descent: a = P g / |P g| for each group (P
  /// the tangent projection at x), then x <- (x - eta r a) / sqrt(1 + eta^2),
  /// which is the normalization of x - eta r a. A group whose tangent
  /// gradient is zero stays where it is.
  template <class Backend, class T>
  void descent_step(Backend& be, matrix_view<T> x, in_matrix<T> g, double eta, workspace<Backend, T>& ws) const {
    constexpr const char* op = "polar::hypersphere::descent_step";
    check_args(op, as_const(x), g, x);
    check_no_alias(op, "X", x, "G", g);
    if (!(eta >= 0) || !std::isfinite(eta)) detail::raise<value_error>(op, "eta must be finite and >= 0, got ", eta);
    if (!be.all_finite(g)) detail::raise<non_finite_error>(op, "G (", g.rows(), "x", g.cols(), ") holds NaN or infinity");
    const bool cols = scope == sphere_scope::cols;
    const auto xv = cols ? x.transpose() : x;
    const auto gv = cols ? g.transpose() : g;
    ws.reserve(be, xv.rows(), xv.cols());
    const auto S = scratch(ws.s, xv), Tm = scratch(ws.t, xv);
    const T step = T(eta * radius);
    if (scope == sphere_scope::flat) {
      project_tangent(be, as_const(x), g, Tm, ws);  // flat: shapes as given
      const T n = be.norm(as_const(Tm));
      if (!(n > T(0))) return;
      be.copy(as_const(x), S);
      be.axpby(T(-step / n), as_const(Tm), T(1), S);
      normalize_into(be, op, S, ws);
      be.copy(as_const(S), x);
      return;
    }
    project_lines(be, as_const(xv), gv, Tm, ws);
    const auto nv = vector_view<T>(ws.w.data(), xv.rows(), 1, Backend::space);
    const auto nm = row_major_view(ws.w.data(), xv.rows(), 1, -1, Backend::space);
    be.row_norms(as_const(Tm), nv);
    be.map(detail::descent_coefficient<T>{step}, nm, as_const(nm));
    be.scale_rows(as_const(nv), Tm);
    be.map(detail::plus_fn<T>{}, S, as_const(xv), as_const(Tm));
    normalize_into(be, op, S, ws);
    be.copy(as_const(S), xv);
  }

  /// x <- the nearest point of the set: each group scaled to norm r.
  /// @throws numerical_error for a zero group; x is unchanged then.
  template <class Backend, class T>
  void project(Backend& be, matrix_view<T> x, workspace<Backend, T>& ws) const {
    constexpr const char* op = "polar::hypersphere::project";
    check_output(op, "X", x);
    check_radius(op);
    const bool cols = scope == sphere_scope::cols;
    const auto xv = cols ? x.transpose() : x;
    ws.reserve(be, xv.rows(), xv.cols());
    const auto S = scratch(ws.s, xv);
    be.copy(as_const(xv), S);
    normalize_into(be, op, S, ws);
    be.copy(as_const(S), xv);
  }

  /// The largest | |group| - r | of x: zero on the set.
  template <class Backend, class T>
  double distance(Backend& be, in_matrix<T> x, workspace<Backend, T>& ws) const {
    check_input("polar::hypersphere::distance", "X", x);
    if (scope == sphere_scope::flat) return std::abs(double(be.norm(x)) - radius);
    const bool cols = scope == sphere_scope::cols;
    const auto xv = cols ? x.transpose() : x;
    ws.reserve(be, xv.rows(), xv.cols());
    const auto nv = vector_view<T>(ws.v.data(), xv.rows(), 1, Backend::space);
    be.row_norms(xv, nv);
    const auto nm = row_major_view(ws.v.data(), xv.rows(), 1, -1, Backend::space);
    be.map(detail::shift_fn<T>{T(-radius)}, nm, as_const(nm));
    return double(be.max_abs(as_const(nm)));
  }

  /// Throws value_error for settings no step can use (the radius).
  void check_settings(const char* op) const { check_radius(op); }

  /// Throws value_error unless the radius is finite and positive.
  void check_radius(const char* op) const {
    if (!(radius > 0) || !std::isfinite(radius))
      detail::raise<value_error>(op, "radius must be finite and > 0, got ", radius);
  }

 private:
  template <class T>
  void check_args(const char* op, const matrix_view<const T>& x, const matrix_view<const T>& u,
                  const matrix_view<T>& out) const {
    detail::check_point_and_tangent(op, x, u, out);
    check_radius(op);
  }

  template <class Buffer, class View>
  static auto scratch(Buffer& b, const View& like) {
    return row_major_view(b.data(), like.rows(), like.cols(), -1, like.space());
  }

  // out = u - diag(<x_i, u_i> / r^2) x, row by row.
  template <class Backend, class T>
  void project_lines(Backend& be, matrix_view<const T> x, matrix_view<const T> u, matrix_view<T> out,
                     workspace<Backend, T>& ws) const {
    ws.reserve(be, x.rows(), x.cols());
    const auto S = scratch(ws.s, x);
    const auto d = vector_view<T>(ws.v.data(), x.rows(), 1, Backend::space);
    const auto dm = row_major_view(ws.v.data(), x.rows(), 1, -1, Backend::space);
    be.map(detail::times_fn<T>{}, S, x, u);
    be.row_sums(as_const(S), d);
    be.map(detail::over_r2<T>{T(1.0 / (radius * radius))}, dm, as_const(dm));
    be.copy(x, S);
    be.scale_rows(as_const(d), S);
    if (out.data() != u.data()) be.copy(u, out);
    be.axpby(T(-1), as_const(S), T(1), out);
  }

  // S = each group of S scaled to norm r; throws (before writing the
  // caller's matrix) when a group is zero.
  template <class Backend, class T>
  void normalize_into(Backend& be, const char* op, matrix_view<T> S, workspace<Backend, T>& ws) const {
    if (scope == sphere_scope::flat) {
      const T n = be.norm(as_const(S));
      if (!(n > T(0)) || !std::isfinite(double(n)))
        detail::raise<numerical_error>(op, "the ", S.rows(), "x", S.cols(), " matrix has norm ", double(n),
                                       " and cannot be scaled onto the sphere of radius ", radius);
      be.scale(T(radius / double(n)), S);
      return;
    }
    const auto nv = vector_view<T>(ws.v.data(), S.rows(), 1, Backend::space);
    const auto nm = row_major_view(ws.v.data(), S.rows(), 1, -1, Backend::space);
    be.row_norms(as_const(S), nv);
    be.map(detail::radius_over<T>{T(radius)}, nm, as_const(nm));
    if (!be.all_finite(as_const(nm)))
      detail::raise<numerical_error>(op, "a ", scope == sphere_scope::rows ? "row" : "column", " of the ",
                                     scope == sphere_scope::rows ? S.rows() : S.cols(), "x",
                                     scope == sphere_scope::rows ? S.cols() : S.rows(),
                                     " matrix has zero norm and cannot be scaled onto the sphere of radius ",
                                     radius);
    be.scale_rows(as_const(nv), S);
  }

  // S = cos(t) x + r sin(t) u / |u| group by group (T is scratch).
  template <class Backend, class T>
  void exponential_into(Backend& be, matrix_view<const T> x, matrix_view<const T> u, matrix_view<T> S,
                        matrix_view<T> Tm, workspace<Backend, T>& ws) const {
    const T inv_r = T(1.0 / radius), small = T(small_angle<T>());
    if (scope == sphere_scope::flat) {
      const T q = be.norm(u);
      const T c = detail::exp_cos<T>{inv_r, small}(q), s = detail::exp_sin<T>{T(radius), inv_r, small}(q);
      be.axpby(c, x, T(0), S);
      be.axpby(s, u, T(1), S);
      return;
    }
    const index n = x.rows();
    const auto cv = vector_view<T>(ws.v.data(), n, 1, Backend::space);
    const auto cm = row_major_view(ws.v.data(), n, 1, -1, Backend::space);
    const auto sv = vector_view<T>(ws.w.data(), n, 1, Backend::space);
    const auto sm = row_major_view(ws.w.data(), n, 1, -1, Backend::space);
    be.row_norms(u, cv);
    be.map(detail::exp_sin<T>{T(radius), inv_r, small}, sm, as_const(cm));
    be.map(detail::exp_cos<T>{inv_r, small}, cm, as_const(cm));
    be.copy(x, S);
    be.scale_rows(as_const(cv), S);
    be.copy(u, Tm);
    be.scale_rows(as_const(sv), Tm);
    be.axpby(T(1), as_const(Tm), T(1), S);
  }
};

}  // namespace polar
