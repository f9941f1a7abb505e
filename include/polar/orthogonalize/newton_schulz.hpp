// polar/orthogonalize/newton_schulz.hpp: the orthogonal polar factor by
// Newton–Schulz iteration, on any backend.
//
// For G (rows x cols) the iteration runs on the wide orientation X (n x m,
// n = min(rows, cols)): a tall G is handled as its transpose, with no copy
// beyond the first scaling. Each step is
//
//   A = X X^T                 syrk: n^2 m flops, one triangle
//   B = b A + c A A           syrk on A (A is symmetric, so A A = A A^T):
//                             n^3 flops
//   X <- a X + B X            gemm: 2 n^2 m flops
//
// so a step costs 3 n^2 m + n^3 flops instead of the 4 n^2 m + 2 n^3 of
// three general products. Below n = symmetric_threshold the symmetric
// products are done as full GEMMs, which are faster there.
//
// A zero G gives a zero result, never NaN.
#pragma once

#include <utility>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/orthogonalize/schedules.hpp"

namespace polar {

/// Buffers of one orthogonalization, in the backend's memory; reused across
/// calls of the same or smaller size, so a training step allocates nothing
/// after its first.
template <class Backend, class T>
struct ns_workspace {
  typename Backend::template buffer<T> x, y, a, b;

  void reserve(Backend& be, index n, index m) {
    if (x.size() < n * m) {
      x = be.template allocate<T>(n * m);
      y = be.template allocate<T>(n * m);
    }
    if (a.size() < n * n) {
      a = be.template allocate<T>(n * n);
      b = be.template allocate<T>(n * n);
    }
  }
};

/// Newton–Schulz orthogonalizer with a coefficient schedule.
///
/// `polar::newton_schulz{polar::schedules::polar_express5}` or with a
/// user-supplied ns_schedule. `iterations` overrides the schedule's default
/// (0 keeps it).
struct newton_schulz {
  /// The buffers one orthogonalization needs (the orthogonalizer concept).
  template <class Backend, class T>
  using workspace = ns_workspace<Backend, T>;

  ns_schedule schedule = schedules::jordan5;  ///< coefficients and input scaling
  int iterations = 0;                          ///< 0: the schedule's own count
  index symmetric_threshold = 128;             ///< below this n, full GEMMs

  /// The number of steps this orthogonalizer runs.
  constexpr int steps() const noexcept { return iterations > 0 ? iterations : schedule.iterations; }

  /// out = polar factor of g, approximately. out has g's shape and may not
  /// share memory with it.
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out, ns_workspace<Backend, T>& ws) const {
    static_assert(is_backend_v<Backend>, POLAR_BACKEND_CONCEPT_MESSAGE);
    constexpr const char* opname = "polar::newton_schulz";
    check_input(opname, "G", g);
    check_output(opname, "out", out);
    check_same_shape(opname, "out", out, "G", g);
    check_no_alias(opname, "out", out, "G", g);
    if (schedule.count < 1 || schedule.count > int(ns_schedule::max_steps))
      detail::raise<value_error>(opname, "schedule '", schedule.name, "' has ", schedule.count,
                                 " steps; it needs 1 to ", int(ns_schedule::max_steps));
    if (steps() < 1) detail::raise<value_error>(opname, "iterations must be positive, got ", steps());
    if (g.empty()) return;

    // Work on the wide orientation.
    const bool tall = g.rows() > g.cols();
    const auto gw = tall ? g.transpose() : g;
    const auto ow = tall ? out.transpose() : out;
    const index n = gw.rows(), m = gw.cols();
    ws.reserve(be, n, m);
    auto X = row_major_view(ws.x.data(), n, m, -1, Backend::space);
    auto Y = row_major_view(ws.y.data(), n, m, -1, Backend::space);
    auto A = row_major_view(ws.a.data(), n, n, -1, Backend::space);
    auto B = row_major_view(ws.b.data(), n, n, -1, Backend::space);

    const T norm = be.norm(gw);
    if (!(norm > T(0))) {  // zero (or NaN, which the fill keeps visible)
      be.fill(out, norm == T(0) ? T(0) : norm);
      return;
    }
    be.axpby(T(1.0 / (schedule.norm_scale * double(norm) + schedule.eps)), gw, T(0), X);

    const bool symmetric = n >= symmetric_threshold;
    for (int k = 0; k < steps(); ++k) {
      const ns_step s = schedule.at(k);
      // A = X X^T
      if (symmetric) {
        be.syrk(uplo::lower, T(1), op::n, as_const(X), T(0), A);
        be.symmetrize(uplo::lower, A);
      } else {
        be.gemm(T(1), op::n, as_const(X), op::t, as_const(X), T(0), A);
      }
      // B = b A + c A A  (A symmetric: A A = A A^T)
      if (s.c != 0.0) {
        if (symmetric) {
          be.syrk(uplo::lower, T(s.c), op::n, as_const(A), T(0), B);
          be.symmetrize(uplo::lower, B);
        } else {
          be.gemm(T(s.c), op::n, as_const(A), op::t, as_const(A), T(0), B);
        }
        be.axpby(T(s.b), as_const(A), T(1), B);
      } else {
        be.axpby(T(s.b), as_const(A), T(0), B);
      }
      // Y = a X + B X
      be.axpby(T(s.a), as_const(X), T(0), Y);
      be.gemm(T(1), op::n, as_const(B), op::n, as_const(X), T(1), Y);
      std::swap(X, Y);
    }
    be.copy(as_const(X), ow);
  }

  /// Convenience form that allocates its own workspace.
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out) const {
    ns_workspace<Backend, T> ws;
    (*this)(be, g, out, ws);
  }
};

/// The exact polar factor U V^T through the backend's SVD: the reference the
/// iterations are measured against, and an orthogonalizer of its own for
/// small matrices.
struct svd_polar {
  /// svd_polar allocates per call; it needs no workspace.
  template <class Backend, class T>
  struct workspace {};

  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out, workspace<Backend, T>&) const {
    (*this)(be, g, out);
  }

  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out) const {
    constexpr const char* opname = "polar::svd_polar";
    check_input(opname, "G", g);
    check_output(opname, "out", out);
    check_same_shape(opname, "out", out, "G", g);
    if (g.empty()) return;
    const index m = g.rows(), n = g.cols(), k = m < n ? m : n;
    auto ub = be.template allocate<T>(m * k);
    auto vb = be.template allocate<T>(n * k);
    auto sb = be.template allocate<T>(k);
    const auto U = row_major_view(ub.data(), m, k, -1, Backend::space);
    const auto V = row_major_view(vb.data(), n, k, -1, Backend::space);
    be.svd(g, U, vector_view<T>(sb.data(), k, 1, Backend::space), V);
    be.gemm(T(1), op::n, as_const(U), op::t, as_const(V), T(0), out);
  }
};

}  // namespace polar
