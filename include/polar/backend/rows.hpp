// polar/backend/rows.hpp: the vocabulary of the backends' row operation,
// for_each_row (concept.hpp), through which polar writes its one-pass steps.
//
// An elementwise step that needs a few reductions per row (the row sphere's
// <x, g> and |x|^2, Adam's mean square of a tangent row, the magnitude-
// direction step's row sums) costs one pass over memory when each row is
// reduced and written while it is in cache, and twenty when it is written as
// a sequence of whole-matrix operations. The backends run such a step from
// one functor, the row kernel:
//
//   struct kernel {
//     POLAR_HD_TEMPLATE
//     template <class Row, class X, class G>
//     POLAR_HOST_DEVICE void operator()(const Row& row, X x, G g) const {
//       const double xg = row.sum([=](index j) { return x[j] * g[j]; });
//       row.for_each([=](index j) { x[j] = x[j] - T(xg) * g[j]; });
//     }
//   };
//   be.for_each_row(kernel{}, w, as_const(g));
//
// (POLAR_HD_TEMPLATE tells nvcc that the operator is host-only or
// device-only according to the row context it gets.) The kernel is called
// once for each row i of its operands (matrix views of
// one shape), with the backend's row context `row` and the operands' rows
// (x[j] is element (i, j)); it holds anything else it needs (constants,
// pointers to per-row vectors) by value. The context offers:
//
//   row.row(), row.cols()  the row's index and length;
//   row.sum(f)             the sum over j of f(j), the same value to every
//                          caller: f returns float or double (the sum is a
//                          double), or sums<A, N> for N sums at once
//                          (sums<double, N>); f may write element j of the
//                          rows, and visits each j once;
//   row.for_each(f)        f(j) for every j; what it writes is seen by the
//                          sums and loops that follow;
//   row.stream(x, f)       x[j] = f(j) for every j, where x is one of the
//                          kernel's rows that the step writes whole and does
//                          not read again: streaming stores, which do not
//                          keep x in the caches, where the backend has them;
//   row.single(f)          f() once for the row (writing a per-row value),
//                          after every caller has done what came before;
//   row.flag(code)         records the row under code (0 to row_flags::codes
//                          - 1); for_each_row returns the first row recorded
//                          under each code;
//   row.column(k, j)       with for_each_row(k, column_sums<A>{out}, ...):
//                          the accumulator (an A&) of column j of sum k for
//                          the rows that share this row's accumulators; add
//                          to it inside a sum or for_each, for that loop's j
//                          only. After the call, out(k, j) holds sum k of
//                          column j over all rows.
//
// The kernel's control flow must not depend on j or on which thread runs it
// (the GPU runs a row on a block of threads, each of which calls the kernel:
// every thread must reach the same sums and loops). Functors passed to sum
// and for_each should capture by value: captured by reference, constants
// are reloaded on every iteration, since the stores to the rows might alias
// them.
//
// A kernel may declare `static constexpr unsigned streamed`, bit k set for
// each operand k that its first sum reads: the host backends ask ahead for
// those operands' lines only (all of them where it does not say).
//
// Host backends (backend/detail/host_rows.hpp) run rows on polar's threads
// and each sum and loop as an `omp simd` loop; float sums are taken in
// float over blocks of row_sum_block elements and the blocks' totals added
// in double. CUDA (backend/detail/cuda_rows.hpp) runs each row on a block of
// threads; each thread sums its elements, in float for float, and the block
// adds the threads' sums in double in a fixed order, so a result does not
// change from run to run.
//
// Column sums (column_sums) are deterministic too: the rows are cut into
// shares by their number alone (the host's parts, up to 8 or one per thread;
// on the GPU a fixed number of blocks that stride over the rows), each share
// adds its rows' terms in A in row order, and the shares' totals are added
// in double in share order. Never atomics: the bits do not depend on which
// thread finishes first.
#pragma once

#include <type_traits>

#include "polar/core/config.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// N sums taken together by a row kernel: row.sum(f) with f returning
/// sums<A, N> gives sums<double, N>.
template <class A, int N>
struct sums {
  static_assert(N >= 1, "polar::sums holds at least one sum");
  A v[N];  ///< the sums

  /// Sum k.
  POLAR_HOST_DEVICE A& operator[](int k) { return v[k]; }
  /// Sum k.
  POLAR_HOST_DEVICE const A& operator[](int k) const { return v[k]; }
  /// Adds o, sum by sum.
  POLAR_HOST_DEVICE sums& operator+=(const sums& o) {
    for (int k = 0; k < N; ++k) v[k] += o.v[k];
    return *this;
  }
  /// The same sums in type B.
  template <class B>
  POLAR_HOST_DEVICE sums<B, N> as() const {
    sums<B, N> s{};
    for (int k = 0; k < N; ++k) s.v[k] = B(v[k]);
    return s;
  }
};

namespace detail {
/// What a row sum of values of type R adds in and returns.
template <class R>
struct row_total {
  static_assert(std::is_same_v<R, float> || std::is_same_v<R, double>,
                "polar: a row kernel's sum returns float, double or polar::sums<A, N>");
  using type = double;
  static constexpr int width = 1;
};
template <class A, int N>
struct row_total<sums<A, N>> {
  static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>,
                "polar::sums<A, N> in a row kernel takes A = float or double");
  using type = sums<double, N>;
  static constexpr int width = N;
};
}  // namespace detail

/// The type row.sum(f) returns for f returning R: double for float and
/// double, sums<double, N> for sums<A, N>.
template <class R>
using row_total_t = typename detail::row_total<R>::type;

/// Host sums of float values are taken in float over blocks of this many
/// elements, and the blocks' totals added in double: a block's float sum
/// spreads over the SIMD lanes, so each lane adds a few dozen terms, and
/// converting every element to double instead makes a pass that fits in
/// the cache compute bound.
inline constexpr index row_sum_block = 512;

/// A row whose columns are adjacent: element j at p[j] (lets the compiler
/// vectorize).
template <class T>
struct contiguous_row {
  T* p;  ///< element 0
  /// Element j.
  POLAR_HOST_DEVICE T& operator[](index j) const { return p[j]; }
};

/// A row of any layout: element j at p[j * stride].
template <class T>
struct strided_row {
  T* p;          ///< element 0
  index stride;  ///< elements between j and j + 1
  /// Element j.
  POLAR_HOST_DEVICE T& operator[](index j) const { return p[j * stride]; }
};

/// The column sums a row kernel takes (see row.column in the header
/// comment): out is N x cols (N from 1 to column_sums_max) in the backend's
/// memory, cols the operands' column count; out(k, j) receives sum k of
/// column j. A is float or double: the type each share of rows adds in and
/// the type of the result (the shares are added in double).
template <class A>
struct column_sums {
  static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>,
                "polar::column_sums<A> takes A = float or double");
  matrix_view<A> out;  ///< N x cols: the sums, written by the call
};

/// The most column sums one for_each_row call takes.
inline constexpr index column_sums_max = 4;

/// What for_each_row reports: for each code, the first row whose kernel
/// called row.flag(code), or `rows` when none did.
struct row_flags {
  /// The number of codes a kernel can flag.
  static constexpr int codes = 4;
  index first[codes];  ///< the first row flagged under each code
  index rows = 0;      ///< the number of rows the call ran over

  /// Whether any row was flagged under code.
  bool any(int code) const { return first[code] < rows; }
  /// No row flagged, over n rows.
  static row_flags none(index n) {
    row_flags f{};
    for (index& k : f.first) k = n;
    f.rows = n;
    return f;
  }
};

}  // namespace polar
