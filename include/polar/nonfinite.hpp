// polar/nonfinite.hpp: what an optimizer does with a gradient that holds NaN
// or infinity, chosen per optimizer.
//
//   polar::nonfinite_guard<polar::adamw_direction> opt;
//   opt.policy = polar::nonfinite_policy::skip;   // or raise (the default), zero
//   auto s = opt.init(be, W);
//   opt.step(be, W, G, s);     // a NaN in G: no step, s.skipped counts it
//
// Every optimizer of polar already refuses a non-finite gradient with
// non_finite_error before writing anything; the guard wraps any of them
// (a direction, a Riemannian composition, manifold Muon, MD gains) and
// decides instead:
//
//   raise  non_finite_error naming the shape and how many entries are bad;
//          nothing is written (the default, as without the guard);
//   skip   W and the state stay as they are, s.skipped counts the step;
//   zero   the bad entries count as 0 (in a copy: G is not written) and the
//          step is taken; s.zeroed_steps and s.zeroed_entries count them.
//
// The weights are never half-updated: the check runs before the step.
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

#include "polar/core/detail/gradient_check.hpp"
#include "polar/core/check.hpp"
#include "polar/core/config.hpp"
#include "polar/core/error.hpp"
#include "polar/core/scratch.hpp"
#include "polar/core/view.hpp"
#include "polar/direction/detail/common.hpp"

namespace polar {

/// What nonfinite_guard does with a gradient that holds NaN or infinity.
enum class nonfinite_policy {
  raise,  ///< throw non_finite_error, write nothing
  skip,   ///< take no step; count it
  zero    ///< take the step with the bad entries set to 0; count them
};

namespace detail {

// Whether a state records the shape it was made for (rows and cols).
template <class S, class = void>
struct has_shape_fields : std::false_type {};
template <class S>
struct has_shape_fields<S, std::void_t<decltype(std::declval<S&>().rows), decltype(std::declval<S&>().cols)>>
    : std::true_type {};

/// 1 where x is NaN or infinite, else 0 (x - x is NaN exactly then).
template <class T>
struct nonfinite_indicator_fn {
  POLAR_HOST_DEVICE T operator()(T x) const {
    const T d = x - x;
    return d == d ? T(0) : T(1);
  }
};

/// x, or 0 where x is NaN or infinite.
template <class T>
struct zero_nonfinite_fn {
  POLAR_HOST_DEVICE T operator()(T x) const {
    const T d = x - x;
    return d == d ? x : T(0);
  }
};

/// The zero policy's copy of G, shared by an optimizer's guards.
template <class Backend, class T>
struct guard_scratch {
  typename Backend::template buffer<T> clean;  ///< G with the bad entries zeroed
  /// Room for n elements.
  void reserve(Backend& be, index n) {
    if (clean.size() < n) clean = be.template allocate<T>(n);
  }
  /// Bytes held.
  std::size_t bytes() const { return buffer_bytes(clean); }
};

template <class O, class B, class T, class = void>
struct has_update : std::false_type {};
template <class O, class B, class T>
struct has_update<O, B, T,
                  std::void_t<decltype(std::declval<const O&>().update(
                      std::declval<B&>(), std::declval<matrix_view<const T>>(),
                      std::declval<typename O::template state<B, T>&>(), std::declval<matrix_view<T>>()))>>
    : std::true_type {};

}  // namespace detail

/// Any optimizer with a policy for non-finite gradients (see the header
/// comment). A plain aggregate: the wrapped optimizer's hyperparameters are
/// in `optimizer`.
template <class Optimizer>
struct nonfinite_guard {
  Optimizer optimizer{};                             ///< the optimizer that steps
  nonfinite_policy policy = nonfinite_policy::raise;  ///< what a non-finite gradient does

  /// The wrapped optimizer's state, the counts, and a pointer to the zero
  /// policy's scratch copy of G (the state's own until an optimizer shares
  /// one among all its states).
  template <class Backend, class T>
  struct state {
    /// The scratch type a step of this state uses.
    using scratch_type = detail::guard_scratch<Backend, T>;
    typename Optimizer::template state<Backend, T> inner;  ///< the wrapped optimizer's
    std::shared_ptr<scratch_type> scratch;                 ///< G with the bad entries zeroed (zero policy)
    long skipped = 0;                                      ///< steps skipped (skip policy)
    long zeroed_steps = 0;                                 ///< steps taken with entries zeroed (zero policy)
    long long zeroed_entries = 0;                          ///< entries zeroed, over all steps
    /// Uses the pool's scratch, for this state and the wrapped one, from now on.
    void share_scratch(scratch_pool& pool) {
      scratch = pool.get<scratch_type>();
      detail::share_scratch(inner, pool);
    }
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the wrapped
    /// state and the counts.
    template <class F>
    void visit(F& f) {
      f.nested("inner", inner);
      f.value("skipped", skipped);
      f.value("zeroed_steps", zeroed_steps);
      f.value("zeroed_entries", zeroed_entries);
    }
  };

