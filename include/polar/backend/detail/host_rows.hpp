// polar/backend/detail/host_rows.hpp: for_each_row (backend/rows.hpp) on
// host memory: the Eigen backend and Thrust's host systems. Not for users.
//
// Rows are cut into parts that polar's threads take (core/threads.hpp); a
// row's sums and loops are `omp simd` loops. Where every operand's columns
// are adjacent the kernel gets contiguous_rows, so its loops vectorize with
// unit-stride loads, and the row's first sum asks for the lines that its
// operands will need prefetch_bytes ahead (core/detail/prefetch.hpp): a
// row's first sum streams it from memory, and the loops after it run from
// the cache, leaving memory idle unless the next lines were asked for.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "polar/backend/rows.hpp"
#include "polar/core/config.hpp"
#include "polar/core/detail/prefetch.hpp"
#include "polar/core/threads.hpp"
#include "polar/core/view.hpp"

#if defined(__AVX__) && (defined(__GNUC__) || defined(_MSC_VER))
#include <immintrin.h>
#define POLAR_STREAMING_STORES 1
#else
#define POLAR_STREAMING_STORES 0
#endif
#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace polar::detail {

/// Whether a backend lets polar's loops use several threads (Backend::threaded;
/// true where the backend does not say).
template <class Backend, class = void>
struct threaded_backend : std::true_type {};
template <class Backend>
struct threaded_backend<Backend, std::void_t<decltype(Backend::threaded)>>
    : std::bool_constant<Backend::threaded> {};

/// What host kernels sum a row of T in over blocks of row_sum_block
/// elements (whose totals are added in double): float for float rows,
/// double for double rows (see row_sum_block).
template <class T>
using sum_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

}  // namespace polar::detail

namespace polar::detail {

/// Operands of at least this many bytes are taken to come from memory and
/// go back to it: row.stream writes them with streaming stores on x86. A
/// smaller operand is likely to be read again from the cache before it
/// leaves it (by the forward pass that follows a step), where a streaming
/// store would send it to memory.
inline constexpr std::size_t streaming_bytes = std::size_t(1) << 23;

}  // namespace polar::detail

namespace polar::detail::host {

/// out[j] = f(j) for j in [0, n). With `streaming`, on x86 with AVX, the
/// 32-byte aligned middle of out goes a cache line at a time: f's values
/// into registers (a line-sized array the compiler keeps there), then out
/// by non-temporal stores, which do not read the line into the cache first
/// (an ordinary store does: for a matrix written whole, a third stream of
/// memory traffic); ahead(j) is called before each line (the context's
/// prefetch). The caller issues stream_fence() before another thread reads
/// out.
template <class T, class F, class H>
void stream_row(T* out, index n, bool streaming, const F& f, const H& ahead) {
  index j = 0;
#if POLAR_STREAMING_STORES
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(out);
    if (streaming && addr % sizeof(T) == 0) {
      constexpr index lanes = index(32 / sizeof(T)), line = line_elements<T>;
      const index head = index((32 - addr % 32) % 32 / sizeof(T));
      for (; j < head && j < n; ++j) out[j] = f(j);
      for (; j + line <= n; j += line) {
        ahead(j);
        alignas(32) T v[line];
        POLAR_OMP(simd)
        for (index k = 0; k < line; ++k) v[k] = f(j + k);
        for (index k = 0; k < line; k += lanes) {
          if constexpr (std::is_same_v<T, float>)
            _mm256_stream_ps(out + j + k, _mm256_load_ps(v + k));
          else
            _mm256_stream_pd(out + j + k, _mm256_load_pd(v + k));
        }
      }
    }
  }
#else
  (void)streaming;
  (void)ahead;
#endif
  POLAR_OMP(simd)
  for (index k = j; k < n; ++k) out[k] = f(k);
}

/// Orders this thread's streaming stores before what follows (a barrier).
/// The same on every x86-64 target, so that translation units built with
/// and without AVX agree on it.
inline void stream_fence() {
#if defined(__SSE__) || defined(_M_X64)
  _mm_sfence();
#endif
}

/// Records rows under the flag codes: the first row of each, kept with an
/// atomic minimum so that threads may record at once.
class row_flag_sink {
 public:
  explicit row_flag_sink(index rows) : rows_(rows) {
    for (auto& f : first_) f.store(rows, std::memory_order_relaxed);
  }
  void record(int code, index i) {
    std::atomic<index>& f = first_[code];
    index seen = f.load(std::memory_order_relaxed);
    while (i < seen && !f.compare_exchange_weak(seen, i, std::memory_order_relaxed)) {
    }
  }
  row_flags result() const {
    row_flags r = row_flags::none(rows_);
    for (int c = 0; c < row_flags::codes; ++c) r.first[c] = first_[c].load(std::memory_order_relaxed);
    return r;
  }

