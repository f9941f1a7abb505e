// polar/direction/muon_transforms.hpp: what Muon does to the orthogonalized
// momentum before it scales and applies it.
//
// muon_direction<Orthogonalizer, Compute, Transform> computes, each step,
//
//   M = the momentum (Nesterov or not)        (muon.hpp)
//   M <- transform.prepare(M)                 (before the orthogonalizer)
//   O = orthogonalize(M)
//   O <- transform.apply(M, O, its state)     (after it)
//   W <- W (1 - lr wd) - lr scale(rows, cols) O
//
// so any orthogonalizer (Newton–Schulz with any schedule, its Gram form, the
// exact SVD) and any scale rule combine with any transform. The transforms:
//
//   plain_update   O unchanged: Muon.
//
//   normuon        per-row second moment of O, as in microsoft/dion
//                  normuon.py (Li et al., "NorMuon: Making Muon more
//                  efficient and scalable", arXiv 2510.05491):
//                    v <- beta2 v + (1 - beta2) mean_j O(i, j)^2   (one per row)
//                    O' = O / (sqrt(v) + eps)   (row-wise)
//                    O <- O' |O|_F / max(|O'|_F, 1e-8)
//                  Rows are the stored rows, the output features of a
//                  weight stored (out x in): each neuron's update gets the
//                  same RMS over time, and the whole update keeps Muon's
//                  Frobenius norm. Defaults beta2 0.95, eps 1e-8 (dion's).
//
//   adamuon        element-wise second moment of O with Adam's bias
//                  correction, on the orthogonalized sign of the momentum
//                  (Si, Zhang and Shen, "AdaMuon: Adaptive Muon Optimizer",
//                  arXiv 2507.11005, and its code Chongjie-Si/AdaMuon):
//                    M <- sign(M)                   (before the orthogonalizer)
//                    v <- beta2 v + (1 - beta2) O^2
//                    O' = O / (sqrt(v / (1 - beta2^t)) + eps)
//                    O <- O' sqrt(min(rows, cols)) / (|O'|_F + eps)
//                  O then has the Frobenius norm of a semi-orthogonal
//                  matrix, so with scale_rule::match_adamw_rms (0.2
//                  sqrt(max(rows, cols))) the update's RMS is 0.2, Adam's,
//                  as the paper sets it. Defaults beta2 0.999, eps 1e-8,
//                  sign on.
//
//   polargrad      the polar factor times the nuclear norm of M (Lau, Long
//                  and Su, "PolarGrad", arXiv 2505.21799; NVIDIA
//                  Emerging-Optimizers polargrad.py):
//                    O <- <O, M> O,   <O, M> = tr(O^T M) = |M|_* for O = polar(M)
//                  the steepest-descent step under the spectral norm with
//                  its natural length, which shrinks as the gradient does.
//                  Use it with scale_rule::none. Its length is the
//                  gradient's nuclear norm, so lr is on SGD's scale, not
//                  Muon's: on the GPT example (examples/gpt, 300 steps) the
//                  best of 3e-4 to 10 was 1.
//
// A transform with state keeps it in the iteration precision, beside the
// momentum, and checkpoints save it (under "transform/"). The transforms act
// on each matrix of a stack on its own.
//
// The transform concept, for writing another:
//
//   template <class B, class C> struct state { template <class F> void visit(F&); };
//   template <class B, class C> state<B, C> init(B&, index count, index rows, index cols) const;
//   index aux_size(index count, index rows, index cols) const;   // scratch elements apply() uses
//   template <class B, class C> void prepare(B&, batch_view<C> m) const;
//   template <class B, class C> void apply(B&, in_batch<C> m, batch_view<C> o,
//                                           state<B, C>&, long step, C* aux) const;
//   void check(const char* op) const;   // throws value_error
//
// with m and o contiguous stacks (count x rows x cols), step the 1-based
// number of the step being taken, aux aux_size() elements of the backend's
// memory that the step may overwrite.
#pragma once

#include <cmath>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/tensor.hpp"
#include "polar/direction/detail/common.hpp"

