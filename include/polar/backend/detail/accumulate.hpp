// polar/backend/detail/accumulate.hpp: sums over contiguous runs that the
// host compilers vectorize. Not for users.
//
// A loop with one accumulator fixes the order of its additions, so without
// -ffast-math the compiler must not vectorize it. Eight accumulators, added
// pairwise at the end, give it eight independent chains to put in SIMD lanes;
// the result is deterministic for a given length (the order is fixed) and
// usually more accurate than one long chain.
#pragma once

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

}  // namespace polar::detail
