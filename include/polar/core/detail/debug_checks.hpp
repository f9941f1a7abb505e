// polar/core/detail/debug_checks.hpp: the debug mode's checks of a state
// (POLAR_DEBUG_CHECKS, polar/core/config.hpp). With the macro at 0 the calls
// compile to nothing.
#pragma once

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "polar/core/config.hpp"
#include "polar/core/detail/gradient_check.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar::detail {

// Visits a state's fields for debug_check_state.
template <class Backend>
struct state_finite_checker {
  Backend& be;
  const char* op;
  std::string prefix;
  template <class Buffer>
  void buffer(const char* name, Buffer& b) {
    using T = std::remove_pointer_t<decltype(b.data())>;
    const index n = index(b.size());
    if (n == 0) return;
    const auto all = matrix_view<const T>(b.data(), 1, n, n, 1, Backend::space);
    // In a deferred_checks scope the check is queued too (it reads nothing back).
    if (deferred_record* d = deferred_for<Backend>(op))
      defer_check(be, *d, op, all, concat("the state's '", prefix, name, "' (a debug check: POLAR_DEBUG_CHECKS)"),
                  deferred_slot::nonfinite);
    else if (!be.all_finite(all))
      raise<non_finite_error>(op, "the state's '", prefix, name, "' (", n,
                              " elements) holds NaN or infinity (a debug check: POLAR_DEBUG_CHECKS)");
  }
  template <class Buffer>
  void buffers(const char* name, std::vector<Buffer>& bs) {
    for (auto& b : bs) buffer(name, b);
  }
  template <class V>
  void shape(const char*, V&) {}
  template <class V>
  void value(const char* name, V& v) {
    if constexpr (std::is_floating_point_v<V>)
      if (!std::isfinite(double(v)))
        raise<non_finite_error>(op, "the state's '", prefix, name, "' is ", double(v),
                                " (a debug check: POLAR_DEBUG_CHECKS)");
  }
  template <class S>
  void nested(const char* name, S& sub) {
    state_finite_checker c{be, op, prefix + name + "/"};
    sub.visit(c);
  }
};

/// Throws non_finite_error, naming the field, when a buffer or real of the
/// state (as its visit() lists them) holds NaN or infinity: a state that a
/// step has turned non-finite (an overflow) would make every later step
/// non-finite. Compiles to nothing when POLAR_DEBUG_CHECKS is 0.
template <class Backend, class State>
void debug_check_state([[maybe_unused]] Backend& be, [[maybe_unused]] const char* op,
                       [[maybe_unused]] State& s) {
#if POLAR_DEBUG_CHECKS
  state_finite_checker<Backend> c{be, op, ""};
  s.visit(c);
#endif
}

}  // namespace polar::detail