namespace polar {

namespace detail {
/// A transform state that remembers nothing.
template <class Backend, class C>
struct no_transform_state {
  /// Nothing to keep.
  template <class F>
  void visit(F&) {}
};

/// v <- beta2 v + (1 - beta2) r^2 / cols, from row norms r.
template <class C>
struct row_moment_fn {
  C beta2, inv_cols;
  POLAR_HOST_DEVICE C operator()(C v, C r) const { return C(beta2 * v + (C(1) - beta2) * r * r * inv_cols); }
};
/// The same as a step in place: v <- beta2 v + (1 - beta2) r^2 / cols
/// (for_each_element, guarded in a deferred_checks scope).
template <class C>
struct row_moment_step {
  C beta2, inv_cols;
  POLAR_HOST_DEVICE void operator()(C& v, const C& r) const { v = row_moment_fn<C>{beta2, inv_cols}(v, r); }
};
/// 1 / (sqrt(v) + eps).
template <class C>
struct inv_root_fn {
  C eps;
  POLAR_HOST_DEVICE C operator()(C v) const { return C(C(1) / (std::sqrt(v) + eps)); }
};
/// before / max(after, floor): NorMuon's norm-restoring factor.
template <class C>
struct restore_norm_fn {
  C floor;
  POLAR_HOST_DEVICE C operator()(C before, C after) const { return C(before / (after > floor ? after : floor)); }
};
/// sign(x), 0 at 0.
template <class C>
struct sign_fn {
  POLAR_HOST_DEVICE C operator()(C x) const { return x > C(0) ? C(1) : (x < C(0) ? C(-1) : C(0)); }
};
/// v <- beta2 v + (1 - beta2) o^2.
template <class C>
struct second_moment_fn {
  C beta2;
  POLAR_HOST_DEVICE C operator()(C v, C o) const { return C(beta2 * v + (C(1) - beta2) * o * o); }
};
/// The same as a step in place (for_each_element, guarded in a
/// deferred_checks scope).
template <class C>
struct second_moment_step {
  C beta2;
  POLAR_HOST_DEVICE void operator()(C& v, const C& o) const { v = second_moment_fn<C>{beta2}(v, o); }
};
/// part[i] = <o_i, m_i> for each row i of two stacks seen as their rows:
/// PolarGrad's inner product, a row at a time, on the device.
template <class C>
struct row_inner_kernel {
  static constexpr bool never_flags = true;  // nothing to read back
  C* part;
  POLAR_HD_TEMPLATE
  template <class Row, class O, class M>
  POLAR_HOST_DEVICE void operator()(const Row& row, O o, M m) const {
    const double s = row.sum([=](index j) { return o[j] * m[j]; });
    C* const out = part + row.row();
    row.single([=] { *out = C(s); });
  }
};
/// o / (sqrt(v * correction) + eps): Adam's bias-corrected division.
template <class C>
struct adam_divide_fn {
  C correction, eps;
  POLAR_HOST_DEVICE C operator()(C o, C v) const { return C(o / (std::sqrt(v * correction) + eps)); }
};
/// target / (norm + eps).
template <class C>
struct to_norm_fn {
  C target, eps;
  POLAR_HOST_DEVICE C operator()(C norm) const { return C(target / (norm + eps)); }
};

/// The stack o (count x rows x cols, contiguous) seen as count rows of
/// rows * cols: one row per matrix, for per-matrix norms and scales.
template <class Backend, class C>
matrix_view<C> per_matrix(batch_view<C> o) {
  return row_major_view(o.data(), o.count(), o.rows() * o.cols(), -1, Backend::space);
}
/// The same stack seen as count * rows rows of cols: the rows of every
/// matrix.
template <class Backend, class C>
matrix_view<C> all_rows(batch_view<C> o) {
  return row_major_view(o.data(), o.count() * o.rows(), o.cols(), -1, Backend::space);
}
}  // namespace detail

/// What a transform without state, scratch or hyperparameters shares.
///
/// A transform may declare `static constexpr bool deferrable`: true when
/// its apply() reads nothing back to the host and writes its state only
/// through guarded kernels (detail::guarded), so that Muon's step with it
/// runs deferred in a deferred_checks scope. Where it does not say, a
/// transform derived from stateless_transform is deferrable and others are
/// not.
struct stateless_transform {
  /// No state.
  template <class Backend, class C>
  using state = detail::no_transform_state<Backend, C>;
  /// An empty state.
  template <class Backend, class C>
  state<Backend, C> init(Backend&, index, index, index) const { return {}; }
  /// No scratch.
  index aux_size(index, index, index) const { return 0; }
  /// Leaves M.
  template <class Backend, class C>
  void prepare(Backend&, batch_view<C>) const {}
  /// Nothing to check.
  void check(const char*) const {}
};

/// Plain Muon: the orthogonalized momentum unchanged.
struct plain_update : stateless_transform {
  /// Leaves O.
  template <class Backend, class C>
  void apply(Backend&, in_batch<C>, batch_view<C>, state<Backend, C>&, long, C*) const {}
};

/// NorMuon: O normalized row by row by an EMA of its rows' mean squares,
/// then rescaled to O's Frobenius norm (see the header comment).
struct normuon {
  double beta2 = 0.95;  ///< the row moment's decay, in [0, 1)
  double eps = 1e-8;    ///< added to the root, > 0
  /// Steps in a deferred_checks scope: the moment's update is guarded.
  static constexpr bool deferrable = true;

