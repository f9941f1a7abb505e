// polar/backend/detail/accumulate.hpp: sums over contiguous runs that the
// host compilers vectorize. Not for users.
//
// A loop with one accumulator fixes the order of its additions, so without
// -ffast-math the compiler must not vectorize it. Eight accumulators, added
// pairwise at the end, give it eight independent chains to put in SIMD lanes;
// the result is deterministic for a given length (the order is fixed) and
// usually more accurate than one long chain.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "polar/core/config.hpp"

namespace polar::detail {

/// Widening to the reduction accumulator: double for float, double and the
/// 16-bit types.
template <class T>
POLAR_HOST_DEVICE double widen(T x) noexcept {
  return static_cast<double>(static_cast<float>(x));
}
POLAR_HOST_DEVICE double widen(double x) noexcept { return x; }

/// Sum over k in [0, n) of g(a[k], b[k]); when a and b are the same array
/// each element is loaded once.
template <class A, class B, class G>
POLAR_HOST_DEVICE double contiguous_sum(const A* a, const B* b, index n, G g) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  index k = 0;
  if (static_cast<const void*>(a) == static_cast<const void*>(b)) {
    for (; k + 8 <= n; k += 8)
      for (int u = 0; u < 8; ++u) {
        const A v = a[k + u];
        acc[u] += g(v, v);
      }
  } else {
    for (; k + 8 <= n; k += 8)
      for (int u = 0; u < 8; ++u) acc[u] += g(a[k + u], b[k + u]);
  }
  for (; k < n; ++k) acc[0] += g(a[k], b[k]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/// What a[0, n) holds: value_kind::nonfinite where a NaN or an infinity is
/// among it, else value_kind::zero where every element is zero (of either
/// sign), else value_kind::finite.
///
/// For float and double the test is on the bits: with the sign bit
/// cleared, a value is finite exactly when its pattern, read as an integer,
/// is below infinity's, and zero when the pattern is 0. The largest pattern
/// is an integer max-reduction, which vectorizes without reordering any
/// floating-point arithmetic; it takes about a third of the time of
/// isfinite on every element (the check of G that every step makes;
/// docs/benchmarks.md), and -ffast-math, which lets the compiler assume
/// isfinite true, cannot fold it away.
enum class value_kind : int { zero = 0, finite = 1, nonfinite = 2 };
template <class T>
POLAR_HOST_DEVICE value_kind contiguous_kind(const T* a, index n) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    using U = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    constexpr U magnitude = sizeof(T) == 4 ? U(0x7fffffff) : U(0x7fffffffffffffffLL);
    constexpr U infinity = sizeof(T) == 4 ? U(0x7f800000) : U(0x7ff0000000000000LL);
    U largest = 0;
    // Integer max is associative: compilers vectorize this without a
    // pragma (GCC 12's `omp simd reduction(max)` kept the accumulator in
    // memory here, at a quarter of the speed).
    for (index k = 0; k < n; ++k) {
      U bits;
      memcpy(&bits, a + k, sizeof bits);
      bits &= magnitude;
      largest = bits > largest ? bits : largest;
    }
    return largest >= infinity ? value_kind::nonfinite : largest == 0 ? value_kind::zero : value_kind::finite;
  } else {
    bool ok = true, nonzero = false;
    for (index k = 0; k < n; ++k) {
      const double v = widen(a[k]);
      ok = ok && v - v == 0.0;
      nonzero = nonzero || v != 0.0;
    }
    return !ok ? value_kind::nonfinite : nonzero ? value_kind::finite : value_kind::zero;
  }
}

/// Whether a[0, n) holds no NaN and no infinity (contiguous_kind).
template <class T>
POLAR_HOST_DEVICE bool contiguous_finite(const T* a, index n) {
  return contiguous_kind(a, n) != value_kind::nonfinite;
}

}  // namespace polar::detail
