// polar/orthogonalize/detail/stack_ops.hpp: the steps the orthogonalizers
// share, written over stacks of matrices against the backend concept.
//
// A single matrix is a stack of one. Elementwise work over a stack is one
// backend call when the stack is stackable (core/view.hpp) and one call per
// matrix otherwise; the workspaces the orthogonalizers allocate are always
// contiguous, so only the caller's input and output may take the slow form.
#pragma once

#include <cmath>
#include <type_traits>
#include <utility>

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

/// Whether a backend mirrors a whole stack in one call (symmetrize_batched,
/// optional in the concept).
template <class Backend, class T, class = void>
struct has_symmetrize_batched : std::false_type {};
template <class Backend, class T>
struct has_symmetrize_batched<Backend, T,
                              std::void_t<decltype(std::declval<Backend&>().symmetrize_batched(
                                  uplo::lower, std::declval<batch_view<T>>()))>> : std::true_type {};

/// The `from` triangle of each matrix of the stack c copied onto the other:
/// one call for the stack where the backend has symmetrize_batched, else
/// one per matrix.
template <class Backend, class T>
void symmetrize_stack(Backend& be, uplo from, batch_view<T> c) {
  if constexpr (has_symmetrize_batched<Backend, T>::value) {
    be.symmetrize_batched(from, c);
  } else {
    for (index k = 0; k < c.count(); ++k) be.symmetrize(from, c[k]);
  }
}

/// C = alpha A A^T for each matrix (C square, contiguous), both triangles
/// filled: a symmetric rank-k product and a mirror when `symmetric`, else a
/// general product (faster for small matrices).
template <class Backend, class T>
void gram(Backend& be, T alpha, batch_view<const T> a, batch_view<T> c, bool symmetric) {
  if (symmetric) {
    be.syrk_batched(uplo::lower, alpha, op::n, a, T(0), c);
    symmetrize_stack(be, uplo::lower, c);
  } else {
    be.gemm_batched(alpha, op::n, a, op::t, a, T(0), c);
  }
}

/// The number of row blocks t that a 16-bit symmetric product C = A A^T
/// (C n x n) is split into: the t (t + 1) / 2 blocks on and below the
/// diagonal are computed, the rest mirrored, so the product takes
/// (t + 1) / (2 t) of a GEMM's flops. `requested` 1 asks for one GEMM,
/// t > 1 for t blocks (one GEMM when t does not divide n into blocks of a
/// multiple of 8 rows, the tensor cores' alignment), 0 for polar's choice:
/// 4 blocks from n = 2048, 2 from n = 1024, else one GEMM (smaller blocks
/// leave a GPU's multiprocessors idle).
inline index symmetric_blocks(index n, int requested) noexcept {
  const auto fits = [n](index t) { return n % (8 * t) == 0; };
  if (requested == 1 || requested < 0) return 1;
  if (requested > 1) return fits(requested) ? index(requested) : 1;
  if (n >= 2048 && fits(4)) return 4;
  if (n >= 1024 && fits(2)) return 2;
  return 1;
}

/// The flops of a 16-bit symmetric product in t blocks, as a fraction of
/// one GEMM's.
constexpr double symmetric_block_fraction(index t) noexcept { return double(t + 1) / double(2 * t); }

/// C = alpha A A^T + beta C for each matrix of the contiguous row-major
/// 16-bit stacks A (count x n x k) and C (count x n x n), both triangles of
/// C written: the blocks on and below the diagonal of a t x t blocking are
/// 16-bit GEMMs (gemm_batched_lowp), then the lower triangle is mirrored
/// onto the upper one, so C is exactly symmetric. A single matrix takes one
/// strided-batched call per block diagonal (t calls), a stack one per block
/// over the whole stack (t (t + 1) / 2 calls). beta applies to the lower
/// blocks; the mirror replaces the rest, so beta C must be symmetric.
template <class Backend, class H>
void gram_lowp(Backend& be, float alpha, batch_view<const H> a, float beta, batch_view<H> c, index t) {
  if (t <= 1) {
    be.gemm_batched_lowp(alpha, op::n, a, op::t, a, beta, c);
    return;
  }
  const index count = a.count(), n = a.rows(), k = a.cols(), s = n / t;
  const auto sp = Backend::space;
  const auto a_block = [&](index i) { return matrix_view<const H>(a.data() + i * s * k, s, k, k, 1, sp); };
  const auto c_block = [&](index i, index j) { return matrix_view<H>(c.data() + i * s * n + j * s, s, s, n, 1, sp); };
  if (count == 1) {
    // Diagonal d: the blocks (i, i - d), evenly spaced in A and in C.
    for (index d = 0; d < t; ++d)
      be.gemm_batched_lowp(alpha, op::n, batch_view<const H>(a_block(d), t - d, s * k), op::t,
                           batch_view<const H>(a_block(0), t - d, s * k), beta,
                           batch_view<H>(c_block(d, 0), t - d, s * n + s));
  } else {
    for (index i = 0; i < t; ++i)
      for (index j = 0; j <= i; ++j)
        be.gemm_batched_lowp(alpha, op::n, batch_view<const H>(a_block(i), count, n * k), op::t,
                             batch_view<const H>(a_block(j), count, n * k), beta,
                             batch_view<H>(c_block(i, j), count, n * n));
  }
  symmetrize_stack(be, uplo::lower, c);
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
