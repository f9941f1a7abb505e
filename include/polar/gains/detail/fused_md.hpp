// polar/gains/detail/fused_md.hpp: the magnitude-direction step over AdamW
// in two passes over the matrices, for backends whose operands live in host
// memory.
//
// The generic step (row_col_gains::step) is a sequence of backend
// operations, each a pass over the whole matrix: P = D . G, two products for
// the gains' gradients, G . phi(r) phi(c)^T, AdamW's three passes,
// projection onto the sphere, and the fused weight. AdamW is memory bound,
// so that costs about two AdamW steps. Here:
//
//   pass 1, row by row: P_ij = D_ij G_ij gives the row gain's gradient
//           (sum_j P_ij phi(c)_j) and a thread's share of the column gains'
//           (sum_i P_ij phi(r)_i); the AdamW step of D with the gradient
//           G_ij phi(r)_i phi(c)_j is taken at once (m, v and D written),
//           and the squared norms of the new D are summed for its sphere
//           (the matrix's, the row's, or a thread's share of the columns');
//   between: the gains' gradients are reduced and the gains stepped by
//           their own direction (vectors: cheap);
//   pass 2, row by row: the fused weight phi(r) D phi(c) of the new gains
//           and of D scaled back onto its sphere is written into W.
//
// Pass 2 does not write D back: the factors that put it on its sphere stay
// pending in the state (D_ij = d_ij a_i b_j) and the next pass 1, which
// reads D anyway, applies them; anything else that reads D settles them
// first (md_settle). With no line of D dirtied, pass 2 only reads D and
// writes W, and on x86 it writes W with streaming stores, which do not
// read W's lines into the cache first (write_row). The results are those of
// writing D back: the same products in the same order. That reads and
// writes W, G, D, m and v about as often as AdamW's own step does. The
// generic and fused steps agree to rounding (tested).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "polar/backend/detail/host_rows.hpp"
#include "polar/core/config.hpp"
#include "polar/core/detail/prefetch.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/geometry/detail/fused_sphere.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
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

/// What pass 1 leaves for the rest of the step, and the threads' partial
/// column sums it adds up; kept from step to step (in the MD scratch) so a
/// step allocates nothing once the vectors have their size.
struct md_sums {
  std::vector<double> row_grad;  ///< sum_j P_ij phi(c)_j, per row
  std::vector<double> col_grad;  ///< sum_i P_ij phi(r)_i, per column
  std::vector<double> row_norm;  ///< |D_i|^2 of the new D, per row
  std::vector<double> col_norm;  ///< |D_:j|^2 of the new D, per column
  double total_p = 0;            ///< sum P (the scalar gain's gradient)
  double total_norm = 0;         ///< |D|_F^2 of the new D
  std::vector<float> grad_parts_f;   ///< the threads' column gradient sums, float steps
  std::vector<double> grad_parts_d;  ///< the same, double steps
  std::vector<double> norm_parts;    ///< the threads' column norms
  /// The partial column gradient sums for accumulator type A.
  template <class A>
  std::vector<A>& grad_parts() {
    if constexpr (std::is_same_v<A, float>)
      return grad_parts_f;
    else
      return grad_parts_d;
  }
};

/// The column factors b for the kernels below: null where they are all
/// one, which saves the kernels a vector's reads per row.
template <class T>
const T* factors_or_null(const std::vector<T>& b) {
  for (const T x : b)
    if (x != T(1)) return b.data();
  return nullptr;
}

/// The parts polar's threads share a kernel over rows x cols elements in:
/// host::loop_parts, and for pass 1, which keeps a row of column sums per
/// part, at most 8 (or one per thread, where there are more): the parts
/// depend on the sizes alone on up to 8 threads, and so do the bits.
template <class Backend>
index md_parts(index rows, index cols, bool column_sums = false) {
  if (!threaded_backend<Backend>::value) return 1;
  const index parts = host::loop_parts(rows, rows * cols);
  return column_sums ? std::min<index>(parts, std::max(8, polar::threads())) : parts;
}

/// Matrices of at least this many bytes are taken to come from memory:
/// W is written by streaming stores (see write_row), and pass 1 asks for
/// its lines ahead. A smaller W is likely to be read again from the cache
/// before it leaves it, by the forward pass that follows the step, and a
/// smaller step's operands are likely to be in the cache already, where
/// the prefetch and the shorter vector loops it takes only cost (at
/// 256 x 256 floats the step's ratio to AdamW's rose from 1.4-2.1 to
/// 2.0-2.7 with them; docs/gains.md).
inline constexpr std::size_t streaming_bytes = std::size_t(1) << 23;

