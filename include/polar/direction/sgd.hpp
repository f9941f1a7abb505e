// polar/direction/sgd.hpp: stochastic gradient descent, plain and with
// momentum.
//
//   sgd:       W <- W (1 - lr wd) - lr G
//   momentum:  buf <- mu buf + G          (heavy ball; EMA: mu buf + (1 - mu) G)
//              u    = buf, or the Nesterov look-ahead G + mu buf
//                     (EMA: lerp(G, buf, mu))
//              W   <- W (1 - lr wd) - lr u
//
// Both work elementwise, so any tensor is fine: a matrix (any strides) or a
// tensor_view of any rank. Like every direction, the hyperparameters are a
// plain aggregate, init() makes the state in the backend's memory, and step()
// checks everything before it writes.
#pragma once

#include "polar/backend/concept.hpp"
#include "polar/core/detail/debug_checks.hpp"
#include "polar/direction/detail/common.hpp"

namespace polar {

namespace detail {
/// The SGD step of one element: w <- keep w - lr g (axpby's arithmetic).
template <class T>
struct sgd_element_step {
  T keep, lr;
  POLAR_HOST_DEVICE void operator()(T& w, const T& g) const { w = T(-lr * g + keep * w); }
};
}  // namespace detail

/// Plain SGD with decoupled weight decay. It keeps no buffers.
struct sgd_direction {
  double lr = 0.01;           ///< learning rate
  double weight_decay = 0.0;  ///< decoupled: W <- W (1 - lr wd)

  /// The per-matrix state: only the shape.
  template <class Backend, class T>
  struct state {
    index rows = 0;  ///< the rows of the matrix the state was made for
    index cols = 0;  ///< its columns
    long steps = 0;  ///< steps taken
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the shape and the steps.
    template <class F>
    void visit(F& f) {
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.value("steps", steps);
    }
  };

  /// A fresh state: only W's shape.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend&, matrix_view<U> w) const {
    check_input("polar::sgd::init", "W", w);
    return {w.rows(), w.cols(), 0};
  }
  /// A fresh state for a tensor, seen as its flat matrix (leading extent x the rest).
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, tensor_view<U> w) const {
    return init(be, w.flat());
  }

  /// One step: W <- W (1 - lr wd) - lr G.
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::sgd::step";
    check(op);
    detail::check_step_args(be, op, w, g, s.rows, s.cols, true, true);
    // Guarded: in a deferred_checks scope it does nothing once a check failed.
    be.for_each_element(detail::guarded(detail::sgd_element_step<T>{T(1 - lr * weight_decay), T(lr)}), w, g);
    detail::count_step(s.steps);
  }
  /// One step on a tensor, seen as its flat matrix; W and G must have the same shape.
  template <class Backend, class T>
  void step(Backend& be, tensor_view<T> w, tensor_view<const T> g, state<Backend, T>& s) const {
    detail::check_same_tensor_shape("polar::sgd::step", w, g);
    step(be, w.flat(), g.flat(), s);
  }

  /// d = -lr g: the increment of a step without weight decay (the form a
  /// geometry composes with; see geometry/riemannian.hpp).
  template <class Backend, class T>
  void update(Backend& be, in_matrix<T> g, state<Backend, T>& s, matrix_view<T> d) const {
    constexpr const char* op = "polar::sgd::update";
    check(op);
    detail::check_update_args(be, op, g, d, s.rows, s.cols);
    be.axpby(T(-lr), g, T(0), d);
    ++s.steps;
  }
  /// Calls f on each state buffer that is a tangent vector at W: none.
  template <class Backend, class T, class F>
  void for_each_tangent(state<Backend, T>&, F&&) const {}

  /// Throws value_error for hyperparameters out of range.
  void check(const char* op = "polar::sgd") const {
    detail::check_lr(op, lr);
    detail::check_weight_decay(op, weight_decay);
  }
};

namespace detail {
/// keep w - lr u with u the Nesterov look-ahead of (g, buf).
template <class T>
struct nesterov_step {
  T keep, lr;
  nesterov_fn<T> look_ahead;
  POLAR_HOST_DEVICE T operator()(T w, T g, T b) const { return T(keep * w - lr * look_ahead(g, b)); }
};
/// The momentum step of one element in one pass: the buffer takes g
/// (b = cg g + mu b, as axpby), then the weight steps along it or along
/// Nesterov's look-ahead.
template <class T>
struct momentum_element_step {
  T cg, mu;
  bool nesterov;
  nesterov_step<T> look_ahead;
  POLAR_HOST_DEVICE void operator()(T& w, T& b, const T& g) const {
    const T bn = T(cg * g + mu * b);
    b = bn;
    w = nesterov ? look_ahead(w, g, bn) : T(-look_ahead.lr * bn + look_ahead.keep * w);
  }
};
}  // namespace detail

