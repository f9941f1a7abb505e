// polar/orthogonalize/detail/stack_ops.hpp: the steps the orthogonalizers
// share, written over stacks of matrices against the backend concept.
//
// A single matrix is a stack of one. Elementwise work over a stack is one
// backend call when the stack is stackable (core/view.hpp) and one call per
// matrix otherwise; the workspaces the orthogonalizers allocate are always
// contiguous, so only the caller's input and output may take the slow form.
#pragma once

#include <cmath>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/functors.hpp"
#include "polar/orthogonalize/schedules.hpp"

namespace polar {
namespace detail {

/// f(views...) once over the stacked matrices when every stack allows it,
/// else once per matrix.
template <class F, class... V>
void for_stack(F&& f, const batch_view<V>&... b) {
  if ((stackable(b) && ...)) {
    f(stacked(b)...);
    return;
  }
  const index count = (b.count(), ...);
  for (index k = 0; k < count; ++k) f(b[k]...);
}

/// The input scaling of a schedule: 1 / (norm_scale |G|_F + eps), 0 for a
/// zero matrix (so a zero gradient gives a zero update) and NaN for a NaN
/// norm (so bad input stays visible).
template <class T>
struct ns_input_scale {
  double norm_scale, eps;
  POLAR_HOST_DEVICE T operator()(T norm) const {
    if (norm > T(0)) return T(1.0 / (norm_scale * double(norm) + eps));
    return norm == T(0) ? T(0) : norm;
  }
};

/// 1 where a singular value is above the threshold, else 0.
template <class T>
struct rank_mask {
  T threshold;
  POLAR_HOST_DEVICE T operator()(T s) const { return s > threshold ? T(1) : T(0); }
};

/// X = G / (norm_scale |G|_F + eps) for each matrix of the stack; X is
/// contiguous (count x n x m), `norms` holds count elements and `spare`
/// n (not read otherwise).
template <class Backend, class T>
void scale_input(Backend& be, const ns_schedule& s, batch_view<const T> g, batch_view<T> x, T* norms, T* spare) {
  const index count = g.count();
  const bool on_device = deferred() != nullptr;
  if (count == 1 && !on_device) {  // one matrix: the backend's overflow-safe norm, one pass
    const T f = ns_input_scale<T>{s.norm_scale, s.eps}(be.norm(g[0]));
    be.axpby(f, g[0], T(0), x[0]);
    return;
  }
  for_stack([&](auto in, auto out) { be.copy(in, out); }, g, x);
  const auto flat = row_major_view(x.data(), count, x.rows() * x.cols(), -1, Backend::space);
  const auto nv = vector_view<T>(norms, count, 1, Backend::space);
  if (count == 1) {
    // In a deferred_checks scope the norm stays on the device, where the
    // host does not wait for it: the norms of the rows, then their norm.
    const index n = x.rows();
    be.row_norms(as_const(x[0]), vector_view<T>(spare, n, 1, Backend::space));
    be.row_norms(as_const(row_major_view(spare, 1, n, -1, Backend::space)), nv);
  } else {
    be.row_norms(as_const(flat), nv);
  }
  const auto nm = row_major_view(norms, count, 1, -1, Backend::space);
  be.map(ns_input_scale<T>{s.norm_scale, s.eps}, nm, as_const(nm));
  be.scale_rows(as_const(nv), flat);
}

/// 1 / sqrt(max(s, floor)): AOL's row scale from a row's absolute sum.
template <class T>
struct aol_scale_fn {
  T floor;
  POLAR_HOST_DEVICE T operator()(T s) const { return T(T(1) / std::sqrt(s > floor ? s : floor)); }
};
/// |x|.
template <class T>
struct abs_fn {
  POLAR_HOST_DEVICE T operator()(T x) const { return x < T(0) ? T(-x) : x; }
};

/// AOL scaling of each matrix of the contiguous stack X (count x n x m)
/// given A = X X^T (count x n x n): d_i = 1 / sqrt(max(sum_j |A(i, j)|,
/// floor)), X <- D X, A <- D A D. `scratch` is another count x n x n stack,
/// d holds count * n elements.
template <class Backend, class T>
void aol_scale(Backend& be, double floor, batch_view<T> x, batch_view<T> a, batch_view<T> scratch, T* d) {
  const index count = x.count(), n = x.rows(), m = x.cols();
  const auto sp = Backend::space;
  const auto a_rows = row_major_view(a.data(), count * n, n, -1, sp);
  const auto s_rows = row_major_view(scratch.data(), count * n, n, -1, sp);
  const auto dv = vector_view<T>(d, count * n, 1, sp);
  const auto dm = row_major_view(d, count * n, 1, -1, sp);
  be.map(abs_fn<T>{}, s_rows, as_const(a_rows));
  be.row_sums(as_const(s_rows), dv);
  be.map(aol_scale_fn<T>{T(floor)}, dm, as_const(dm));
  be.scale_rows(as_const(dv), row_major_view(x.data(), count * n, m, -1, sp));
  be.scale_rows(as_const(dv), a_rows);
  for (index k = 0; k < count; ++k) be.scale_cols(as_const(vector_view<T>(d + k * n, n, 1, sp)), a[k]);
}

/// C = alpha A A^T for each matrix (C square, contiguous), both triangles
/// filled: a symmetric rank-k product and a mirror when `symmetric`, else a
/// general product (faster for small matrices).
template <class Backend, class T>
void gram(Backend& be, T alpha, batch_view<const T> a, batch_view<T> c, bool symmetric) {
  if (symmetric) {
    be.syrk_batched(uplo::lower, alpha, op::n, a, T(0), c);
    for (index k = 0; k < c.count(); ++k) be.symmetrize(uplo::lower, c[k]);
  } else {
    be.gemm_batched(alpha, op::n, a, op::t, a, T(0), c);
  }
}

/// d <- f(d) for each diagonal element d of each square matrix of the
/// contiguous stack p: one map over a view of the diagonals.
template <class Backend, class F, class T>
void map_diagonal(Backend& be, F f, batch_view<T> p) {
  const auto first = p.matrix(0);
  const auto diag = matrix_view<T>(p.data(), p.count(), p.rows(), p.batch_stride(),
                                   first.row_stride() + first.col_stride(), Backend::space);
  be.map(f, diag, as_const(diag));
}

/// Adds `value` to the diagonal of each square matrix of the contiguous
/// stack p.
template <class Backend, class T>
void add_to_diagonal(Backend& be, T value, batch_view<T> p) {
  map_diagonal(be, shift_fn<T>{value}, p);
}

/// m += value I for one square matrix of any strides.
template <class Backend, class T>
void add_to_diagonal(Backend& be, T value, matrix_view<T> m) {
  add_to_diagonal(be, value, as_batch(m));
}

/// The one-time checks of an orthogonalizer's arguments (a matrix or a
/// stack of them).
template <template <class> class View, class T>
void check_orthogonalizer_args(const char* opname, const View<const T>& g, const View<T>& out) {
  check_input(opname, "G", g);
  check_output(opname, "out", out);
  check_same_shape(opname, "out", out, "G", g);
  check_no_alias(opname, "out", out, "G", g);
}

/// The one-time checks of a schedule and an iteration count.
inline void check_schedule(const char* opname, const ns_schedule& s, int steps) {
  if (s.count < 1 || s.count > int(ns_schedule::max_steps))
    raise<value_error>(opname, "schedule '", s.name, "' has ", s.count, " steps; it needs 1 to ",
                       int(ns_schedule::max_steps));
  if (steps < 1) raise<value_error>(opname, "iterations must be positive, got ", steps);
}

}  // namespace detail
}  // namespace polar