/// One row of pass 1; D's row is di times the pending factors ai and, with
/// ColFactor, b (without, b is all ones and not read: one row of a matrix
/// of rows x 4096 floats takes 16 KB of L1 a vector); ColGrad and ColNorm
/// say whether the column sums are wanted (cg, cn: this thread's
/// accumulators). The row's sums are taken in
/// sum_t<T> over blocks of row_sum_block elements and the blocks' totals in
/// double, as in the fused sphere kernels; a thread's column gradients
/// likewise in sum_t<T> (a gradient: its rounding is harmless), the column
/// norms, which set D's radius, in double. With `from_memory`, the row goes
/// in pieces of four cache lines, each after asking for the lines of G, D,
/// m and v prefetch_bytes ahead (core/detail/prefetch.hpp): the element's
/// arithmetic keeps too few lines in flight otherwise.
template <bool ColGrad, bool ColNorm, bool ColFactor, class T>
void md_adamw_row(const T* gi, T* di, T* mi, T* vi, const T* pc, T ri, T ai, const T* b, index cols, T b1, T b2,
                  T keep, T lr_bc1, T isbc2, T eps, sum_t<T>* cg, double* cn, bool from_memory, double& sr,
                  double& sp, double& nn) {
  using A = sum_t<T>;
  constexpr index line = line_elements<T>;
  const index piece = from_memory ? 4 * line : row_sum_block;
  sr = sp = nn = 0;
  for (index j0 = 0; j0 < cols; j0 += row_sum_block) {
    const index j1 = j0 + row_sum_block < cols ? j0 + row_sum_block : cols;
    A a_sr = 0, a_sp = 0, a_nn = 0;
    for (index s0 = j0; s0 < j1; s0 += piece) {
      const index s1 = s0 + piece < j1 ? s0 + piece : j1;
      if (from_memory)
        for (index k = s0; k < s1; k += line) {
          prefetch_ahead(gi, k);
          prefetch_ahead(di, k);
          prefetch_ahead(mi, k);
          prefetch_ahead(vi, k);
        }
      POLAR_OMP(simd reduction(+ : a_sr, a_sp, a_nn))
      for (index j = s0; j < s1; ++j) {
        const T dj = ColFactor ? T(di[j] * ai * b[j]) : T(di[j] * ai), gj = gi[j];
        const T p = T(dj * gj);
        a_sp += A(p);
        a_sr += A(p) * A(pc[j]);
        if constexpr (ColGrad) cg[j] += A(p) * A(ri);
        const T gd = T(gj * ri * pc[j]);
        const T mj = T(b1 * mi[j] + (T(1) - b1) * gd);
        const T vj = T(b2 * vi[j] + (T(1) - b2) * gd * gd);
        const T dn = T(keep * dj - lr_bc1 * mj / (std::sqrt(vj) * isbc2 + eps));
        mi[j] = mj;
        vi[j] = vj;
        di[j] = dn;
        a_nn += A(dn) * A(dn);
        if constexpr (ColNorm) cn[j] += double(dn) * double(dn);
      }
    }
    sr += double(a_sr);
    sp += double(a_sp);
    nn += double(a_nn);
  }
}

