// polar/orthogonalize/gram_newton_schulz.hpp: Newton–Schulz iterated on the
// small Gram matrix instead of the wide one.
//
// For the wide X0 (n x m, n <= m) every iterate is X_k = R_k X0 with R_k a
// polynomial in A0 = X0 X0^T, so all the n x n matrices involved commute and
// the iteration can run on them alone (Dao AI Lab's "Gram Newton–Schulz"):
//
//   P   = a I + b A + c A A          (A = X_k X_k^T, symmetric)
//   R  <- P R                        (R_0 = I: the first product is free)
//   A  <- P P A                      (= X_{k+1} X_{k+1}^T)
//
// and X0 is touched once at the start (A0, n^2 m flops) and once at the end
// (R X0, 2 n^2 m flops). Each step costs about 6 n^3 flops instead of the
// 3 n^2 m + n^3 of the standard form, which pays when m is a few times n.
//
// Rounding errors in A grow with the powers the iteration takes, so the form
// restarts: before the listed steps it forms X = R X0 explicitly, recomputes
// A from it and resets R to I (one restart, before step 2, by default).
// Where the Gram form would cost more flops than the standard form (nearly
// square matrices) it runs the standard form instead, unless told not to.
#pragma once

#include <array>
#include <utility>

#include "polar/core/scratch.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"

namespace polar {

/// Buffers of one Gram-form orthogonalization.
template <class Backend, class T>
struct gram_ns_workspace {
  typename Backend::template buffer<T> x;      ///< the iterate X, count x rows x cols
  typename Backend::template buffer<T> y;      ///< the output X^T or scratch
  typename Backend::template buffer<T> a;      ///< the Gram matrix X X^T
  typename Backend::template buffer<T> p;      ///< the accumulated polynomial Q
  typename Backend::template buffer<T> r;      ///< the Gram matrix after restarts
  typename Backend::template buffer<T> t;      ///< square scratch
  typename Backend::template buffer<T> s;      ///< square scratch
  typename Backend::template buffer<T> norms;  ///< per-matrix norms
  ns_workspace<Backend, T> standard;  ///< used when the standard form is cheaper

  /// Room for `count` matrices of n x m (n <= m).
  void reserve(Backend& be, index count, index n, index m) {
    if (x.size() < count * n * m) {
      x = be.template allocate<T>(count * n * m);
      y = be.template allocate<T>(count * n * m);
    }
    if (a.size() < count * n * n) {
      for (auto* b : {&a, &p, &r, &t, &s}) *b = be.template allocate<T>(count * n * n);
    }
    if (norms.size() < count) norms = be.template allocate<T>(count);
  }
  /// Bytes held.
  std::size_t bytes() const { return detail::buffer_bytes(x, y, a, p, r, t, s, norms) + standard.bytes(); }
};

/// Newton–Schulz in Gram form: the same schedules and the same result as
/// polar::newton_schulz up to rounding, at fewer flops for wide matrices.
struct gram_newton_schulz {
  /// The buffers one orthogonalization needs (the orthogonalizer concept).
  template <class Backend, class T>
  using workspace = gram_ns_workspace<Backend, T>;

  ns_schedule schedule = schedules::jordan5;  ///< coefficients and input scaling
  int iterations = 0;                          ///< 0: the schedule's own count
  /// Steps before which the iteration restarts from X = R X0; 0 entries are
  /// unused (step 0 is always a fresh start).
  std::array<int, 4> restarts{2, 0, 0, 0};
  index symmetric_threshold = 128;  ///< below this n, full GEMMs
  bool fallback = true;             ///< run the standard form where it has fewer flops

  /// The number of steps this orthogonalizer runs.
  constexpr int steps() const noexcept { return iterations > 0 ? iterations : schedule.iterations; }

  /// True when the iteration restarts before step k.
  constexpr bool restarts_at(int k) const noexcept {
    if (k <= 0) return false;
    for (int r : restarts)
      if (r == k) return true;
    return false;
  }

  /// Flops of the Gram form for a rows x cols matrix.
  double gram_flops(index rows, index cols) const noexcept {
    const double n = double(rows < cols ? rows : cols), m = double(rows < cols ? cols : rows);
    const bool sym = index(n) >= symmetric_threshold;
    const double gram_nm = (sym ? 1.0 : 2.0) * n * n * m, sq = (sym ? 1.0 : 2.0) * n * n * n;
    const double prod = 2 * n * n * n;
    double f = gram_nm + 2 * n * n * m;  // A0 and the final R X0
    bool identity = true;
    for (int k = 0; k < steps(); ++k) {
      if (restarts_at(k)) {
        f += 2 * n * n * m + gram_nm;
        identity = true;
      }
      if (schedule.at(k).c != 0.0) f += sq;                       // A A
      if (k + 1 < steps() && !restarts_at(k + 1)) f += sq + prod;  // P P A
      if (!identity) f += prod;                                   // P R
      identity = false;
    }
    return f;
  }

