// polar/geometry/euclidean.hpp: the Euclidean geometry, where every matrix
// is a point and every geometric operation is the identity (or plain
// addition). riemannian<Direction, euclidean> compiles to the direction's own
// step, so the unconstrained optimizer pays nothing for the composition.
#pragma once

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/geometry/detail/common.hpp"

namespace polar {

/// The unconstrained geometry: the tangent space is everything.
struct euclidean {
  template <class Backend, class T>
  struct workspace {};

  /// Adam keeps one second moment per element.
  moment_groups natural_groups() const noexcept { return moment_groups::element; }

  /// out = u.
  template <class Backend, class T>
  void project_tangent(Backend& be, in_matrix<T> x, in_matrix<T> u, matrix_view<T> out, workspace<Backend, T>&) const {
    detail::check_point_and_tangent("polar::euclidean::project_tangent", x, u, out);
    if (out.data() != u.data()) be.copy(u, out);
  }
  /// out = u.
  template <class Backend, class T>
  void tangent_part(Backend& be, in_matrix<T> x, in_matrix<T> u, matrix_view<T> out, workspace<Backend, T>& ws) const {
    project_tangent(be, x, u, out, ws);
  }
  /// Leaves v as it is.
  template <class Backend, class T>
  void transport(Backend&, in_matrix<T>, matrix_view<T>, workspace<Backend, T>&) const {}
  /// x <- x + u.
  template <class Backend, class T>
  void retract(Backend& be, matrix_view<T> x, in_matrix<T> u, workspace<Backend, T>&) const {
    constexpr const char* op = "polar::euclidean::retract";
    detail::check_point_and_tangent(op, as_const(x), u, x);
    check_no_alias(op, "X", x, "U", u);
    be.axpby(T(1), u, T(1), x);
  }
  /// Leaves x as it is.
  template <class Backend, class T>
  void project(Backend&, matrix_view<T>, workspace<Backend, T>&) const {}
  /// Always 0.
  template <class Backend, class T>
  double distance(Backend&, in_matrix<T>, workspace<Backend, T>&) const {
    return 0.0;
  }
  /// What distance() measures, for messages.
  static constexpr const char* distance_formula() noexcept { return "0"; }
  /// The unit of distance() (the tolerance of check_on_manifold is scaled by it).
  double distance_scale() const noexcept { return 1.0; }
};

}  // namespace polar
