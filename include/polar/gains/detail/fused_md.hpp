// polar/gains/detail/fused_md.hpp: the magnitude-direction step over AdamW
// in two passes over the matrices, as row kernels that every backend runs
// through for_each_row (backend/rows.hpp): the host backends as threaded
// SIMD loops, CUDA as one launch a pass.
//
// The generic step (row_col_gains::step) is a sequence of backend
// operations, each a pass over the whole matrix: P = D . G, two products for
// the gains' gradients, G . phi(r) phi(c)^T, AdamW's three passes,
// projection onto the sphere, and the fused weight. AdamW is memory bound,
// so that costs about two AdamW steps. Here:
//
//   pass 1, row by row: P_ij = D_ij G_ij gives the row gain's gradient
//           (sum_j P_ij phi(c)_j) and the column gains' (sum_i P_ij phi(r)_i,
//           a column sum of the row operation); the AdamW step of D with the
//           gradient G_ij phi(r)_i phi(c)_j is taken at once (m, v and D
//           written), and the squared norms of the new D are summed for its
//           sphere (the row's, and the columns' as column sums);
//   between: D's factors back onto its sphere, and the gains stepped by
//           their own direction (vectors: cheap);
//   pass 2, row by row: the fused weight phi(r) D phi(c) of the new gains
//           and of D scaled back onto its sphere is written into W.
//
// Pass 2 does not write D back: the factors that put it on its sphere stay
// pending in the state (D_ij = d_ij a_i b_j) and the next pass 1, which
// reads D anyway, applies them; anything else that reads D settles them
// first (md_settle_kernel). With no line of D dirtied, pass 2 only reads D
// and writes W; the host backends write W of 8 MiB and more with streaming
// stores (row.stream), which do not read W's lines into the cache first.
// The results are those of writing D back: the same products in the same
// order. That reads and writes W, G, D, m and v about as often as AdamW's
// own step does. The generic and fused steps agree to rounding (tested).
#pragma once

#include <cfloat>
#include <cmath>
#include <type_traits>
#include <utility>

#include "polar/backend/detail/host_rows.hpp"
#include "polar/backend/rows.hpp"
#include "polar/core/config.hpp"
#include "polar/core/view.hpp"

namespace polar::detail {

/// Whether a backend runs row kernels with column sums (for_each_row with
/// column_sums): every polar backend does; a user's backend written before
/// the operation existed takes the generic sequence.
template <class Backend, class = void>
struct has_column_sums : std::false_type {};
template <class Backend>
struct has_column_sums<Backend, std::void_t<decltype(std::declval<Backend&>().for_each_row(
                                    std::declval<void (*)(int)>(), column_sums<float>{}, matrix_view<float>{}))>>
    : std::true_type {};

/// Pass 1 (see the header comment) on the rows of G, d, m and v: D is d
/// with the pending factors a (rows) and, with ColFactor, b (cols); pr and
/// pc hold phi(r) (rows) and phi(c) (cols). Column sums: with ColGrad, sum 0
/// is the column gains' gradient; with ColNorm, the next is |D_:j|^2 of the
/// new D, and then both are taken in double (A), else in sum_t<T>. Writes D
/// itself into d, the row gains' gradients into gr (when not null), and
/// per row the new |D_i|^2 into rsum[i] and sum_j P_ij into rsum[rows + i].
/// Row sums are taken in sum_t<T> (floats in blocks, then double).
template <class T, bool ColFactor, bool ColGrad, bool ColNorm>
struct md_adamw_kernel {
  /// The type of the column sums.
  using col_type = std::conditional_t<ColNorm, double, sum_t<T>>;
  static constexpr unsigned streamed = 0xfu;  // G, d, m, v
  static constexpr bool never_flags = true;   // nothing to read back
  T b1, b2, keep, lr_bc1, isbc2, eps;
  const T* pr;
  const T* pc;
  const T* a;
  const T* b;
  T* gr;
  double* rsum;
  index rows;

