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
//   pass 2, row by row: D is scaled back onto its sphere and the fused
//           weight phi(r) D phi(c) of the new gains is written into W.
//
// That reads and writes W, G, D, m and v about as often as AdamW's own step
// does. The generic and fused steps agree to rounding (tested).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "polar/core/config.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/geometry/detail/fused_sphere.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace polar::detail {

/// What pass 1 leaves for the rest of the step.
struct md_sums {
  std::vector<double> row_grad;  ///< sum_j P_ij phi(c)_j, per row
  std::vector<double> col_grad;  ///< sum_i P_ij phi(r)_i, per column
  std::vector<double> row_norm;  ///< |D_i|^2 of the new D, per row
  std::vector<double> col_norm;  ///< |D_:j|^2 of the new D, per column
  double total_p = 0;            ///< sum P (the scalar gain's gradient)
  double total_norm = 0;         ///< |D|_F^2 of the new D
};

/// The number of threads polar's host loops use for rows x cols elements.
template <class Backend>
int md_threads(index rows, index cols) {
#if defined(_OPENMP)
  if (threaded_backend<Backend>::value && rows * cols >= host::parallel_threshold) return omp_get_max_threads();
#endif
  (void)rows;
  (void)cols;
  return 1;
}

/// One row of pass 1; ColGrad and ColNorm say whether the column sums are
/// wanted (cg, cn: this thread's accumulators). The row's sums are taken in
/// sum_t<T> over blocks of sum_block elements and the blocks' totals in
/// double, as in the fused sphere kernels; a thread's column gradients
/// likewise in sum_t<T> (a gradient: its rounding is harmless), the column
/// norms, which set D's radius, in double.
template <bool ColGrad, bool ColNorm, class T>
void md_adamw_row(const T* gi, T* di, T* mi, T* vi, const T* pc, T ri, index cols, T b1, T b2, T keep, T lr_bc1,
                  T isbc2, T eps, sum_t<T>* cg, double* cn, double& sr, double& sp, double& nn) {
  using A = sum_t<T>;
  sr = sp = nn = 0;
  for (index j0 = 0; j0 < cols; j0 += sum_block) {
    const index j1 = j0 + sum_block < cols ? j0 + sum_block : cols;
    A a_sr = 0, a_sp = 0, a_nn = 0;
    POLAR_OMP(simd reduction(+ : a_sr, a_sp, a_nn))
    for (index j = j0; j < j1; ++j) {
      const T dj = di[j], gj = gi[j];
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
    sr += double(a_sr);
    sp += double(a_sp);
    nn += double(a_nn);
  }
}

/// Pass 1 (see the header comment): D, m, v are contiguous rows x cols; pr,
/// pc hold phi(r) (rows) and phi(c) (cols) on the host; t is AdamW's step
/// number after this step.
template <class Backend, class T>
md_sums md_adamw_pass1(const adamw_direction& dir, matrix_view<const T> g, T* d, T* m, T* v, const T* pr, const T* pc,
                       long t, bool col_grad, bool col_norm) {
  const index rows = g.rows(), cols = g.cols();
  const double bc1 = 1 - std::pow(dir.beta1, double(t)), bc2 = 1 - std::pow(dir.beta2, double(t));
  const T b1 = T(dir.beta1), b2 = T(dir.beta2), keep = T(1 - dir.lr * dir.weight_decay);
  const T lr_bc1 = T(dir.lr / bc1), isbc2 = T(1 / std::sqrt(bc2)), eps = T(dir.eps);
  const int threads = md_threads<Backend>(rows, cols);
  md_sums out;
  out.row_grad.assign(std::size_t(rows), 0.0);
  out.row_norm.assign(std::size_t(rows), 0.0);
  const std::size_t nc = std::size_t(cols);
  std::vector<sum_t<T>> cg(col_grad ? std::size_t(threads) * nc : 0, sum_t<T>(0));
  std::vector<double> cn(col_norm ? std::size_t(threads) * nc : 0, 0.0);
  double total_p = 0, total_norm = 0;
  const T* const g0 = g.data();
  const index gs = g.row_stride();
  POLAR_OMP(parallel num_threads(threads) if (threads > 1) reduction(+ : total_p, total_norm))
  {
    std::size_t tid = 0;
#if defined(_OPENMP)
    tid = std::size_t(omp_get_thread_num());
#endif
    sum_t<T>* const cgt = col_grad ? cg.data() + tid * nc : nullptr;
    double* const cnt = col_norm ? cn.data() + tid * nc : nullptr;
    POLAR_OMP(for schedule(static))
    for (index i = 0; i < rows; ++i) {
      const T* const gi = g0 + i * gs;
      T* const di = d + i * cols;
      T* const mi = m + i * cols;
      T* const vi = v + i * cols;
      double sr = 0, sp = 0, nn = 0;
      if (col_grad && col_norm)
        md_adamw_row<true, true>(gi, di, mi, vi, pc, pr[i], cols, b1, b2, keep, lr_bc1, isbc2, eps, cgt, cnt, sr, sp, nn);
      else if (col_grad)
        md_adamw_row<true, false>(gi, di, mi, vi, pc, pr[i], cols, b1, b2, keep, lr_bc1, isbc2, eps, cgt, cnt, sr, sp,
                                  nn);
      else if (col_norm)
        md_adamw_row<false, true>(gi, di, mi, vi, pc, pr[i], cols, b1, b2, keep, lr_bc1, isbc2, eps, cgt, cnt, sr, sp,
                                  nn);
      else
        md_adamw_row<false, false>(gi, di, mi, vi, pc, pr[i], cols, b1, b2, keep, lr_bc1, isbc2, eps, cgt, cnt, sr, sp,
                                   nn);
      out.row_grad[std::size_t(i)] = sr;
      out.row_norm[std::size_t(i)] = nn;
      total_p += sp;
      total_norm += nn;
    }
  }
  out.total_p = total_p;
  out.total_norm = total_norm;
  // The threads' column sums, added in thread order.
  const auto reduce = [&](const auto& part, std::vector<double>& to) {
    to.assign(nc, 0.0);
    for (int k = 0; k < threads; ++k)
      for (std::size_t j = 0; j < nc; ++j) to[j] += double(part[std::size_t(k) * nc + j]);
  };
  if (col_grad) reduce(cg, out.col_grad);
  if (col_norm) reduce(cn, out.col_norm);
  return out;
}

/// Pass 2: D_ij <- D_ij a_i b_j (back onto the sphere), W_ij <- D_ij pr_i
/// pc_j (the new gains).
template <class Backend, class T>
void md_pass2(matrix_view<T> w, T* d, const T* a, const T* b, const T* pr, const T* pc) {
  const index rows = w.rows(), cols = w.cols();
  [[maybe_unused]] const int threads = md_threads<Backend>(rows, cols);
  T* const w0 = w.data();
  const index ws = w.row_stride();
  POLAR_OMP(parallel for num_threads(threads) if (threads > 1) schedule(static))
  for (index i = 0; i < rows; ++i) {
    T* const di = d + i * cols;
    T* const wi = w0 + i * ws;
    const T ai = a[i], ri = pr[i];
    POLAR_OMP(simd)
    for (index j = 0; j < cols; ++j) {
      const T dn = T(di[j] * ai * b[j]);
      di[j] = dn;
      wi[j] = T(dn * ri * pc[j]);
    }
  }
}

}  // namespace polar::detail