  /// The per-row second moment v (count * rows).
  template <class Backend, class C>
  struct state {
    typename Backend::template buffer<C> v;  ///< one moment per row of each matrix
    /// Lists what a checkpoint keeps.
    template <class F>
    void visit(F& f) {
      f.buffer("v", v);
    }
  };
  /// Zero moments.
  template <class Backend, class C>
  state<Backend, C> init(Backend& be, index count, index rows, index) const {
    return {detail::zero_buffer<C>(be, count * rows, 1)};
  }
  /// Row norms and two per-matrix norms.
  index aux_size(index count, index rows, index) const { return count * rows + 2 * count; }
  /// Leaves M.
  template <class Backend, class C>
  void prepare(Backend&, batch_view<C>) const {}
  /// O <- NorMuon(O).
  template <class Backend, class C>
  void apply(Backend& be, in_batch<C>, batch_view<C> o, state<Backend, C>& s, long, C* aux) const {
    const index count = o.count(), rows = o.rows(), cols = o.cols();
    const auto sp = Backend::space;
    const auto flat = detail::per_matrix<Backend>(o);
    const auto every_row = detail::all_rows<Backend>(o);
    const auto before = vector_view<C>(aux, count, 1, sp);
    const auto after = vector_view<C>(aux + count, count, 1, sp);
    const auto r = vector_view<C>(aux + 2 * count, count * rows, 1, sp);
    const auto rm = row_major_view(aux + 2 * count, count * rows, 1, -1, sp);
    const auto v = row_major_view(s.v.data(), count * rows, 1, -1, sp);
    be.row_norms(as_const(flat), before);
    be.row_norms(as_const(every_row), r);
    be.for_each_element(detail::guarded(detail::row_moment_step<C>{C(beta2), C(1.0 / double(cols))}), v,
                        as_const(rm));
    be.map(detail::inv_root_fn<C>{C(eps)}, rm, as_const(v));
    be.scale_rows(as_const(r), every_row);
    be.row_norms(as_const(flat), after);
    const auto bm = row_major_view(aux, count, 1, -1, sp);
    const auto am = row_major_view(aux + count, count, 1, -1, sp);
    be.map(detail::restore_norm_fn<C>{C(1e-8)}, bm, as_const(bm), as_const(am));
    be.scale_rows(as_const(before), flat);
  }
  /// Throws value_error for beta2 outside [0, 1) or eps <= 0.
  void check(const char* op) const {
    detail::check_unit_interval(op, "normuon.beta2", beta2);
    detail::check_positive(op, "normuon.eps", eps);
  }
};

/// AdaMuon: Adam's element-wise second moment on the orthogonalized sign of
/// the momentum, rescaled to a semi-orthogonal matrix's norm (see the header
/// comment).
struct adamuon {
  double beta2 = 0.999;  ///< the moment's decay, in [0, 1)
  double eps = 1e-8;     ///< added to the root and to the norm, > 0
  bool sign = true;      ///< orthogonalize sign(M) (the paper's); false: M itself (the code's)
  /// Steps in a deferred_checks scope: the moment's update is guarded.
  static constexpr bool deferrable = true;