/// Pass 1 (see the header comment): D, m, v are contiguous rows x cols, D
/// held as d with the pending factors a (rows) and b (cols; null: ones); pr, pc hold
/// phi(r) (rows) and phi(c) (cols) on the host; t is AdamW's step number
/// after this step. Writes D itself (no factors pending) into d.
template <class Backend, class T>
void md_adamw_pass1(const adamw_direction& dir, matrix_view<const T> g, T* d, const T* a, const T* b, T* m, T* v,
                    const T* pr, const T* pc, long t, bool col_grad, bool col_norm, md_sums& out) {
  const index rows = g.rows(), cols = g.cols();
  const double bc1 = 1 - std::pow(dir.beta1, double(t)), bc2 = 1 - std::pow(dir.beta2, double(t));
  const T b1 = T(dir.beta1), b2 = T(dir.beta2), keep = T(1 - dir.lr * dir.weight_decay);
  const T lr_bc1 = T(dir.lr / bc1), isbc2 = T(1 / std::sqrt(bc2)), eps = T(dir.eps);
  const index parts = md_parts<Backend>(rows, cols, col_grad || col_norm);
  const host::openmp_scope team(openmp_backend<Backend>::value);
  const bool from_memory = std::size_t(rows) * std::size_t(cols) * sizeof(T) >= streaming_bytes;
  out.row_grad.assign(std::size_t(rows), 0.0);
  out.row_norm.assign(std::size_t(rows), 0.0);
  out.col_grad.clear();
  out.col_norm.clear();
  const std::size_t nc = std::size_t(cols);
  auto& cg = out.grad_parts<sum_t<T>>();
  auto& cn = out.norm_parts;
  cg.assign(col_grad ? std::size_t(parts) * nc : 0, sum_t<T>(0));
  cn.assign(col_norm ? std::size_t(parts) * nc : 0, 0.0);
  const T* const g0 = g.data();
  const index gs = g.row_stride();
  // The sums of the rows of a part: of p and of |D|^2.
  struct totals {
    double p, norm;
  };
  const totals total = host::reduce_parts(parts, rows, totals{0, 0}, [&](index lo, index hi, index part) {
    sum_t<T>* const cgt = col_grad ? cg.data() + std::size_t(part) * nc : nullptr;
    double* const cnt = col_norm ? cn.data() + std::size_t(part) * nc : nullptr;
    totals sums{0, 0};
    for (index i = lo; i < hi; ++i) {
      const T* const gi = g0 + i * gs;
      T* const di = d + i * cols;
      T* const mi = m + i * cols;
      T* const vi = v + i * cols;
      double sr = 0, sp = 0, nn = 0;
      const auto row = [&](auto grad, auto norm, auto factor) {
        md_adamw_row<decltype(grad)::value, decltype(norm)::value, decltype(factor)::value>(
            gi, di, mi, vi, pc, pr[i], a[i], b, cols, b1, b2, keep, lr_bc1, isbc2, eps, cgt, cnt, from_memory, sr, sp,
            nn);
      };
      const auto with_factor = [&](auto grad, auto norm) {
        if (b)
          row(grad, norm, std::true_type{});
        else
          row(grad, norm, std::false_type{});
      };
      if (col_grad && col_norm)
        with_factor(std::true_type{}, std::true_type{});
      else if (col_grad)
        with_factor(std::true_type{}, std::false_type{});
      else if (col_norm)
        with_factor(std::false_type{}, std::true_type{});
      else
        with_factor(std::false_type{}, std::false_type{});
      out.row_grad[std::size_t(i)] = sr;
      out.row_norm[std::size_t(i)] = nn;
      sums.p += sp;
      sums.norm += nn;
    }
    return sums;
  }, [](totals x, totals y) { return totals{x.p + y.p, x.norm + y.norm}; });
  out.total_p = total.p;
  out.total_norm = total.norm;
  // The parts' column sums, added in order.
  const auto reduce = [&](const auto& part, std::vector<double>& to) {
    to.assign(nc, 0.0);
    for (index k = 0; k < parts; ++k)
      for (std::size_t j = 0; j < nc; ++j) to[j] += double(part[std::size_t(k) * nc + j]);
  };
  if (col_grad) reduce(cg, out.col_grad);
  if (col_norm) reduce(cn, out.col_norm);
}

/// Element j of a row of the fused weight, (d_j a b_j) r pc_j, where d is
/// the row of D with its pending row factor a and column factors b
/// (ColFactor; without, b is all ones and not read), r = phi(r_i) and
/// pc = phi(c): the products in this order, as a scalar and, with AVX,
/// as a vector of lanes from element j on (the same products in the same
/// order, so each lane rounds as the scalar does).
template <class T, bool ColFactor>
struct fused_weight_row {
  const T* d;
  T a;
  const T* b;
  T r;
  const T* pc;
  T operator()(index j) const {
    const T dn = ColFactor ? T(d[j] * a * b[j]) : T(d[j] * a);
    return T(dn * r * pc[j]);
  }
#if POLAR_STREAMING_STORES
  auto lanes(index j) const {
    if constexpr (std::is_same_v<T, float>) {
      __m256 dn = _mm256_mul_ps(_mm256_loadu_ps(d + j), _mm256_set1_ps(a));
      if constexpr (ColFactor) dn = _mm256_mul_ps(dn, _mm256_loadu_ps(b + j));
      return _mm256_mul_ps(_mm256_mul_ps(dn, _mm256_set1_ps(r)), _mm256_loadu_ps(pc + j));
    } else {
      __m256d dn = _mm256_mul_pd(_mm256_loadu_pd(d + j), _mm256_set1_pd(a));
      if constexpr (ColFactor) dn = _mm256_mul_pd(dn, _mm256_loadu_pd(b + j));
      return _mm256_mul_pd(_mm256_mul_pd(dn, _mm256_set1_pd(r)), _mm256_loadu_pd(pc + j));
    }
  }
#endif
};