  /// The standard form this policy falls back to.
  newton_schulz standard() const noexcept { return newton_schulz{schedule, iterations, symmetric_threshold}; }

  /// True when this policy runs the Gram form for a rows x cols matrix.
  bool uses_gram(index rows, index cols) const noexcept {
    return !fallback || gram_flops(rows, cols) < standard().flops(rows, cols);
  }

  /// Flops of one orthogonalization as this policy runs it.
  double flops(index rows, index cols) const noexcept {
    return uses_gram(rows, cols) ? gram_flops(rows, cols) : standard().flops(rows, cols);
  }

  /// out <- the approximate polar factor of g (out may not alias g).
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out, workspace<Backend, T>& ws) const {
    detail::check_orthogonalizer_args("polar::gram_newton_schulz", g, out);
    (*this)(be, as_batch(g), as_batch(out), ws);
  }

  /// The same for each matrix of a stack.
  template <class Backend, class T>
  void operator()(Backend& be, in_batch<T> g, batch_view<T> out, workspace<Backend, T>& ws) const {
    static_assert(is_backend_v<Backend>, POLAR_BACKEND_CONCEPT_MESSAGE);
    constexpr const char* opname = "polar::gram_newton_schulz";
    detail::check_orthogonalizer_args(opname, g, out);
    detail::check_schedule(opname, schedule, steps());
    if (schedule.aol)
      detail::raise<unsupported_error>(opname, "schedule '", schedule.name,
                                       "' scales its input by AOL, which polar::newton_schulz implements and the "
                                       "Gram form does not");
    for (int r : restarts)
      if (r < 0) detail::raise<value_error>(opname, "restart steps must be >= 0, got ", r);
    if (g.size() == 0) return;
    if (!uses_gram(g.rows(), g.cols())) {
      standard()(be, g, out, ws.standard);
      return;
    }

    const bool tall = g.rows() > g.cols();
    const auto gw = tall ? g.transpose() : g;
    const auto ow = tall ? out.transpose() : out;
    const index count = g.count(), n = gw.rows(), m = gw.cols();
    ws.reserve(be, count, n, m);
    const auto space = Backend::space;
    auto X = row_major_batch(ws.x.data(), count, n, m, space);
    auto Y = row_major_batch(ws.y.data(), count, n, m, space);
    auto A = row_major_batch(ws.a.data(), count, n, n, space);
    auto P = row_major_batch(ws.p.data(), count, n, n, space);
    auto R = row_major_batch(ws.r.data(), count, n, n, space);
    const auto Tb = row_major_batch(ws.t.data(), count, n, n, space);
    auto S = row_major_batch(ws.s.data(), count, n, n, space);
    detail::scale_input(be, schedule, gw, X, ws.norms.data(), ws.a.data());

    const bool symmetric = n >= symmetric_threshold;
    detail::gram(be, T(1), as_const(X), A, symmetric);
    bool identity = true;  // R = I, not stored
    for (int k = 0; k < steps(); ++k) {
      if (restarts_at(k)) {  // X = R X0, A = X X^T, R = I
        be.gemm_batched(T(1), op::n, as_const(R), op::n, as_const(X), T(0), Y);
        std::swap(X, Y);
        detail::gram(be, T(1), as_const(X), A, symmetric);
        identity = true;
      }
      const ns_step c = schedule.at(k);
      // P = a I + b A + c A A
      if (c.c != 0.0) {
        detail::gram(be, T(c.c), as_const(A), P, symmetric);
        be.axpby(T(c.b), as_const(stacked(A)), T(1), stacked(P));
      } else {
        be.axpby(T(c.b), as_const(stacked(A)), T(0), stacked(P));
      }
      detail::add_to_diagonal(be, T(c.a), P);
      // A <- (P P) A, kept exactly symmetric
      if (k + 1 < steps() && !restarts_at(k + 1)) {
        detail::gram(be, T(1), as_const(P), Tb, symmetric);
        be.gemm_batched(T(1), op::n, as_const(Tb), op::n, as_const(A), T(0), S);
        for (index i = 0; i < count; ++i) be.symmetrize(uplo::lower, S[i]);
        std::swap(A, S);
      }
      // R <- P R
      if (identity) {
        std::swap(R, P);
      } else {
        be.gemm_batched(T(1), op::n, as_const(P), op::n, as_const(R), T(0), S);
        std::swap(R, S);
      }
      identity = false;
    }
    be.gemm_batched(T(1), op::n, as_const(R), op::n, as_const(X), T(0), ow);
  }

  /// With a workspace of its own (allocated per call).
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out) const {
    workspace<Backend, T> ws;
    (*this)(be, g, out, ws);
  }
  /// With a workspace of its own (allocated per call).
  template <class Backend, class T>
  void operator()(Backend& be, in_batch<T> g, batch_view<T> out) const {
    workspace<Backend, T> ws;
    (*this)(be, g, out, ws);
  }
};

}  // namespace polar
