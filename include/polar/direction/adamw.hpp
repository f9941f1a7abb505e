// polar/direction/adamw.hpp: Adam with decoupled weight decay (Loshchilov
// and Hutter), the direction for everything Muon does not take.
//
// For step t = 1, 2, ...:
//
//   m <- b1 m + (1 - b1) G
//   v <- b2 v + (1 - b2) G^2
//   W <- W (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//
// elementwise, so any tensor is fine. Defaults are PyTorch's AdamW: lr 1e-3,
// betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
#pragma once

#include <cmath>

#include "polar/backend/concept.hpp"
#include "polar/core/detail/debug_checks.hpp"
#include "polar/core/detail/functors.hpp"
#include "polar/direction/detail/common.hpp"

namespace polar {

namespace detail {
template <class T>
struct adam_second_moment {
  T beta2;
  POLAR_HOST_DEVICE T operator()(T v, T g) const { return T(beta2 * v + (T(1) - beta2) * g * g); }
};
template <class T>
struct adam_update {
  T keep, lr_over_bc1, inv_sqrt_bc2, eps;
  POLAR_HOST_DEVICE T operator()(T w, T m, T v) const {
    return T(keep * w - lr_over_bc1 * m / (std::sqrt(v) * inv_sqrt_bc2 + eps));
  }
};
/// The whole step of one element in one pass: both moments take g, then
/// the weight steps (the same arithmetic as the three operations
/// m = (1 - b1) g + b1 m, adam_second_moment and adam_update).
template <class T>
struct adamw_element_step {
  T one_minus_b1, b1, b2;
  adam_update<T> update;
  POLAR_HOST_DEVICE void operator()(T& w, T& m, T& v, const T& g) const {
    const T mn = T(one_minus_b1 * g + b1 * m);
    const T vn = T(b2 * v + (T(1) - b2) * g * g);
    m = mn;
    v = vn;
    w = update(w, mn, vn);
  }
};
/// -lr m^ / (sqrt(v^) + eps) with the bias corrections folded in.
template <class T>
struct adam_increment {
  T lr_over_bc1, inv_sqrt_bc2, eps;
  POLAR_HOST_DEVICE T operator()(T m, T v) const { return T(-lr_over_bc1 * m / (std::sqrt(v) * inv_sqrt_bc2 + eps)); }
};
/// b2 v + (1 - b2) s / n: a group's moment from its sum of squares s.
template <class T>
struct adam_group_moment {
  T beta2, inv_n;
  POLAR_HOST_DEVICE T operator()(T v, T s) const { return T(beta2 * v + (T(1) - beta2) * s * inv_n); }
};
/// The factor -lr / bc1 / (sqrt(v / bc2) + eps) of a group.
template <class T>
struct adam_group_factor {
  T lr_over_bc1, inv_sqrt_bc2, eps;
  POLAR_HOST_DEVICE T operator()(T v) const { return T(-lr_over_bc1 / (std::sqrt(v) * inv_sqrt_bc2 + eps)); }
};
}  // namespace detail

/// AdamW's hyperparameters and step.
///
/// The second moment is per element for step(). The update() form that
/// geometries compose with can also share it across the manifold's natural
/// groups (moment_groups), each group's v the running mean of its squared
/// entries, so that an update stays a rescaled tangent vector.
struct adamw_direction {
  double lr = 1e-3;            ///< learning rate
  double beta1 = 0.9;          ///< first-moment decay, in [0, 1)
  double beta2 = 0.999;        ///< second-moment decay, in [0, 1)
  double eps = 1e-8;           ///< added to the root of the second moment, > 0
  double weight_decay = 0.01;  ///< decoupled: W <- W (1 - lr wd)

  /// First moment (rows x cols row-major), second moment (rows x cols for
  /// element groups, one per row or column, or the host scalar v_matrix),
  /// and the step count that the bias corrections use.
  template <class Backend, class T>
  struct state {
    typename Backend::template buffer<T> m;     ///< first moment, rows x cols
    typename Backend::template buffer<T> v;     ///< second moment: one per element or per group
    typename Backend::template buffer<T> sums;  ///< scratch: the groups' mean squares
    double v_matrix = 0;  ///< the second moment of moment_groups::matrix
    moment_groups groups = moment_groups::element;  ///< what one second moment is shared over
    index rows = 0;  ///< the rows of the matrix the state was made for
    index cols = 0;  ///< its columns
    long steps = 0;  ///< steps taken
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the moments, the groups, the shape, the steps.
    template <class F>
    void visit(F& f) {
      f.buffer("m", m);
      f.buffer("v", v);
      f.value("v_matrix", v_matrix);
      f.shape("groups", groups);
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.value("steps", steps);
    }
  };