  /// A fresh state: the wrapped optimizer's for W, zero counts.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    state<Backend, T> s;
    s.inner = optimizer.init(be, w);
    return s;
  }
  /// A fresh state whose second moment is shared over `groups`, for a
  /// wrapped direction that takes them (the form a geometry composes with).
  template <class Backend, class U, class T = std::remove_const_t<U>,
            class = std::enable_if_t<detail::takes_moment_groups<Optimizer, Backend, T>::value>>
  state<Backend, T> init(Backend& be, matrix_view<U> w, moment_groups groups) const {
    state<Backend, T> s;
    s.inner = optimizer.init(be, w, groups);
    return s;
  }

  /// The increment of the wrapped direction (the form a geometry composes
  /// with), G's non-finite entries handled by the policy: skip gives a zero
  /// increment and leaves the wrapped state as it was.
  template <class Backend, class T, class = std::enable_if_t<detail::has_update<Optimizer, Backend, T>::value>>
  void update(Backend& be, in_matrix<T> g, state<Backend, T>& s, matrix_view<T> d) const {
    constexpr const char* op = "polar::nonfinite_guard::update";
    check_input(op, "G", g);
    check_output(op, "D", d);
    check_same_shape(op, "D", d, "G", g);
    if (!sees_nonfinite(be, g)) {
      optimizer.update(be, g, s.inner, d);
      return;
    }
    switch (policy) {
      case nonfinite_policy::skip:
        optimizer.check(op);
        be.fill(d, T(0));
        ++s.skipped;
        return;
      case nonfinite_policy::zero: {
        optimizer.check(op);
        const auto [clean, bad] = zeroed(be, g, s);
        optimizer.update(be, clean, s.inner, d);
        ++s.zeroed_steps;
        s.zeroed_entries += bad;
        return;
      }
      default:
        refuse(be, op, g, s);
    }
  }
  /// Calls f on each state buffer of the wrapped direction that is a
  /// tangent vector at W.
  template <class Backend, class T, class F>
  void for_each_tangent(state<Backend, T>& s, F&& f) const {
    optimizer.for_each_tangent(s.inner, std::forward<F>(f));
  }
  /// Throws value_error for the wrapped optimizer's hyperparameters out of range.
  void check(const char* op = "polar::nonfinite_guard") const { optimizer.check(op); }

  /// One step of the wrapped optimizer, with G's non-finite entries handled
  /// by the policy.
  /// @throws shape_error, value_error as the wrapped step, and
  ///         non_finite_error under the raise policy; nothing is written then.
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::nonfinite_guard::step";
    check_output(op, "W", w);
    check_input(op, "G", g);
    check_same_shape(op, "W", w, "G", g);
    // Checked here too: the skip policy does not reach the wrapped step,
    // and the zero policy hands it a copy of G.
    check_no_alias(op, "W", w, "G", g);
    if constexpr (detail::has_shape_fields<typename Optimizer::template state<Backend, T>>::value)
      if (w.rows() != s.inner.rows || w.cols() != s.inner.cols)
        detail::raise_state_mismatch(op, "W", detail::concat(w.rows(), "x", w.cols()), 1, s.inner.rows,
                                     s.inner.cols);
    if (!sees_nonfinite(be, g)) {
      optimizer.step(be, w, g, s.inner);
      return;
    }
    switch (policy) {
      case nonfinite_policy::skip:
        // The wrapped optimizer's checks (hyperparameters, the state's shape)
        // still apply to a skipped step.
        optimizer.check(op);
        ++s.skipped;
        return;
      case nonfinite_policy::zero: {
        optimizer.check(op);
        const auto [clean, bad] = zeroed(be, g, s);
        optimizer.step(be, w, clean, s.inner);
        ++s.zeroed_steps;
        s.zeroed_entries += bad;
        return;
      }
      default:
        refuse(be, op, g, s);
    }
  }

 private:
  // Whether G holds NaN or infinity. In a deferred_checks scope the raise
  // policy leaves the check to the wrapped step, which queues it on the
  // backend; skip and zero decide here, on the host, so they read the
  // answer back there too (docs/reliability.md).
  template <class Backend, class G>
  bool sees_nonfinite(Backend& be, const G& g) const {
    if (detail::gradients_checked()) return false;
    if (policy == nonfinite_policy::raise && detail::deferred_for<Backend>("polar::nonfinite_guard") != nullptr)
      return false;
    return !be.all_finite(g);
  }

  // G with its non-finite entries zeroed, in the scratch, and their count.
  template <class Backend, class T>
  static std::pair<matrix_view<const T>, long long> zeroed(Backend& be, in_matrix<T> g, state<Backend, T>& s) {
    const index m = g.rows(), n = g.cols();
    auto& scratch = detail::scratch_of(s.scratch);
    scratch.reserve(be, m * n);
    const auto clean = row_major_view(scratch.clean.data(), m, n, -1, Backend::space);
    be.map(detail::nonfinite_indicator_fn<T>{}, clean, g);
    const auto bad = static_cast<long long>(double(be.sum(as_const(clean))));
    be.map(detail::zero_nonfinite_fn<T>{}, clean, g);
    return {as_const(clean), bad};
  }
  template <class Backend, class T>
  [[noreturn]] static void refuse(Backend& be, const char* op, in_matrix<T> g, state<Backend, T>& s) {
    const auto bad = zeroed(be, g, s).second;
    detail::raise<non_finite_error>(op, "G (", g.rows(), "x", g.cols(), ") holds ", bad,
                                    " NaN or infinite entries (policy raise; skip or zero would go on)");
  }
};

}  // namespace polar