  POLAR_HD_TEMPLATE
  template <class Row, class G, class D, class M, class V>
  POLAR_HOST_DEVICE void operator()(const Row& row, G g, D d, M m, V v) const {
    using S = sum_t<T>;
    using A = col_type;
    const index i = row.row();
    const T ri = pr[i], ai = a[i];
    const T tb1 = b1, tb2 = b2, tkeep = keep, tlr = lr_bc1, tis = isbc2, teps = eps;
    const T* const tpc = pc;
    const T* const tb = b;
    const auto s = row.sum([=](index j) {
      const T dj = ColFactor ? T(d[j] * ai * tb[j]) : T(d[j] * ai), gj = g[j], pcj = tpc[j];
      const T p = T(dj * gj);
      const T gd = T(gj * ri * pcj);
      const T mj = T(tb1 * m[j] + (T(1) - tb1) * gd);
      const T vj = T(tb2 * v[j] + (T(1) - tb2) * gd * gd);
      const T dn = T(tkeep * dj - tlr * mj / (std::sqrt(vj) * tis + teps));
      m[j] = mj;
      v[j] = vj;
      d[j] = dn;
      if constexpr (ColGrad) row.column(0, j) += A(p) * A(ri);
      if constexpr (ColNorm) row.column(ColGrad ? 1 : 0, j) += A(dn) * A(dn);
      return sums<S, 3>{{S(p), S(p) * S(pcj), S(dn) * S(dn)}};
    });
    T* const gri = gr ? gr + i : nullptr;
    double* const out = rsum;
    const index n = rows;
    row.single([=] {
      if (gri) *gri = T(s[1]);
      out[i] = s[2];
      out[n + i] = s[0];
    });
  }
};

/// Pass 2: W_ij <- (d_ij a_i b_j) pr_i pc_j, the fused weight of D put back
/// on its sphere (a, b: the factors that do it, which stay pending for d;
/// without ColFactor, b is all ones and not read) and of the new gains
/// (pr, pc: their phi).
template <class T, bool ColFactor>
struct md_fuse_kernel {
  static constexpr unsigned streamed = 0x2u;  // d
  static constexpr bool never_flags = true;
  const T* a;
  const T* b;
  const T* pr;
  const T* pc;

  POLAR_HD_TEMPLATE
  template <class Row, class W, class D>
  POLAR_HOST_DEVICE void operator()(const Row& row, W w, D d) const {
    const index i = row.row();
    const T ai = a[i], ri = pr[i];
    const T* const tb = b;
    const T* const tpc = pc;
    row.stream(w, [=](index j) {
      const T dn = ColFactor ? T(d[j] * ai * tb[j]) : T(d[j] * ai);
      return T(dn * ri * tpc[j]);
    });
  }
};

/// d_ij <- d_ij a_i b_j: the pending factors applied (without ColFactor, b
/// is all ones and not read).
template <class T, bool ColFactor>
struct md_settle_kernel {
  static constexpr bool never_flags = true;
  const T* a;
  const T* b;

  POLAR_HD_TEMPLATE
  template <class Row, class D>
  POLAR_HOST_DEVICE void operator()(const Row& row, D d) const {
    const T ai = a[row.row()];
    const T* const tb = b;
    row.for_each([=](index j) { d[j] = ColFactor ? T(d[j] * ai * tb[j]) : T(d[j] * ai); });
  }
};

/// The factor radius / sqrt(sq) that puts a group of squared norm sq back on
/// its sphere; NaN where there is none (sq not positive and finite), which
/// the caller's all_finite sees.
template <class T>
struct sphere_factor_fn {
  double radius;
  POLAR_HOST_DEVICE void operator()(T& f, const double& sq) const {
    f = sq > 0 && sq <= DBL_MAX ? T(radius / std::sqrt(sq)) : T(NAN);
  }
};

/// The flat sphere's factor radius / sqrt(*sq), *sq the squared norm of D in
/// backend memory (the deferred step's, which does not read it back); NaN
/// where there is none.
template <class T>
struct flat_factor_fn {
  double radius;
  const double* sq;
  POLAR_HOST_DEVICE void operator()(T& f) const {
    const double q = *sq;
    f = q > 0 && q <= DBL_MAX ? T(radius / std::sqrt(q)) : T(NAN);
  }
};

/// out = T(x): the column gains' gradients from the double column sums.
template <class T>
struct narrow_fn {
  POLAR_HOST_DEVICE void operator()(T& out, const double& x) const { out = T(x); }
};

}  // namespace polar::detail