/// out[j] = f(j) for j in [0, n), f a fused_weight_row. With `streaming`,
/// on x86 with AVX, the 32-byte aligned middle of out is written by
/// non-temporal (streaming) stores of f's lanes, straight from the
/// registers, a cache line at a time after asking for the line of f.d
/// prefetch_bytes ahead: a normal store first reads the line it writes into
/// the cache, which for a matrix written whole is a third stream of memory
/// traffic. (Filling a chunk on the stack with the scalar form and
/// streaming it from there took a quarter more time: 0.72 ms against 0.50
/// for 1024 x 4096 floats on two threads.) The caller issues stream_fence()
/// before another thread reads out.
template <class T, bool ColFactor>
void write_row(T* out, index n, bool streaming, const fused_weight_row<T, ColFactor>& f) {
  index j = 0;
#if POLAR_STREAMING_STORES
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(out);
    if (streaming && addr % sizeof(T) == 0) {
      constexpr index lanes = index(32 / sizeof(T)), line = line_elements<T>;
      const index head = index((32 - addr % 32) % 32 / sizeof(T));
      for (; j < head && j < n; ++j) out[j] = f(j);
      for (; j + line <= n; j += line) {
        prefetch_ahead(f.d, j);
        for (index k = j; k < j + line; k += lanes) {
          if constexpr (std::is_same_v<T, float>)
            _mm256_stream_ps(out + k, f.lanes(k));
          else
            _mm256_stream_pd(out + k, f.lanes(k));
        }
      }
    }
  }
#else
  (void)streaming;
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

/// Pass 2: W_ij <- (d_ij a_i b_j) pr_i pc_j, the fused weight of D put
/// back on its sphere (a, b: the factors that do it, which stay pending
/// for d; b null: ones) and of the new gains (pr, pc: their phi).
template <class Backend, class T>
void md_pass2(matrix_view<T> w, const T* d, const T* a, const T* b, const T* pr, const T* pc) {
  const index rows = w.rows(), cols = w.cols();
  T* const w0 = w.data();
  const index ws = w.row_stride();
  const bool streaming = std::size_t(rows) * std::size_t(cols) * sizeof(T) >= streaming_bytes;
  const host::openmp_scope team(openmp_backend<Backend>::value);
  host::for_parts(md_parts<Backend>(rows, cols), rows, [&](index lo, index hi) {
    for (index i = lo; i < hi; ++i) {
      const T* const di = d + i * cols;
      const T ai = a[i], ri = pr[i];
      if (b)
        write_row(w0 + i * ws, cols, streaming, fused_weight_row<T, true>{di, ai, b, ri, pc});
      else
        write_row(w0 + i * ws, cols, streaming, fused_weight_row<T, false>{di, ai, nullptr, ri, pc});
    }
    stream_fence();
  });
}

/// d_ij <- d_ij a_i b_j: the pending factors applied (D itself in d; b
/// null: ones).
template <class Backend, class T>
void md_settle(T* d, index rows, index cols, const T* a, const T* b) {
  const auto row = [=](index i) {
    T* const di = d + i * cols;
    const T ai = a[i];
    if (b) {
      POLAR_OMP(simd)
      for (index j = 0; j < cols; ++j) di[j] = T(di[j] * ai * b[j]);
    } else {
      POLAR_OMP(simd)
      for (index j = 0; j < cols; ++j) di[j] = T(di[j] * ai);
    }
  };
  const host::openmp_scope team(openmp_backend<Backend>::value);
  host::for_parts(md_parts<Backend>(rows, cols), rows, [&](index lo, index hi) {
    for (index i = lo; i < hi; ++i) row(i);
  });
}

}  // namespace polar::detail
