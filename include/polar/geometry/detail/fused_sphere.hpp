// polar/geometry/detail/fused_sphere.hpp: one-pass Riemannian steps of the
// elementwise directions (SGD, momentum, Adam) on the row sphere, for
// backends whose operands live in host memory.
//
// The composed step (riemannian.hpp) is a sequence of about twenty generic
// operations, each a pass over the whole matrix: project G, update, project
// the update, retract, transport. For elementwise directions it is memory
// bound, so it costs about twenty Euclidean steps. Here each row is done at
// once: its dot products and norms are reduced while the row is in cache,
// then it is written, so W, G and the state are read and written once, as in
// the Euclidean step. Per row x (radius r), gradient g, learning rate lr:
//
//   c  = <x, g> / r^2,  gt = g - c x                 (Riemannian gradient)
//   u  = the direction's update from gt (momentum: buf; Adam: m and the
//        row's second moment, the mean of gt^2)
//   y  = x - lr u,  x <- r y / |y|                    (normalize retraction)
//   buf <- buf - <x, buf> / r^2 x                     (transport by projection)
//
// in two passes over a row for SGD (|y| follows from <x, g>, |g|, |x|) and
// momentum (|y| and <y, buf> follow from six sums of the first pass), and
// four for Adam (<x, g>; the first moment with |gt|^2; |y|^2 and <y, m>;
// then y, scaled, written with the transport of m), each after the first in
// the cache.
//
// Rows are written one after another, so a row that cannot be put on the
// sphere must be found before the first is written: check_fused_rows does
// that for the one case inputs meet (a zero row of W with nothing to step
// along: its gradient row and the direction's memory of it zero) in the
// pass over G that every step makes for NaN. A row whose step is
// still zero or overflows (a point off the sphere with an update that
// cancels it exactly, or an absurd learning rate) is left as it was and
// returned, and the caller raises after the other rows took the step.
//
// The update of these directions is already tangent (a combination of
// tangent vectors, scaled per row), so the generic path's second projection
// is skipped; the two paths agree to rounding (tested). Sums are vectorized
// with `omp simd` reductions (which allow reordering the sum) and end in
// double: Adam's and all of double's throughout, SGD's and momentum's in
// float over blocks of 512 elements, then in double (see sum_t).
#pragma once

#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define POLAR_FMA_SUMS 1
#else
#define POLAR_FMA_SUMS 0
#endif

#include "polar/backend/detail/accumulate.hpp"
#include "polar/backend/detail/host_loops.hpp"
#include "polar/core/config.hpp"
#include "polar/core/detail/prefetch.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/geometry/hypersphere.hpp"