/// SGD with heavy-ball or EMA momentum, optionally Nesterov.
struct momentum_direction {
  double lr = 0.01;                               ///< learning rate
  double momentum = 0.9;                          ///< mu, in [0, 1)
  bool nesterov = false;                          ///< Nesterov look-ahead
  momentum_kind kind = momentum_kind::heavy_ball; ///< how the buffer accumulates
  double weight_decay = 0.0;                      ///< decoupled: W <- W (1 - lr wd)

  /// The per-matrix state: the momentum buffer.
  template <class Backend, class T>
  struct state {
    typename Backend::template buffer<T> buf;  ///< momentum, rows x cols row-major
    index rows = 0;  ///< the rows of the matrix the state was made for
    index cols = 0;  ///< its columns
    long steps = 0;  ///< steps taken
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the momentum, the shape, the steps.
    template <class F>
    void visit(F& f) {
      f.buffer("buf", buf);
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.value("steps", steps);
    }
  };

  /// A fresh state: zero momentum.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    check_input("polar::momentum::init", "W", w);
    state<Backend, T> s;
    s.rows = w.rows();
    s.cols = w.cols();
    s.buf = detail::zero_buffer<T>(be, s.rows, s.cols);
    return s;
  }
  /// A fresh state for a tensor, seen as its flat matrix (leading extent x the rest).
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, tensor_view<U> w) const {
    return init(be, w.flat());
  }

  /// One step: the buffer takes G, then W <- W (1 - lr wd) - lr (the buffer, or Nesterov's look-ahead).
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::momentum::step";
    check(op);
    detail::check_step_args(be, op, w, g, s.rows, s.cols, true, true);
    detail::debug_check_state(be, op, s);
    const auto buf = detail::state_view<Backend>(s.buf, s.rows, s.cols);
    const T mu = T(momentum), keep = T(1 - lr * weight_decay);
    // One pass over W, G and the buffer on every backend.
    be.for_each_element(
        detail::guarded(detail::momentum_element_step<T>{kind == momentum_kind::ema ? T(1 - momentum) : T(1), mu,
                                                         nesterov,
                                                         {keep, T(lr), {mu, kind == momentum_kind::heavy_ball}}}),
        w, buf, g);
    detail::count_step(s.steps);
  }
  /// One step on a tensor, seen as its flat matrix; W and G must have the same shape.
  template <class Backend, class T>
  void step(Backend& be, tensor_view<T> w, tensor_view<const T> g, state<Backend, T>& s) const {
    detail::check_same_tensor_shape("polar::momentum::step", w, g);
    step(be, w.flat(), g.flat(), s);
  }

  /// d = -lr u (u the buffer or its Nesterov look-ahead): the increment of
  /// a step without weight decay.
  template <class Backend, class T>
  void update(Backend& be, in_matrix<T> g, state<Backend, T>& s, matrix_view<T> d) const {
    constexpr const char* op = "polar::momentum::update";
    check(op);
    detail::check_update_args(be, op, g, d, s.rows, s.cols);
    const auto buf = detail::state_view<Backend>(s.buf, s.rows, s.cols);
    const T mu = T(momentum);
    be.axpby(kind == momentum_kind::ema ? T(1 - momentum) : T(1), g, mu, buf);
    if (nesterov) {
      be.map(detail::nesterov_fn<T>{mu, kind == momentum_kind::heavy_ball}, d, g, as_const(buf));
      be.scale(T(-lr), d);
    } else {
      be.axpby(T(-lr), as_const(buf), T(0), d);
    }
    ++s.steps;
  }
  /// Calls f on each state buffer that is a tangent vector at W: the
  /// momentum.
  template <class Backend, class T, class F>
  void for_each_tangent(state<Backend, T>& s, F&& f) const {
    f(detail::state_view<Backend>(s.buf, s.rows, s.cols));
  }

  /// Throws value_error, naming op, for hyperparameters out of range.
  void check(const char* op = "polar::momentum") const {
    detail::check_lr(op, lr);
    detail::check_unit_interval(op, "momentum", momentum);
    detail::check_weight_decay(op, weight_decay);
  }
};

}  // namespace polar
