// polar/direction/detail/common.hpp: what the directions share: the
// hyperparameter checks, the momentum arithmetic, and the per-tensor step
// checks that run before anything is written.
#pragma once

#include <cmath>
#include <type_traits>

#include "polar/core/detail/gradient_check.hpp"
#include "polar/core/check.hpp"
#include "polar/core/tensor.hpp"

namespace polar {

/// How the momentum buffer accumulates gradients.
enum class momentum_kind : unsigned char {
  ema,         ///< buf <- mu buf + (1 - mu) g
  heavy_ball,  ///< buf <- mu buf + g
};

/// Which entries of a matrix share one second moment (Adam's v). Euclidean
/// steps use one per element; a Riemannian step uses the manifold's natural
/// groups (geometry's `moment_groups()`), so that rescaling keeps the update
/// tangent: one per matrix on the Stiefel manifold and the flat sphere, one
/// per row (column) on the row (column) sphere.
enum class moment_groups : unsigned char {
  element,  ///< every entry its own moment (plain Adam)
  matrix,   ///< one moment for the whole matrix
  rows,     ///< one per row
  cols,     ///< one per column
};

namespace detail {

inline void check_lr(const char* op, double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) raise<value_error>(op, "lr must be finite and >= 0, got ", lr);
}
inline void check_unit_interval(const char* op, const char* name, double v) {
  if (!(v >= 0 && v < 1)) raise<value_error>(op, name, " must be in [0, 1), got ", v);
}
inline void check_weight_decay(const char* op, double wd) {
  if (!(wd >= 0) || !std::isfinite(wd)) raise<value_error>(op, "weight_decay must be finite and >= 0, got ", wd);
}
inline void check_positive(const char* op, const char* name, double v) {
  if (!(v > 0) || !std::isfinite(v)) raise<value_error>(op, name, " must be finite and > 0, got ", v);
}

/// Nesterov's look-ahead: lerp(g, buf, mu) for the EMA buffer, g + mu buf
/// for the heavy-ball one.
template <class T>
struct nesterov_fn {
  T mu;
  bool heavy_ball;
  template <class G, class B>
  POLAR_HOST_DEVICE T operator()(G g, B b) const {
    return heavy_ball ? T(T(g) + mu * T(b)) : T((T(1) - mu) * T(g) + mu * T(b));
  }
};

/// optax's bias-corrected Nesterov input: c g + a buf.
template <class T>
struct biased_nesterov_fn {
  T a, c;
  template <class G, class B>
  POLAR_HOST_DEVICE T operator()(G g, B b) const { return T(c * T(g) + a * T(b)); }
};

/// Converts between scalar types (the iteration precision of Muon).
template <class T>
struct cast_fn {
  template <class U>
  POLAR_HOST_DEVICE T operator()(U x) const { return T(x); }
};

/// w * keep - step * u, with u of another scalar type.
template <class T>
struct decay_and_step {
  T keep, step;
  template <class W, class U>
  POLAR_HOST_DEVICE T operator()(W w, U u) const { return T(keep * T(w) - step * T(u)); }
};

/// The guarded forms of Muon's writes in a deferred_checks scope
/// (for_each_element): b <- c g + mu b, and w <- keep w - step u.
template <class T>
struct buffer_step_fn {
  T c, mu;
  POLAR_HOST_DEVICE void operator()(T& b, const T& g) const { b = T(c * g + mu * b); }
};
template <class T>
struct decay_and_step_in_place {
  T keep, step;
  template <class U>
  POLAR_HOST_DEVICE void operator()(T& w, const U& u) const { w = T(keep * w - step * T(u)); }
};

/// s * u, with u of another scalar type.
template <class T>
struct scale_cast_fn {
  T s;
  template <class U>
  POLAR_HOST_DEVICE T operator()(U u) const { return T(s * T(u)); }
};

/// The checks a direction's update() makes on G and the increment D.
template <class Backend, class T>
void check_update_args(Backend& be, const char* op, const matrix_view<const T>& g, const matrix_view<T>& d,
                       index rows, index cols) {
  check_input(op, "G", g);
  check_output(op, "D", d);
  check_same_shape(op, "D", d, "G", g);
  check_no_alias(op, "D", d, "G", g);
  if (g.rows() != rows || g.cols() != cols)
    raise_state_mismatch(op, "G", concat(g.rows(), "x", g.cols()), 1, rows, cols);
  if (nonfinite_gradient(be, g, op)) raise<non_finite_error>(op, "G (", g.rows(), "x", g.cols(), ") holds NaN or infinity");
}

/// The checks every direction's step makes on W and G before writing; the
/// pass over G for NaN and infinity is left out where the caller makes it
/// itself (check_finite false: the fused row-sphere step), and queued in a
/// deferred_checks scope where the step's writing kernels are guarded
/// (deferrable; see nonfinite_gradient).
template <class Backend, class W, class G>
void check_step_args(Backend& be, const char* op, const matrix_view<W>& w, const matrix_view<G>& g,
                     index rows, index cols, bool check_finite = true, bool deferrable = false) {
  check_output(op, "W", w);
  check_input(op, "G", g);
  check_same_shape(op, "W", w, "G", g);
  check_no_alias(op, "W", w, "G", g);
  if (w.rows() != rows || w.cols() != cols)
    raise_state_mismatch(op, "W", concat(w.rows(), "x", w.cols()), 1, rows, cols);
  if (check_finite && nonfinite_gradient(be, g, op, deferrable))
    raise<non_finite_error>(op, "G (", g.rows(), "x", g.cols(), ") holds NaN or infinity");
}

/// Whether direction D has the init(be, W, moment_groups) form that a
/// geometry (or a guard inside one) asks for.
template <class D, class B, class T, class = void>
struct takes_moment_groups : std::false_type {};
template <class D, class B, class T>
struct takes_moment_groups<D, B, T,
                           std::void_t<decltype(std::declval<const D&>().init(
                               std::declval<B&>(), std::declval<matrix_view<T>>(), moment_groups::element))>>
    : std::true_type {};

/// A zero-filled rows x cols buffer in the backend's memory (a fresh
/// momentum or moment).
template <class T, class Backend>
typename Backend::template buffer<T> zero_buffer(Backend& be, index rows, index cols) {
  auto b = be.template allocate<T>(rows * cols);
  be.fill(row_major_view(b.data(), rows, cols, -1, Backend::space), T(0));
  return b;
}

/// A state buffer seen as the rows x cols row-major matrix it holds.
template <class Backend, class Buffer>
auto state_view(Buffer& b, index rows, index cols) {
  return row_major_view(b.data(), rows, cols, -1, Backend::space);
}

/// W and G of the same shape, for the tensor forms of the directions.
template <class W, class G>
void check_same_tensor_shape(const char* op, const tensor_view<W>& w, const tensor_view<G>& g) {
  if (!same_shape(w, g))
    raise<shape_error>(op, "W is ", w.shape_string(), " but G is ", g.shape_string(),
                       "; they must have the same shape");
}

}  // namespace detail
}  // namespace polar
