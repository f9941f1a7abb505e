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
//
// With `precision` float16 (the published configuration) or bfloat16 the
// iteration runs in 16 bits as the standard form's does: X0 scaled in T,
// then every matrix in 16 bits, every product a 16-bit GEMM with float
// accumulation, the symmetric ones in row blocks (newton_schulz::blocks).
#pragma once

#include <array>
#include <utility>

#include "polar/core/scratch.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"

namespace polar {

namespace detail {
/// The 16-bit matrices of one Gram-form orthogonalization (H: bfloat16 or
/// float16), named as gram_ns_workspace's.
template <class Backend, class H>
struct lowp_gram_iterate {
  typename Backend::template buffer<H> x, y, a, p, r, t, s;
  /// Room for `count` matrices of n x m (n <= m).
  void reserve(Backend& be, index count, index n, index m) {
    if (x.size() < count * n * m) {
      x = be.template allocate<H>(count * n * m);
      y = be.template allocate<H>(count * n * m);
    }
    if (a.size() < count * n * n)
      for (auto* b : {&a, &p, &r, &t, &s}) *b = be.template allocate<H>(count * n * n);
  }
  std::size_t bytes() const { return buffer_bytes(x, y, a, p, r, t, s); }
};
}  // namespace detail

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
  detail::lowp_gram_iterate<Backend, bfloat16> bf16;  ///< the matrices in bfloat16 (precision bfloat16)
  detail::lowp_gram_iterate<Backend, float16> fp16;   ///< the matrices in float16 (precision float16)

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
  std::size_t bytes() const {
    return detail::buffer_bytes(x, y, a, p, r, t, s, norms) + standard.bytes() + bf16.bytes() + fp16.bytes();
  }
  /// The 16-bit matrices of type H (bfloat16 or float16).
  template <class H>
  detail::lowp_gram_iterate<Backend, H>& lowp() {
    if constexpr (std::is_same_v<H, bfloat16>)
      return bf16;
    else
      return fp16;
  }
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
  /// The number format of the iteration (as newton_schulz::precision);
  /// the published Gram form iterates in float16.
  ns_precision precision = ns_precision::native;
  int blocks = 0;  ///< the 16-bit symmetric products' row blocks (as newton_schulz::blocks)

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
    const double sym =
        detail::symmetric_share(index(n), precision != ns_precision::native, symmetric_threshold, blocks);
    const double gram_nm = 2.0 * sym * n * n * m, sq = 2.0 * sym * n * n * n;
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
  newton_schulz standard() const noexcept {
    return newton_schulz{schedule, iterations, symmetric_threshold, precision, blocks};
  }

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
    if (detail::dispatch_lowp<Backend>(precision, opname, [&](auto h) { run_lowp<decltype(h)>(be, gw, ow, ws); }))
      return;
    ws.reserve(be, count, n, m);
    const auto space = Backend::space;
    auto X = row_major_batch(ws.x.data(), count, n, m, space);
    auto Y = row_major_batch(ws.y.data(), count, n, m, space);
    detail::scale_input(be, schedule, gw, X, ws.norms.data(), ws.a.data());
    auto R = iterate(detail::native_ops<Backend, T>{be, n >= symmetric_threshold}, X, Y,
                     row_major_batch(ws.a.data(), count, n, n, space),
                     row_major_batch(ws.p.data(), count, n, n, space), row_major_batch(ws.r.data(), count, n, n, space),
                     row_major_batch(ws.t.data(), count, n, n, space), row_major_batch(ws.s.data(), count, n, n, space));
    be.gemm_batched(T(1), op::n, as_const(R), op::n, as_const(X), T(0), ow);
  }

  /// The 16-bit Gram form on the wide orientation gw -> ow: the input
  /// scaled in T, then every matrix in H, the result widened back to T.
  template <class H, class Backend, class T>
  void run_lowp(Backend& be, batch_view<const T> gw, batch_view<T> ow, workspace<Backend, T>& ws) const {
    const index count = gw.count(), n = gw.rows(), m = gw.cols();
    ws.reserve(be, count, n, m);
    auto& h = ws.template lowp<H>();
    h.reserve(be, count, n, m);
    const auto sp = Backend::space;
    const auto X = row_major_batch(ws.x.data(), count, n, m, sp);
    detail::scale_input(be, schedule, gw, X, ws.norms.data(), ws.a.data());
    auto HX = row_major_batch(h.x.data(), count, n, m, sp);
    be.map(detail::to_lowp_fn<H>{}, stacked(HX), as_const(stacked(X)));
    auto HY = row_major_batch(h.y.data(), count, n, m, sp);
    auto R = iterate(detail::lowp_ops<Backend, H>{be, detail::symmetric_blocks(n, blocks)}, HX, HY,
                     row_major_batch(h.a.data(), count, n, n, sp), row_major_batch(h.p.data(), count, n, n, sp),
                     row_major_batch(h.r.data(), count, n, n, sp), row_major_batch(h.t.data(), count, n, n, sp),
                     row_major_batch(h.s.data(), count, n, n, sp));
    // The last product X = R X0 in 16 bits (into the spare n x m stack),
    // then widened into the caller's out.
    be.gemm_batched_lowp(1.0f, op::n, as_const(R), op::n, as_const(HX), 0.0f, HY);
    detail::for_stack([&](auto in, auto o) { be.map(detail::from_lowp_fn<T>{}, o, in); }, as_const(HY), ow);
  }

  /// The steps of the Gram form on the scaled input X (n x m per matrix),
  /// in the number format of `ops`, with Y another n x m stack and A, P,
  /// R, Tb, S n x n ones. Returns the stack that holds R; the result is
  /// R X with X as it stands on return (restarts swap X and Y, so Y is
  /// then the spare one).
  template <class Ops, class E>
  batch_view<E> iterate(const Ops& ops, batch_view<E>& X, batch_view<E>& Y, batch_view<E> A, batch_view<E> P,
                        batch_view<E> R, batch_view<E> Tb, batch_view<E> S) const {
    ops.gram(as_const(X), A);
    bool identity = true;  // R = I, not stored
    for (int k = 0; k < steps(); ++k) {
      if (restarts_at(k)) {  // X = R X0, A = X X^T, R = I
        ops.product(as_const(R), as_const(X), Y);
        std::swap(X, Y);
        ops.gram(as_const(X), A);
        identity = true;
      }
      ops.polynomial(schedule.at(k), as_const(A), P);  // P = a I + b A + c A A
      // A <- (P P) A, kept exactly symmetric
      if (k + 1 < steps() && !restarts_at(k + 1)) {
        ops.gram(as_const(P), Tb);
        ops.product(as_const(Tb), as_const(A), S);
        ops.symmetrize(S);
        std::swap(A, S);
      }
      // R <- P R
      if (identity) {
        std::swap(R, P);
      } else {
        ops.product(as_const(P), as_const(R), S);
        std::swap(R, S);
      }
      identity = false;
    }
    return R;
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
