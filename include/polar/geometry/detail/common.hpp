// polar/geometry/detail/common.hpp: the argument checks every geometry's
// operations share.
#pragma once

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
}  // namespace polar