 private:
  std::atomic<index> first_[row_flags::codes];
  index rows_;
};

/// The scalar type of a row sum's values (float or double).
template <class R>
struct sum_scalar {
  using type = R;
};
template <class A, int N>
struct sum_scalar<sums<A, N>> {
  using type = A;
};

/// Where a row context's column accumulators are: sum k of column j at
/// p[k * ld + j] (the part's share; see for_each_row with column_sums).
template <class A>
struct column_share {
  A* p = nullptr;
  index ld = 0;
};

/// The elements a row's first sum takes between asking for lines ahead,
/// for `streams` operands asked for: a block of row_sum_block over the
/// next power of two of the count (512, 256, 128, 128 for one to four), so
/// that a piece asks for about as many lines as the core keeps in flight,
/// and each piece's sums across the lanes (at its end) stay few.
constexpr index ahead_piece(int streams) {
  index p = row_sum_block;
  for (int k = 1; k < streams; k *= 2) p /= 2;
  return p > 64 ? p : 64;
}

/// The row context of the host backends (see backend/rows.hpp). Ops is the
/// number of operands (0 where the rows are strided: nothing is asked for
/// ahead), Streamed the operands whose lines the first sum asks for ahead
/// (bit k for operand k), Col the type of the column sums (void: none).
template <int Ops, unsigned Streamed, class Col = void>
class row_context {
  using col_t = std::conditional_t<std::is_void_v<Col>, char, Col>;

 public:
  row_context(index i, index n, row_flag_sink* flags, const char* const* lines, const index* elem,
              column_share<col_t> col = {}, bool streaming = false)
      : i_(i), n_(n), flags_(flags), col_(col), streaming_(streaming) {
    for (int k = 0; k < Ops; ++k) {
      lines_[k] = lines[k];
      elem_[k] = elem[k];
    }
  }

  /// The row's index.
  index row() const { return i_; }
  /// The row's length.
  index cols() const { return n_; }

  /// The sum over j of f(j) (see backend/rows.hpp).
  template <class F>
  auto sum(F f) const {
    using R = std::decay_t<decltype(f(index(0)))>;
    using A = typename sum_scalar<R>::type;
    constexpr int width = detail::row_total<R>::width;
    static_assert(width <= 8, "polar: a host row sum takes at most 8 sums at once");
    using W = row_total_t<R>;
    double total[width] = {};
    // The first sum asks for its operands' lines ahead, a piece of
    // ahead_piece elements at a time (all of a block's lines at once are
    // more than the core keeps in flight for three or four operands), where they
    // come from memory (streaming_bytes; from the cache, the prefetches and
    // the shorter loops only cost).
    const bool ahead = Ops > 0 && !streamed_ && streaming_;
    constexpr int streams = [] {
      int c = 0;
      for (int k = 0; k < Ops; ++k) c += int((Streamed >> k) & 1u);
      return c;
    }();
    const index piece = ahead ? ahead_piece(streams) : row_sum_block;
    for (index j0 = 0; j0 < n_; j0 += row_sum_block) {
      const index j1 = std::min(n_, j0 + row_sum_block);
      // Named accumulators: GCC reduces an array section in order, lane by
      // lane, which is several times slower.
      A a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
      for (index s0 = j0; s0 < j1; s0 += piece) {
        const index s1 = std::min(j1, s0 + piece);
        if constexpr (Ops > 0)
          if (ahead) ask_ahead(s0, s1);
        // The reduction names only the accumulators in use: GCC reduces
        // each one it names across the lanes at the end of every loop, used
        // or not (80 scalar additions a piece for a sum of three).
#define POLAR_HOST_ROW_SUM_LOOP                 \
  for (index j = s0; j < s1; ++j) {             \
    const R t = f(j);                           \
    if constexpr (width == 1) {                 \
      a0 += t;                                  \
    } else {                                    \
      a0 += t.v[0];                             \
      if constexpr (width > 1) a1 += t.v[1];    \
      if constexpr (width > 2) a2 += t.v[2];    \
      if constexpr (width > 3) a3 += t.v[3];    \
      if constexpr (width > 4) a4 += t.v[4];    \
      if constexpr (width > 5) a5 += t.v[5];    \
      if constexpr (width > 6) a6 += t.v[6];    \
      if constexpr (width > 7) a7 += t.v[7];    \
    }                                           \
  }
        if constexpr (width == 1) {
          POLAR_OMP(simd reduction(+ : a0))
          POLAR_HOST_ROW_SUM_LOOP
        } else if constexpr (width == 2) {
          POLAR_OMP(simd reduction(+ : a0, a1))
          POLAR_HOST_ROW_SUM_LOOP
        } else if constexpr (width == 3) {
          POLAR_OMP(simd reduction(+ : a0, a1, a2))
          POLAR_HOST_ROW_SUM_LOOP
        } else if constexpr (width == 4) {
          POLAR_OMP(simd reduction(+ : a0, a1, a2, a3))
          POLAR_HOST_ROW_SUM_LOOP
        } else if constexpr (width == 5) {
          POLAR_OMP(simd reduction(+ : a0, a1, a2, a3, a4))
          POLAR_HOST_ROW_SUM_LOOP
        } else if constexpr (width == 6) {
          POLAR_OMP(simd reduction(+ : a0, a1, a2, a3, a4, a5))
          POLAR_HOST_ROW_SUM_LOOP
        } else if constexpr (width == 7) {
          POLAR_OMP(simd reduction(+ : a0, a1, a2, a3, a4, a5, a6))
          POLAR_HOST_ROW_SUM_LOOP
        } else {
          POLAR_OMP(simd reduction(+ : a0, a1, a2, a3, a4, a5, a6, a7))
          POLAR_HOST_ROW_SUM_LOOP
        }
#undef POLAR_HOST_ROW_SUM_LOOP
      }
      const A acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
      for (int k = 0; k < width; ++k) total[k] += double(acc[k]);
    }
    streamed_ = true;
    if constexpr (width == 1) {
      return W(total[0]);
    } else {
      W w{};
      for (int k = 0; k < width; ++k) w.v[k] = total[k];
      return w;
    }
  }