  /// A fresh state: zero moments, the second moment shared over `groups`.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w, moment_groups groups = moment_groups::element) const {
    check_input("polar::adamw::init", "W", w);
    state<Backend, T> s;
    s.rows = w.rows();
    s.cols = w.cols();
    s.groups = groups;
    s.m = detail::zero_buffer<T>(be, s.rows, s.cols);
    if (groups == moment_groups::element) {
      s.v = detail::zero_buffer<T>(be, s.rows, s.cols);
    } else if (groups != moment_groups::matrix) {
      const index lines = groups == moment_groups::rows ? s.rows : s.cols;
      s.v = detail::zero_buffer<T>(be, lines, 1);
      s.sums = be.template allocate<T>(lines);
    }
    return s;
  }
  /// A fresh state for a tensor, seen as its flat matrix (leading extent x the rest).
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, tensor_view<U> w) const {
    return init(be, w.flat());
  }

  /// One step: the moments take G, then W <- W (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps).
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::adamw::step";
    check(op);
    detail::check_step_args(be, op, w, g, s.rows, s.cols, true, true);
    detail::debug_check_state(be, op, s);
    if (s.groups != moment_groups::element)
      detail::raise<value_error>(op, "the state shares its second moment over groups; step() needs one per "
                                     "element (use update() with a geometry)");
    const auto m = detail::state_view<Backend>(s.m, s.rows, s.cols);
    const auto v = detail::state_view<Backend>(s.v, s.rows, s.cols);
    const long t = s.steps + 1;
    const double bc1 = 1 - std::pow(beta1, double(t)), bc2 = 1 - std::pow(beta2, double(t));
    // One pass over W, G and the moments on every backend.
    // Guarded: in a deferred_checks scope it does nothing once a check failed.
    be.for_each_element(
        detail::guarded(detail::adamw_element_step<T>{
            T(1 - beta1), T(beta1), T(beta2),
            detail::adam_update<T>{T(1 - lr * weight_decay), T(lr / bc1), T(1 / std::sqrt(bc2)), T(eps)}}),
        w, m, v, g);
    detail::count_step(s.steps);
  }
  /// One step on a tensor, seen as its flat matrix; W and G must have the same shape.
  template <class Backend, class T>
  void step(Backend& be, tensor_view<T> w, tensor_view<const T> g, state<Backend, T>& s) const {
    detail::check_same_tensor_shape("polar::adamw::step", w, g);
    step(be, w.flat(), g.flat(), s);
  }

  /// d = -lr m^ / (sqrt(v^) + eps), with v shared over the state's groups:
  /// the increment of a step without weight decay.
  template <class Backend, class T>
  void update(Backend& be, in_matrix<T> g, state<Backend, T>& s, matrix_view<T> d) const {
    constexpr const char* op = "polar::adamw::update";
    check(op);
    detail::check_update_args(be, op, g, d, s.rows, s.cols);
    const auto m = detail::state_view<Backend>(s.m, s.rows, s.cols);
    const long t = s.steps + 1;
    const double bc1 = 1 - std::pow(beta1, double(t)), bc2 = 1 - std::pow(beta2, double(t));
    be.axpby(T(1 - beta1), g, T(beta1), m);
    switch (s.groups) {
      case moment_groups::element: {
        const auto v = detail::state_view<Backend>(s.v, s.rows, s.cols);
        be.map(detail::adam_second_moment<T>{T(beta2)}, v, as_const(v), g);
        be.map(detail::adam_increment<T>{T(lr / bc1), T(1 / std::sqrt(bc2)), T(eps)}, d, as_const(m), as_const(v));
        break;
      }
      case moment_groups::matrix: {
        const double mean_square = double(be.dot(g, g)) / double(s.rows * s.cols);
        s.v_matrix = beta2 * s.v_matrix + (1 - beta2) * mean_square;
        be.axpby(T(-lr / bc1 / (std::sqrt(s.v_matrix / bc2) + eps)), as_const(m), T(0), d);
        break;
      }
      default: {
        const bool cols = s.groups == moment_groups::cols;
        const auto gv = cols ? g.transpose() : g;
        const auto dv = cols ? d.transpose() : d;
        const auto mv = cols ? m.transpose() : m;
        const index lines = gv.rows();
        const auto sums = vector_view<T>(s.sums.data(), lines, 1, Backend::space);
        const auto sm = detail::state_view<Backend>(s.sums, lines, 1);
        const auto v = detail::state_view<Backend>(s.v, lines, 1);
        be.map(detail::times_fn<T>{}, dv, gv, gv);
        be.row_sums(as_const(dv), sums);
        be.map(detail::adam_group_moment<T>{T(beta2), T(1.0 / double(gv.cols()))}, v, as_const(v), as_const(sm));
        be.map(detail::adam_group_factor<T>{T(lr / bc1), T(1 / std::sqrt(bc2)), T(eps)}, sm, as_const(v));
        be.copy(as_const(mv), dv);
        be.scale_rows(as_const(sums), dv);
      }
    }
    s.steps = t;
  }
  /// Calls f on each state buffer that is a tangent vector at W: the first
  /// moment.
  template <class Backend, class T, class F>
  void for_each_tangent(state<Backend, T>& s, F&& f) const {
    f(detail::state_view<Backend>(s.m, s.rows, s.cols));
  }

  /// Throws value_error, naming op, for hyperparameters out of range.
  void check(const char* op = "polar::adamw") const {
    detail::check_lr(op, lr);
    detail::check_unit_interval(op, "beta1", beta1);
    detail::check_unit_interval(op, "beta2", beta2);
    detail::check_positive(op, "eps", eps);
    detail::check_weight_decay(op, weight_decay);
  }
};

}  // namespace polar
