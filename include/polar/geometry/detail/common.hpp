// polar/geometry/detail/common.hpp: the argument checks every geometry's
// operations share.
#pragma once

#include <type_traits>

#include "polar/core/check.hpp"

namespace polar {
namespace detail {

/// A point X, a matrix U at it (a step or a vector to project) and an output
/// of X's shape, checked before anything is written.
template <class T>
void check_point_and_tangent(const char* op, const matrix_view<const T>& x, const matrix_view<const T>& u,
                             const matrix_view<T>& out) {
  check_input(op, "X", x);
  check_input(op, "U", u);
  check_output(op, "out", out);
  check_same_shape(op, "U", u, "X", x);
  check_same_shape(op, "out", out, "X", x);
}

}  // namespace detail

/// The default tolerance of check_on_manifold for scalars T: sqrt(epsilon),
/// about 3.5e-4 in float and 1.5e-8 in double (in the geometry's unit).
template <class T>
constexpr double default_manifold_tolerance() noexcept {
  return std::is_same_v<T, float> ? 3.4526698e-4 : 1.4901161e-8;
}

/// Throws value_error, with the measured distance in the message, unless x
/// lies on the geometry's set within `tolerance` (times the geometry's unit,
/// e.g. the sphere's radius); a negative tolerance picks the default.
template <class Geometry, class Backend, class U, class Workspace>
void check_on_manifold(Backend& be, const Geometry& geometry, matrix_view<U> x, Workspace& ws,
                       double tolerance = -1, const char* op = "polar::check_on_manifold") {
  using T = std::remove_const_t<U>;
  if (tolerance < 0) tolerance = default_manifold_tolerance<T>();
  const double d = geometry.distance(be, matrix_view<const T>(x), ws), limit = tolerance * geometry.distance_scale();
  if (!(d <= limit))
    detail::raise<value_error>(op, "the ", x.rows(), "x", x.cols(), " point is off the manifold: ",
                               Geometry::distance_formula(), " = ", d, " > tolerance ", limit,
                               "; map it onto the set first (geometry.project)");
}

}  // namespace polar