  /// The element-wise second moment v (count x rows x cols).
  template <class Backend, class C>
  struct state {
    typename Backend::template buffer<C> v;  ///< one moment per entry
    /// Lists what a checkpoint keeps.
    template <class F>
    void visit(F& f) {
      f.buffer("v", v);
    }
  };
  /// Zero moments.
  template <class Backend, class C>
  state<Backend, C> init(Backend& be, index count, index rows, index cols) const {
    return {detail::zero_buffer<C>(be, count * rows, cols)};
  }
  /// One norm per matrix.
  index aux_size(index count, index, index) const { return count; }
  /// M <- sign(M) when `sign`.
  template <class Backend, class C>
  void prepare(Backend& be, batch_view<C> m) const {
    if (sign) {
      const auto flat = detail::per_matrix<Backend>(m);
      be.map(detail::sign_fn<C>{}, flat, as_const(flat));
    }
  }
  /// O <- AdaMuon(O) at step `step` (1-based).
  template <class Backend, class C>
  void apply(Backend& be, in_batch<C>, batch_view<C> o, state<Backend, C>& s, long step, C* aux) const {
    const index count = o.count(), rows = o.rows(), cols = o.cols();
    const auto sp = Backend::space;
    const auto flat = detail::per_matrix<Backend>(o);
    const auto v = row_major_view(s.v.data(), count, rows * cols, -1, sp);
    be.for_each_element(detail::guarded(detail::second_moment_step<C>{C(beta2)}), v, as_const(flat));
    const double correction = 1.0 / (1.0 - std::pow(beta2, double(step)));
    be.map(detail::adam_divide_fn<C>{C(correction), C(eps)}, flat, as_const(flat), as_const(v));
    const auto norms = vector_view<C>(aux, count, 1, sp);
    const auto nm = row_major_view(aux, count, 1, -1, sp);
    be.row_norms(as_const(flat), norms);
    const double target = std::sqrt(double(rows < cols ? rows : cols));
    be.map(detail::to_norm_fn<C>{C(target), C(eps)}, nm, as_const(nm));
    be.scale_rows(as_const(norms), flat);
  }
  /// Throws value_error for beta2 outside [0, 1) or eps <= 0.
  void check(const char* op) const {
    detail::check_unit_interval(op, "adamuon.beta2", beta2);
    detail::check_positive(op, "adamuon.eps", eps);
  }
};

/// PolarGrad: O times the nuclear norm of M, <O, M> (see the header comment).
/// The inner products stay on the device: each row's (a row kernel), then
/// each matrix's sum of its rows'.
struct polargrad : stateless_transform {
  /// The rows' inner products and one per matrix.
  index aux_size(index count, index rows, index) const { return count * rows + count; }
  /// O[k] <- <O[k], M[k]> O[k] for each matrix of the stack.
  template <class Backend, class C>
  void apply(Backend& be, in_batch<C> m, batch_view<C> o, state<Backend, C>&, long, C* aux) const {
    const index count = o.count(), rows = o.rows();
    const auto sp = Backend::space;
    be.for_each_row(detail::row_inner_kernel<C>{aux}, as_const(detail::all_rows<Backend>(o)),
                    detail::all_rows<Backend>(m));
    const auto nuclear = vector_view<C>(aux + count * rows, count, 1, sp);
    be.row_sums(as_const(row_major_view(aux, count, rows, -1, sp)), nuclear);
    be.scale_rows(as_const(nuclear), detail::per_matrix<Backend>(o));
  }
};

}  // namespace polar