  /// f(j) for every j of the row.
  template <class F>
  void for_each(F f) const {
    POLAR_OMP(simd)
    for (index j = 0; j < n_; ++j) f(j);
  }

  /// x[j] = f(j) for every j, where x is a row the kernel writes whole and
  /// does not read again: streaming stores where the call's operands are
  /// large (streaming_bytes) and x's columns adjacent.
  template <class X, class F>
  void stream(X x, F f) const {
    if constexpr (std::is_same_v<X, contiguous_row<std::remove_reference_t<decltype(x[0])>>>) {
      stream_row(x.p, n_, streaming_, f, [&](index j) {
        if constexpr (Ops > 0) ask_ahead(j, j + 1);
      });
    } else {
      POLAR_OMP(simd)
      for (index j = 0; j < n_; ++j) x[j] = f(j);
    }
  }

  /// f() once for the row.
  template <class F>
  void single(F f) const {
    f();
  }

  /// Records this row under code.
  void flag(int code) const { flags_->record(code, i_); }

  /// The accumulator of column j of sum k for this row's part (host and
  /// device code, so that the kernels' loops, which nvcc compiles for both,
  /// may call it).
  POLAR_HOST_DEVICE col_t& column(int k, index j) const {
    static_assert(!std::is_void_v<Col>, "polar: row.column needs for_each_row with column_sums");
    return col_.p[k * col_.ld + j];
  }

 private:
  // Asks for each operand's lines of [j0, j1) + prefetch_bytes; they run
  // past the row's end into the next row, which the same thread usually
  // takes next.
  void ask_ahead(index j0, index j1) const {
    for (int k = 0; k < Ops; ++k) {
      if (((Streamed >> k) & 1u) == 0) continue;
      const index e = elem_[k];
      const index lo = j0 * e + index(prefetch_bytes), hi = j1 * e + index(prefetch_bytes);
      for (index b = lo; b < hi; b += index(cache_line_bytes)) prefetch(lines_[k], b);
    }
  }

  index i_, n_;
  row_flag_sink* flags_;
  column_share<col_t> col_;
  bool streaming_;
  const char* lines_[Ops > 0 ? Ops : 1] = {};
  index elem_[Ops > 0 ? Ops : 1] = {};
  mutable bool streamed_ = false;
};

/// The operands whose lines a kernel's first sum asks for ahead: K::streamed
/// (bit k for operand k) where the kernel says, else all of them.
template <class K, class = void>
struct streamed_operands {
  static constexpr unsigned value = ~0u;
};
template <class K>
struct streamed_operands<K, std::void_t<decltype(K::streamed)>> {
  static constexpr unsigned value = K::streamed;
};

