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
}  // namespace detail

/// AdamW's hyperparameters and step.
struct adamw_direction {
  double lr = 1e-3;            ///< learning rate
  double beta1 = 0.9;          ///< first-moment decay, in [0, 1)
  double beta2 = 0.999;        ///< second-moment decay, in [0, 1)
  double eps = 1e-8;           ///< added to the root of the second moment, > 0
  double weight_decay = 0.01;  ///< decoupled: W <- W (1 - lr wd)

  /// First and second moments (rows x cols row-major) and the step count
  /// that the bias corrections use.
  template <class Backend, class T>
  struct state {
    typename Backend::template buffer<T> m, v;
    index rows = 0, cols = 0;
    long steps = 0;
  };

  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    check_input("polar::adamw::init", "W", w);
    state<Backend, T> s;
    s.rows = w.rows();
    s.cols = w.cols();
    s.m = detail::zero_buffer<T>(be, s.rows, s.cols);
    s.v = detail::zero_buffer<T>(be, s.rows, s.cols);
    return s;
  }
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, tensor_view<U> w) const {
    return init(be, w.flat());
  }

  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::adamw::step";
    check(op);
    detail::check_step_args(be, op, w, g, s.rows, s.cols);
    const auto m = detail::state_view<Backend>(s.m, s.rows, s.cols);
    const auto v = detail::state_view<Backend>(s.v, s.rows, s.cols);
    const long t = s.steps + 1;
    const double bc1 = 1 - std::pow(beta1, double(t)), bc2 = 1 - std::pow(beta2, double(t));
    be.axpby(T(1 - beta1), g, T(beta1), m);
    be.map(detail::adam_second_moment<T>{T(beta2)}, v, as_const(v), g);
    be.map(detail::adam_update<T>{T(1 - lr * weight_decay), T(lr / bc1), T(1 / std::sqrt(bc2)), T(eps)}, w,
           as_const(w), as_const(m), as_const(v));
    s.steps = t;
  }
  template <class Backend, class T>
  void step(Backend& be, tensor_view<T> w, tensor_view<const T> g, state<Backend, T>& s) const {
    detail::check_same_tensor_shape("polar::adamw::step", w, g);
    step(be, w.flat(), g.flat(), s);
  }

  void check(const char* op = "polar::adamw") const {
    detail::check_lr(op, lr);
    detail::check_unit_interval(op, "beta1", beta1);
    detail::check_unit_interval(op, "beta2", beta2);
    detail::check_positive(op, "eps", eps);
    detail::check_weight_decay(op, weight_decay);
  }
};

}  // namespace polar
