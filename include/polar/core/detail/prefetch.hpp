// polar/core/detail/prefetch.hpp: software prefetch for the host kernels
// that stream rows (the fused row-sphere and magnitude-direction steps).
//
// Those kernels do a lot of arithmetic per cache line (sums, a square root
// and a division per element) or stop reading memory while they write a
// row from L1. The hardware prefetcher then does not keep enough lines in
// flight where memory is slow to answer, and the loads wait: on the 2-core
// Xeon of 2026-12-04 the row sphere's first pass over 4096 x 4096 floats
// took 1.3 times a pass that only reads, and the MD step's first pass made
// the step 1.10-1.27 times AdamW's. Asking for each line prefetch_bytes
// before it is read took both to about the speed of memory
// (docs/hypersphere.md, docs/gains.md).
#pragma once

#include <cstddef>
#include <cstdint>

#include "polar/core/config.hpp"

#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#endif

namespace polar::detail {

/// How far ahead of its reads a streaming kernel asks for lines: 2 KB,
/// 512 floats (measured against 0.5, 1, 3 and 4 KB; docs/hypersphere.md,
/// docs/gains.md).
inline constexpr std::size_t prefetch_bytes = 2048;
/// The size of a cache line that the kernels step by.
inline constexpr std::size_t cache_line_bytes = 64;
/// A cache line's worth of elements of type T.
template <class T>
inline constexpr index line_elements = index(cache_line_bytes / sizeof(T));

/// Asks for the cache line holding element k of the array at p, to be read
/// soon. The address is formed as an integer, so k may reach past the end
/// of the array (a prefetch never faults): a kernel that runs ahead of a
/// row reads into the next row, which a thread usually takes next.
template <class T>
inline void prefetch(const T* p, index k) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p) + std::uintptr_t(k) * sizeof(T);
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(reinterpret_cast<const void*>(a), 0, 3);
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
  _mm_prefetch(reinterpret_cast<const char*>(a), _MM_HINT_T0);
#else
  (void)a;
#endif
}

/// Asks for the line prefetch_bytes past element k of the array at p: what
/// a streaming kernel calls once a cache line as it reads element k.
template <class T>
inline void prefetch_ahead(const T* p, index k) {
  prefetch(p, k + index(prefetch_bytes / sizeof(T)));
}

}  // namespace polar::detail