/// k(row, rows of m...) for the rows of each of `parts` parts, part p's
/// column accumulators at col.p + p * col_part (none for Col void).
template <class Col, class K, class... V>
void run_rows(row_flag_sink& flags, index parts, column_share<std::conditional_t<std::is_void_v<Col>, char, Col>> col,
              index col_part, const K& k, const matrix_view<V>&... m) {
  const auto& m0 = std::get<0>(std::forward_as_tuple(m...));
  const index rows = m0.rows(), cols = m0.cols();
  constexpr int ops = int(sizeof...(V));
  constexpr unsigned streamed = streamed_operands<K>::value;
  const index elem[] = {index(sizeof(V))...};
  const auto share = [&](index p) {
    auto c = col;
    if (c.p) c.p += p * col_part;
    return c;
  };
  if (((m.col_stride() == 1 || m.cols() <= 1) && ...)) {
    const bool streaming = std::size_t(rows) * std::size_t(cols) * sizeof(typename std::decay_t<decltype(m0)>::element_type) >= streaming_bytes;
    for_parts(parts, rows, [&](index lo, index hi, index p) {
      const auto c = share(p);
      for (index i = lo; i < hi; ++i) {
        const char* lines[] = {reinterpret_cast<const char*>(m.data() + i * m.row_stride())...};
        const row_context<ops, streamed, Col> row(i, cols, &flags, lines, elem, c, streaming);
        k(row, contiguous_row<V>{m.data() + i * m.row_stride()}...);
      }
      if (streaming) stream_fence();
    });
  } else {
    for_parts(parts, rows, [&](index lo, index hi, index p) {
      const auto c = share(p);
      for (index i = lo; i < hi; ++i) {
        const row_context<0, 0u, Col> row(i, cols, &flags, nullptr, nullptr, c);
        k(row, strided_row<V>{m.data() + i * m.row_stride(), m.col_stride()}...);
      }
    });
  }
}

/// k(row, rows of m...) for every row of the operands m (one shape; checked
/// by the caller), rows split across polar's threads when Threaded and the
/// work is large enough.
template <bool Threaded, class K, class... V>
row_flags for_each_row(const K& k, const matrix_view<V>&... m) {
  static_assert(sizeof...(V) >= 1, "polar::for_each_row takes at least one operand");
  const auto& m0 = std::get<0>(std::forward_as_tuple(m...));
  const index rows = m0.rows(), cols = m0.cols();
  row_flag_sink flags(rows);
  if (rows == 0) return flags.result();
  run_rows<void>(flags, Threaded ? loop_parts(rows, rows * cols) : 1, {}, 0, k, m...);
  return flags.result();
}

/// The parts of a for_each_row with column sums: loop_parts, at most 8 (or
/// one per thread where there are more), since each keeps a row of
/// accumulators per sum. The parts, and so the bits, depend on the sizes
/// alone on up to 8 threads.
inline index column_parts(index rows, index cols) {
  return std::min<index>(loop_parts(rows, rows * cols), std::max(8, polar::threads()));
}

/// The same with column sums (rows.hpp): each part adds into its own rows of
/// accumulators, which are then added in double, part after part.
template <bool Threaded, class K, class A, class... V>
row_flags for_each_row(const K& k, const column_sums<A>& cs, const matrix_view<V>&... m) {
  static_assert(sizeof...(V) >= 1, "polar::for_each_row takes at least one operand");
  const auto& m0 = std::get<0>(std::forward_as_tuple(m...));
  const index rows = m0.rows(), cols = m0.cols(), n = cs.out.rows();
  row_flag_sink flags(rows);
  const index parts = Threaded && rows > 0 ? column_parts(rows, cols) : 1;
  // Kept from call to call, so that a step allocates nothing once they
  // have their size.
  thread_local std::vector<A> acc;
  thread_local std::vector<double> total;
  const std::size_t per_part = std::size_t(n) * std::size_t(cols);
  acc.assign(std::size_t(parts) * per_part, A(0));
  if (rows > 0) {
    run_rows<A>(flags, parts, column_share<A>{acc.data(), cols}, index(per_part), k, m...);
  }
  total.assign(per_part, 0.0);
  for (index p = 0; p < parts; ++p) {
    const A* const a = acc.data() + std::size_t(p) * per_part;
    double* const t = total.data();
    POLAR_OMP(simd)
    for (std::size_t e = 0; e < per_part; ++e) t[e] += double(a[e]);
  }
  for (index s = 0; s < n; ++s)
    for (index j = 0; j < cols; ++j) cs.out(s, j) = A(total[std::size_t(s * cols + j)]);
  return flags.result();
}

}  // namespace polar::detail::host