namespace polar {
namespace detail {

/// A row of a matrix view: element j at p[j * stride].
template <class T>
struct strided_row {
  T* p;
  index stride;
  T& operator[](index j) const { return p[j * stride]; }
};

/// A contiguous row: element j at p[j] (lets the compiler vectorize).
template <class T>
struct contiguous_row {
  T* p;
  T& operator[](index j) const { return p[j]; }
};

/// Whether the fused row-sphere step exists for this direction.
template <class Direction>
inline constexpr bool has_fused_row_sphere_v =
    std::is_same_v<Direction, sgd_direction> || std::is_same_v<Direction, momentum_direction> ||
    std::is_same_v<Direction, adamw_direction>;

/// Whether a state suits the fused step (Adam's moment must be per row).
template <class State, class = void>
struct has_groups : std::false_type {};
template <class State>
struct has_groups<State, std::void_t<decltype(std::declval<const State&>().groups)>> : std::true_type {};
template <class State>
bool fused_state_ok(const State& s) {
  if constexpr (has_groups<State>::value)
    return s.groups == moment_groups::rows;
  else
    return true;
}

/// Whether a backend lets polar's loops use several threads (Backend::threaded;
/// true where the backend does not say).
template <class Backend, class = void>
struct threaded_backend : std::true_type {};
template <class Backend>
struct threaded_backend<Backend, std::void_t<decltype(Backend::threaded)>>
    : std::bool_constant<Backend::threaded> {};

/// Whether a backend's threaded work runs on OpenMP's threads
/// (Backend::openmp_threads: Thrust's OMP system) rather than polar's pool.
template <class Backend, class = void>
struct openmp_backend : std::false_type {};
template <class Backend>
struct openmp_backend<Backend, std::void_t<decltype(Backend::openmp_threads)>>
    : std::bool_constant<Backend::openmp_threads> {};

/// Runs f(i, w_row, g_row) for every row, rows split across polar's threads
/// when the backend is threaded and the matrix is large enough; rows of
/// unit column stride are passed as contiguous_row.
///
/// f must capture by value: captured by reference, its constants are read
/// through the closure on every iteration of the vectorized loops, since
/// the stores to the rows might alias them (this halved the speed of the
/// momentum kernel).
template <class Backend, class T, class F>
void for_each_row(matrix_view<T> w, matrix_view<const T> g, F&& f) {
  const index rows = w.rows();
  const index parts = threaded_backend<Backend>::value ? host::loop_parts(rows, rows * w.cols()) : 1;
  const host::openmp_scope team(openmp_backend<Backend>::value);
  if (w.col_stride() == 1 && g.col_stride() == 1) {
    host::for_parts(parts, rows, [&](index lo, index hi) {
      for (index i = lo; i < hi; ++i)
        f(i, contiguous_row<T>{w.data() + i * w.row_stride()}, contiguous_row<const T>{g.data() + i * g.row_stride()});
    });
  } else {
    host::for_parts(parts, rows, [&](index lo, index hi) {
      for (index i = lo; i < hi; ++i)
        f(i, strided_row<T>{w.data() + i * w.row_stride(), w.col_stride()},
          strided_row<const T>{g.data() + i * g.row_stride(), g.col_stride()});
    });
  }
}

/// What row i of a view holds (contiguous_kind, strided where the columns
/// are not adjacent).
template <class T>
value_kind row_kind(matrix_view<const T> a, index i) {
  const index n = a.cols();
  if (n == 0) return value_kind::zero;
  if (a.col_stride() == 1) return contiguous_kind(&a(i, 0), n);
  value_kind k = value_kind::zero;
  for (index j = 0; j < n && k != value_kind::nonfinite; ++j) {
    const value_kind e = contiguous_kind(&a(i, j), 1);
    if (int(e) > int(k)) k = e;
  }
  return k;
}

/// The checks that the fused step makes before it writes anything, in one
/// pass over G (the pass that the check of G for NaN and infinity makes in
/// every step, taken row by row here):
///  - G holds no NaN or infinity (non_finite_error, as every step);
///  - no row has nothing to step along: W's row zero, G's row zero, and the
///    direction's memory of the row zero too (`memory`, rows x cols
///    row-major: the momentum buffer, Adam's first moment; null for SGD and
///    where the memory is not kept, momentum or beta1 0). The generic
///    sequence finds such a row when it normalizes (numerical_error); the
///    fused kernel, which writes row after row, would find it too late.
///    Only the rows whose gradient row is zero are read further.
/// A zero row of W with something to step along steps to the normalized
/// update on both paths.
template <class Backend, class T>
void check_fused_rows(const char* op, matrix_view<const T> w, matrix_view<const T> g, const T* memory,
                      double radius) {
  const index rows = w.rows(), cols = w.cols();
  const index parts = threaded_backend<Backend>::value ? host::loop_parts(rows, rows * cols) : 1;
  const host::openmp_scope team(openmp_backend<Backend>::value);
  // Whether a row of G holds NaN or infinity, and the first row with nothing
  // to step along (rows if none).
  struct found {
    bool bad;
    index zero;
  };
  const auto [bad, zero] = host::reduce_parts(parts, rows, found{false, rows}, [=](index lo, index hi) {
    found f{false, rows};
    for (index i = lo; i < hi; ++i) {
      const value_kind k = row_kind(g, i);
      if (k == value_kind::nonfinite) f.bad = true;
      if (k == value_kind::zero && i < f.zero && row_kind(w, i) == value_kind::zero &&
          (memory == nullptr || contiguous_kind(memory + i * cols, cols) == value_kind::zero))
        f.zero = i;
    }
    return f;
  }, [](found u, found v) { return found{u.bad || v.bad, std::min(u.zero, v.zero)}; });
  if (bad) raise<non_finite_error>(op, "G (", rows, "x", cols, ") holds NaN or infinity");
  if (zero < rows)
    raise<numerical_error>(op, "row ", zero, " of the ", rows, "x", cols, " matrix W is zero and so is its gradient",
                           memory ? " and the optimizer's memory of it" : "",
                           ": it has no direction to step in and cannot be scaled onto the sphere of radius ", radius,
                           " (W and the state are unchanged)");
}

/// The direction's memory of each row that check_fused_rows reads.
template <class Backend, class T>
const T* fused_memory(const sgd_direction&, const typename sgd_direction::template state<Backend, T>&) {
  return nullptr;
}
template <class Backend, class T>
const T* fused_memory(const momentum_direction& dir, const typename momentum_direction::template state<Backend, T>& s) {
  return dir.momentum == 0 ? nullptr : s.buf.data();
}
template <class Backend, class T>
const T* fused_memory(const adamw_direction& dir, const typename adamw_direction::template state<Backend, T>& s) {
  return dir.beta1 == 0 ? nullptr : s.m.data();
}

/// The first row whose step could not be scaled back onto the sphere (its
/// squared norm zero or not finite), recorded by the kernels' threads:
/// rows.size() when there is none. check_fused_rows rules out the case that
/// inputs meet in practice; what is left needs a point off the sphere and an
/// update that cancels it exactly, or a learning rate that overflows.
struct degenerate_row {
  std::atomic<index> first;
  explicit degenerate_row(index rows) : first(rows) {}
  void record(index i) {
    index seen = first.load(std::memory_order_relaxed);
    while (i < seen && !first.compare_exchange_weak(seen, i, std::memory_order_relaxed)) {
    }
  }
};

/// Whether a squared norm can be scaled to the radius.
inline bool scalable(double n2) { return n2 > 0 && n2 <= std::numeric_limits<double>::max(); }

/// x <- r y / |y| for y = x + f b (|y|^2 = n2), and the buffer b moved to
/// the new tangent space: b <- b - <x, b> x / r^2, where
/// <x, b> = <y, b> r / |y| = yb r / |y|.
template <class Row, class T>
void finish_and_transport(Row x, T* b, T f, index n, double n2, double yb, double r) {
  const double s = r / std::sqrt(n2);
  const T scale = T(s), cb = T(yb * s / (r * r));
  POLAR_OMP(simd)
  for (index j = 0; j < n; ++j) {
    const T y = T(x[j] + f * b[j]);
    const T xj = T(y * scale);
    x[j] = xj;
    b[j] = T(b[j] - cb * xj);
  }
}

/// Partial sums: float for float rows, summed in blocks of sum_block
/// elements whose totals are added in double; double for double rows.
/// A block's float sum spreads over the SIMD lanes, so each lane adds only
/// a few dozen terms; converting every element to double instead makes the
/// first pass compute bound at sizes that fit in the last-level cache.
template <class T>
using sum_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
inline constexpr index sum_block = 512;

/// The three sums a = <x, g>, b = |g|^2, c = |x|^2 of n elements, each in
/// sum_t<T> over blocks of sum_block elements and the blocks' totals in
/// double.
///
/// A vectorized reduction keeps one vector register per sum, and each of
/// its additions waits for the one before (four cycles a fused
/// multiply-add): three such chains cannot fill the two multiply-add units.
/// For contiguous float rows on x86 with AVX2 and FMA the sums are taken
/// with two accumulators each, which in the L2 cache takes 0.08-0.11 ns an
/// element instead of 0.13-0.15 on the development machine (docs/hypersphere.md).
///
/// That path also asks for each line of x and g prefetch_bytes before it
/// is summed (core/detail/prefetch.hpp): the step leaves memory idle while
/// it writes a row from L1, and without it the sums of the next row wait on
/// their lines.
template <class Row, class GRow>
void dot3(Row x, GRow g, index n, double& xg, double& gg, double& xx) {
  using T = std::remove_const_t<std::remove_reference_t<decltype(g[0])>>;
  using A = sum_t<T>;
  xg = gg = xx = 0;
#if POLAR_FMA_SUMS
  if constexpr (std::is_same_v<Row, contiguous_row<float>> && std::is_same_v<GRow, contiguous_row<const float>>) {
    const float* const xp = x.p;
    const float* const gp = g.p;
    const auto total = [](__m256 a, __m256 b) {
      alignas(32) float t[8];
      _mm256_store_ps(t, _mm256_add_ps(a, b));
      return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    };
    for (index j0 = 0; j0 < n; j0 += sum_block) {
      const index j1 = j0 + sum_block < n ? j0 + sum_block : n;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0;
      index j = j0;
      for (; j + 16 <= j1; j += 16) {
        prefetch_ahead(xp, j);
        prefetch_ahead(gp, j);
        const __m256 x0 = _mm256_loadu_ps(xp + j), x1 = _mm256_loadu_ps(xp + j + 8);
        const __m256 g0 = _mm256_loadu_ps(gp + j), g1 = _mm256_loadu_ps(gp + j + 8);
        a0 = _mm256_fmadd_ps(x0, g0, a0);
        a1 = _mm256_fmadd_ps(x1, g1, a1);
        b0 = _mm256_fmadd_ps(g0, g0, b0);
        b1 = _mm256_fmadd_ps(g1, g1, b1);
        c0 = _mm256_fmadd_ps(x0, x0, c0);
        c1 = _mm256_fmadd_ps(x1, x1, c1);
      }
      float a = total(a0, a1), b = total(b0, b1), c = total(c0, c1);
      for (; j < j1; ++j) {
        a += xp[j] * gp[j];
        b += gp[j] * gp[j];
        c += xp[j] * xp[j];
      }
      xg += double(a);
      gg += double(b);
      xx += double(c);
    }
    return;
  }
#endif
  for (index j0 = 0; j0 < n; j0 += sum_block) {
    const index j1 = j0 + sum_block < n ? j0 + sum_block : n;
    A a = 0, b = 0, c = 0;
    POLAR_OMP(simd reduction(+ : a, b, c))
    for (index j = j0; j < j1; ++j) {
      const A xj = A(x[j]), gj = A(g[j]);
      a += xj * gj;
      b += gj * gj;
      c += xj * xj;
    }
    xg += double(a);
    gg += double(b);
    xx += double(c);
  }
}

/// xg = <x, g>.
template <class Row, class GRow>
void row_sums(Row x, GRow g, index n, double& xg) {
  double a = 0;
  POLAR_OMP(simd reduction(+ : a))
  for (index j = 0; j < n; ++j) a += double(x[j]) * double(g[j]);
  xg = a;
}

/// x <- ax x - ag g over n elements: the second pass of SGD's step, from
/// L1. Where AVX-512 is there it is written with 512-bit vectors for
/// contiguous float rows: GCC and Clang vectorize the loop with 256-bit ones
/// on those processors by default, and a pass that only runs from L1 is
/// bound by the number of stores (docs/hypersphere.md has what it and the
/// prefetch in dot3 gave together).
template <class Row, class GRow, class T>
void scale_and_subtract(Row x, GRow g, index n, T ax, T ag) {
  index j = 0;
#if defined(__AVX512F__) && POLAR_FMA_SUMS
  if constexpr (std::is_same_v<Row, contiguous_row<float>> && std::is_same_v<GRow, contiguous_row<const float>>) {
    const __m512 vx = _mm512_set1_ps(ax), vg = _mm512_set1_ps(ag);
    for (; j + 16 <= n; j += 16)
      _mm512_storeu_ps(x.p + j,
                       _mm512_fnmadd_ps(vg, _mm512_loadu_ps(g.p + j), _mm512_mul_ps(vx, _mm512_loadu_ps(x.p + j))));
  }
#endif
  POLAR_OMP(simd)
  for (index k = j; k < n; ++k) x[k] = T(ax * x[k] - ag * g[k]);
}

// SGD in two passes over a row: the sums <x, g>, |g|^2, |x|^2 give |y|^2 for
// y = x - lr gt without forming y, then x <- r y / |y| is written at once.
template <class Backend, class T>
index fused_row_sphere(const sgd_direction& dir, const hypersphere& sph, matrix_view<T> w, matrix_view<const T> g,
                       typename sgd_direction::template state<Backend, T>& s) {
  const index n = w.cols();
  const double r = sph.radius, inv_r2 = 1.0 / (r * r), lr = dir.lr;
  degenerate_row degenerate(w.rows());
  degenerate_row* const dg = &degenerate;
  for_each_row<Backend>(w, g, [=](index i, auto x, auto gr) {
    double xg, gg, xx;
    dot3(x, gr, n, xg, gg, xx);
    const double c = xg * inv_r2;
    double gt2 = gg - 2 * c * xg + c * c * xx;  // |g - c x|^2
    if (gt2 < 0) gt2 = 0;
    const double xgt = xg - c * xx;               // <x, g - c x>
    const double y2 = xx - 2 * lr * xgt + lr * lr * gt2;
    if (!scalable(y2)) return dg->record(i);  // the row is left as it was
    // x <- s (x - lr (g - c x)) = s (1 + lr c) x - s lr g: two operations
    // an element, as in the Euclidean step.
    const double sc = r / std::sqrt(y2);
    scale_and_subtract(x, gr, n, T(sc * (1 + lr * c)), T(sc * lr));
  });
  ++s.steps;
  return degenerate.first;
}

template <class Backend, class T>
index fused_row_sphere(const momentum_direction& dir, const hypersphere& sph, matrix_view<T> w, matrix_view<const T> g,
                       typename momentum_direction::template state<Backend, T>& s) {
  const index n = w.cols();
  const double r = sph.radius, inv_r2 = 1.0 / (r * r);
  const T lr = T(dir.lr), mu = T(dir.momentum);
  const T cg = dir.kind == momentum_kind::ema ? T(1 - dir.momentum) : T(1);
  // u = ug gt + ub buf: the buffer, or Nesterov's look-ahead (heavy ball:
  // gt + mu buf; EMA: (1 - mu) gt + mu buf).
  const T ug = !dir.nesterov ? T(0) : dir.kind == momentum_kind::heavy_ball ? T(1) : T(1 - dir.momentum);
  const T ub = dir.nesterov ? mu : T(1);
  T* const buf0 = s.buf.data();
  const double lrd = double(lr), cgd = double(cg), ugd = double(ug), ubd = double(ub);
  using A = sum_t<T>;
  degenerate_row degenerate(w.rows());
  degenerate_row* const dg = &degenerate;
  // Pass 1: b' = mu b + cg g and q = ug g + ub b' (u before the projection
  // terms), with the sums that give everything else:
  //   u = q - c (ug + ub cg) x,  y = alpha x - lr q,  b_new = b' - cg c x.
  // Without Nesterov q = b' (ug = 0, ub = 1): <x, q> = <x, b'> and
  // <q, q> = <q, b'> = |b'|^2, so four sums and no q, and pass 2 does not
  // read g. The kernel is compiled for each case (nest).
  const auto rows = [&](auto look_ahead) {
    for_each_row<Backend>(w, g, [=](index i, auto x, auto gr) {
      constexpr bool nest = decltype(look_ahead)::value;
      T* const b = buf0 + i * n;
      double xg = 0, xx = 0, xq = 0, qq = 0, xb = 0, qb = 0;
      for (index j0 = 0; j0 < n; j0 += sum_block) {
        const index j1 = j0 + sum_block < n ? j0 + sum_block : n;
        A a_xg = 0, a_xx = 0, a_xq = 0, a_qq = 0, a_xb = 0, a_qb = 0;
        POLAR_OMP(simd reduction(+ : a_xg, a_xx, a_xq, a_qq, a_xb, a_qb))
        for (index j = j0; j < j1; ++j) {
          const T bp = T(mu * b[j] + cg * gr[j]);
          b[j] = bp;
          const A xj = A(x[j]), gj = A(gr[j]), bj = A(bp);
          a_xg += xj * gj;
          a_xx += xj * xj;
          a_xb += xj * bj;
          if constexpr (nest) {
            const A q = A(ug) * gj + A(ub) * bj;
            a_xq += xj * q;
            a_qq += q * q;
            a_qb += q * bj;
          } else {
            a_qq += bj * bj;
          }
        }
        xg += double(a_xg);
        xx += double(a_xx);
        xb += double(a_xb);
        qq += double(a_qq);
        if constexpr (nest) {
          xq += double(a_xq);
          qb += double(a_qb);
        }
      }
      if constexpr (!nest) {
        xq = xb;
        qb = qq;
      }
      const double c = xg * inv_r2, k = cgd * c;
      const double alpha = 1 + lrd * c * (ugd + ubd * cgd);
      const double n2 = alpha * alpha * xx - 2 * alpha * lrd * xq + lrd * lrd * qq;
      const double yb = alpha * xb - alpha * k * xx - lrd * qb + lrd * k * xq;  // <y, b_new>
      if (!scalable(n2)) return dg->record(i);  // x is left as it was, the buffer holds b'
      const double sc = r / std::sqrt(n2);
      // Pass 2: x <- r y / |y| = s (alpha x - lr (ug g + ub b')), and
      // b <- b_new - <x, b_new> x / r^2 = b' - k x - cb x_new, with the
      // constants multiplied out.
      const T kt = T(k), cb = T(sc * yb * inv_r2);
      const T ax = T(sc * alpha), ab = T(sc * lrd * ubd), ag = T(sc * lrd * ugd);
      POLAR_OMP(simd)
      for (index j = 0; j < n; ++j) {
        const T xj = x[j], bj = b[j];
        T xn = T(ax * xj - ab * bj);
        if constexpr (nest) xn = T(xn - ag * gr[j]);
        x[j] = xn;
        b[j] = T(bj - kt * xj - cb * xn);
      }
    });
  };
  if (dir.nesterov)
    rows(std::true_type{});
  else
    rows(std::false_type{});
  ++s.steps;
  return degenerate.first;
}

template <class Backend, class T>
index fused_row_sphere(const adamw_direction& dir, const hypersphere& sph, matrix_view<T> w, matrix_view<const T> g,
                       typename adamw_direction::template state<Backend, T>& s) {
  const index n = w.cols();
  const double r = sph.radius, inv_r2 = 1.0 / (r * r);
  const long t = s.steps + 1;
  const double bc1 = 1 - std::pow(dir.beta1, double(t)), bc2 = 1 - std::pow(dir.beta2, double(t));
  const T b1 = T(dir.beta1), b2 = T(dir.beta2);
  const double lr_over_bc1 = dir.lr / bc1, inv_sqrt_bc2 = 1 / std::sqrt(bc2), eps = dir.eps;
  T* const m0 = s.m.data();
  T* const v = s.v.data();
  degenerate_row degenerate(w.rows());
  degenerate_row* const dg = &degenerate;
  for_each_row<Backend>(w, g, [=](index i, auto x, auto gr) {
    T* const m = m0 + i * n;
    double xg;
    row_sums(x, gr, n, xg);
    const T c = T(xg * inv_r2);
    double gt2 = 0;
    POLAR_OMP(simd reduction(+ : gt2))
    for (index j = 0; j < n; ++j) {
      const T gt = T(gr[j] - c * x[j]);
      m[j] = T(b1 * m[j] + (T(1) - b1) * gt);
      gt2 += double(gt) * double(gt);
    }
    v[i] = T(b2 * v[i] + (T(1) - b2) * T(gt2 / double(n)));
    const T f = T(-lr_over_bc1 / (std::sqrt(double(v[i])) * inv_sqrt_bc2 + eps));
    double n2 = 0, ym = 0;
    POLAR_OMP(simd reduction(+ : n2, ym))
    for (index j = 0; j < n; ++j) {
      const T y = T(x[j] + f * m[j]);
      n2 += double(y) * double(y);
      ym += double(y) * double(m[j]);
    }
    if (!scalable(n2)) return dg->record(i);  // x is left as it was, the moments took the step
    finish_and_transport(x, m, f, n, n2, ym, r);
  });
  s.steps = t;
  return degenerate.first;
}

}  // namespace detail
}  // namespace polar
