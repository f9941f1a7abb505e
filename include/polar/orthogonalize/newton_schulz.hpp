// polar/orthogonalize/newton_schulz.hpp: the orthogonal polar factor by
// Newton–Schulz iteration, on any backend.
//
// For G (rows x cols) the iteration runs on the wide orientation X (n x m,
// n = min(rows, cols)): a tall G is handled as its transpose, with no copy
// beyond the first scaling. Each step is
//
//   A = X X^T                 syrk: n^2 m flops, one triangle
//   B = a I + b A + c A A     syrk on A (A is symmetric, so A A = A A^T):
//                             n^3 flops
//   X <- B X                  gemm: 2 n^2 m flops
//
// so a step costs 3 n^2 m + n^3 flops instead of the 4 n^2 m + 2 n^3 of
// three general products. Below n = symmetric_threshold the symmetric
// products are done as full GEMMs, which are faster there.
//
// A zero G gives a zero result, never NaN.
//
// With `precision` bfloat16 or float16, the iterate X, A and B are kept in
// 16 bits and every product is a 16-bit GEMM with float accumulation,
// rounded once (the backend's gemm_batched_lowp: tensor cores on the GPU),
// as the GPU Muon implementations iterate; the input scaling (and AOL) is
// done in T first, and the result is widened back to T. cuBLAS has no
// 16-bit syrk: the symmetric products compute the blocks on and below the
// diagonal of a t x t blocking (strided-batched 16-bit GEMMs) and mirror
// them (`blocks`; 5/8 of a GEMM's flops at t = 4), and B = b A + c A A is
// one such product with A as the accumulated term.
#pragma once

#include <limits>
#include <utility>

#include "polar/core/scratch.hpp"
#include "polar/backend/concept.hpp"
#include "polar/core/error.hpp"
#include "polar/core/lowp.hpp"
#include "polar/core/check.hpp"
#include "polar/orthogonalize/detail/stack_ops.hpp"
#include "polar/orthogonalize/schedules.hpp"

namespace polar {

/// The number format Newton–Schulz iterates in.
enum class ns_precision {
  native,    ///< the input's type T
  bfloat16,  ///< 16-bit bfloat16, float accumulation (tensor cores)
  float16    ///< IEEE half precision, float accumulation (tensor cores)
};

namespace detail {
/// Whether a backend multiplies 16-bit stacks (gemm_batched_lowp).
template <class Backend, class = void>
struct has_gemm_lowp : std::false_type {};
template <class Backend>
struct has_gemm_lowp<Backend, std::void_t<decltype(std::declval<Backend&>().gemm_batched_lowp(
                                  1.0f, op::n, std::declval<batch_view<const bfloat16>>(), op::n,
                                  std::declval<batch_view<const bfloat16>>(), 0.0f,
                                  std::declval<batch_view<bfloat16>>()))>> : std::true_type {};

/// Calls f(H{}) with H the 16-bit type that `precision` names and returns
/// true, or returns false for the native precision; a backend without
/// gemm_batched_lowp raises unsupported_error for a 16-bit one.
template <class Backend, class F>
bool dispatch_lowp(ns_precision precision, const char* opname, F&& f) {
  if (precision == ns_precision::native) return false;
  if constexpr (has_gemm_lowp<Backend>::value) {
    if (precision == ns_precision::bfloat16)
      f(bfloat16{});
    else
      f(float16{});
    return true;
  } else {
    raise<unsupported_error>(opname, "16-bit iteration needs a backend with gemm_batched_lowp; this one has none "
                                     "(use ns_precision::native)");
  }
}

/// Room for `count` matrices of n x m (n <= m) in the iterate X and the
/// next one (x, y), and of n x n in A and B (a, b).
template <class Backend, class Buffer>
void reserve_iterate(Backend& be, index count, index n, index m, Buffer& x, Buffer& y, Buffer& a, Buffer& b) {
  using E = std::remove_pointer_t<decltype(x.data())>;
  if (x.size() < count * n * m) {
    x = be.template allocate<E>(count * n * m);
    y = be.template allocate<E>(count * n * m);
  }
  if (a.size() < count * n * n) {
    a = be.template allocate<E>(count * n * n);
    b = be.template allocate<E>(count * n * n);
  }
}

/// The 16-bit iterate of one orthogonalization: X, the next X, A and B.
template <class Backend, class H>
struct lowp_iterate {
  typename Backend::template buffer<H> x, y, a, b;
  /// Room for `count` matrices of n x m (n <= m).
  void reserve(Backend& be, index count, index n, index m) { reserve_iterate(be, count, n, m, x, y, a, b); }
  std::size_t bytes() const { return buffer_bytes(x, y, a, b); }
};

/// The products of an iteration in T: the backend's own (syrk and a
/// mirror for the symmetric ones from symmetric_threshold on).
template <class Backend, class T>
struct native_ops {
  using value_type = T;
  Backend& be;
  bool symmetric;
  /// C = X X^T.
  void gram(batch_view<const T> x, batch_view<T> c) const { detail::gram(be, T(1), x, c, symmetric); }
  /// Z = X Y.
  void product(batch_view<const T> x, batch_view<const T> y, batch_view<T> z) const {
    be.gemm_batched(T(1), op::n, x, op::n, y, T(0), z);
  }
  /// P = a I + b A + c A A for the symmetric A.
  void polynomial(const ns_step& s, batch_view<const T> a, batch_view<T> p) const {
    if (s.c != 0.0) {
      detail::gram(be, T(s.c), a, p, symmetric);
      be.axpby(T(s.b), stacked(a), T(1), stacked(p));
    } else {
      be.axpby(T(s.b), stacked(a), T(0), stacked(p));
    }
    add_to_diagonal(be, T(s.a), p);
  }
  /// The lower triangles copied onto the upper ones.
  void symmetrize(batch_view<T> c) const { symmetrize_stack(be, uplo::lower, c); }
};

/// The products of an iteration in 16 bits (H): gemm_batched_lowp, the
/// symmetric ones in `blocks` row blocks (gram_lowp).
template <class Backend, class H>
struct lowp_ops {
  using value_type = H;
  Backend& be;
  index blocks;
  void gram(batch_view<const H> x, batch_view<H> c) const { gram_lowp(be, 1.0f, x, 0.0f, c, blocks); }
  void product(batch_view<const H> x, batch_view<const H> y, batch_view<H> z) const {
    be.gemm_batched_lowp(1.0f, op::n, x, op::n, y, 0.0f, z);
  }
  /// P = a I + b A + c A A: A copied into P, then one product that adds it.
  void polynomial(const ns_step& s, batch_view<const H> a, batch_view<H> p) const {
    if (s.c != 0.0) {
      be.map(lowp_scale_fn<H>{1.0f}, stacked(p), stacked(a));
      gram_lowp(be, float(s.c), a, float(s.b), p, blocks);
    } else {
      be.map(lowp_scale_fn<H>{float(s.b)}, stacked(p), stacked(a));
    }
    map_diagonal(be, lowp_shift_fn<H>{float(s.a)}, p);
  }
  void symmetrize(batch_view<H> c) const { symmetrize_stack(be, uplo::lower, c); }
};

/// The fraction of a GEMM's flops that a symmetric product of an n x n
/// result costs: a half for syrk (native, from the threshold on), the
/// blocks' share in 16 bits, else one.
inline double symmetric_share(index n, bool lowp, index threshold, int blocks) noexcept {
  if (lowp) return symmetric_block_fraction(symmetric_blocks(n, blocks));
  return n >= threshold ? 0.5 : 1.0;
}
}  // namespace detail

/// Buffers of one orthogonalization, in the backend's memory; reused across
/// calls of the same or smaller size, so a training step allocates nothing
/// after its first.
template <class Backend, class T>
struct ns_workspace {
  typename Backend::template buffer<T> x;      ///< the iterate X
  typename Backend::template buffer<T> y;      ///< the next iterate
  typename Backend::template buffer<T> a;      ///< the Gram matrix X X^T
  typename Backend::template buffer<T> b;      ///< b A + c A^2
  typename Backend::template buffer<T> norms;  ///< per-matrix norms
  typename Backend::template buffer<T> d;      ///< AOL's row scales, n per matrix
  detail::lowp_iterate<Backend, bfloat16> bf16;  ///< the iterate in bfloat16 (precision bfloat16)
  detail::lowp_iterate<Backend, float16> fp16;   ///< the iterate in float16 (precision float16)

  /// Room for `count` matrices of n x m (n <= m).
  void reserve(Backend& be, index count, index n, index m) {
    detail::reserve_iterate(be, count, n, m, x, y, a, b);
    if (norms.size() < count) norms = be.template allocate<T>(count);
  }
  /// Room for AOL's row scales of `count` matrices of n rows.
  void reserve_scales(Backend& be, index count, index n) {
    if (d.size() < count * n) d = be.template allocate<T>(count * n);
  }
  /// Bytes held.
  std::size_t bytes() const { return detail::buffer_bytes(x, y, a, b, norms, d) + bf16.bytes() + fp16.bytes(); }
  /// The 16-bit iterate of type H (bfloat16 or float16).
  template <class H>
  detail::lowp_iterate<Backend, H>& lowp() {
    if constexpr (std::is_same_v<H, bfloat16>)
      return bf16;
    else
      return fp16;
  }
};

/// Newton–Schulz orthogonalizer with a coefficient schedule.
///
/// `polar::newton_schulz{polar::schedules::polar_express5}` or with a
/// user-supplied ns_schedule. `iterations` overrides the schedule's default
/// (0 keeps it). Takes one matrix or a stack of them (experts, heads); each
/// matrix of a stack is normalized and orthogonalized on its own.
struct newton_schulz {
  /// The buffers one orthogonalization needs (the orthogonalizer concept).
  template <class Backend, class T>
  using workspace = ns_workspace<Backend, T>;

  ns_schedule schedule = schedules::jordan5;  ///< coefficients and input scaling
  int iterations = 0;                          ///< 0: the schedule's own count
  index symmetric_threshold = 128;             ///< below this n, full GEMMs
  /// The format of the iterate and the products: native (T), or 16 bits
  /// with float accumulation on a backend with gemm_batched_lowp.
  ns_precision precision = ns_precision::native;
  /// The 16-bit symmetric products' row blocks (detail::symmetric_blocks):
  /// 0 polar's choice, 1 one GEMM, t > 1 the blocks on and below the
  /// diagonal of t x t, mirrored.
  int blocks = 0;

  /// The number of steps this orthogonalizer runs.
  constexpr int steps() const noexcept { return iterations > 0 ? iterations : schedule.iterations; }

  /// Flops of one orthogonalization of a rows x cols matrix, as this policy
  /// computes it (symmetric products counted at their own cost; steps
  /// without a quintic term skip A A).
  double flops(index rows, index cols) const noexcept {
    const double n = double(rows < cols ? rows : cols), m = double(rows < cols ? cols : rows);
    const double sym =
        detail::symmetric_share(index(n), precision != ns_precision::native, symmetric_threshold, blocks);
    double f = 0;
    for (int k = 0; k < steps(); ++k)
      f += (2.0 * sym + 2.0) * n * n * m + (schedule.at(k).c != 0.0 ? 2.0 * sym * n * n * n : 0.0);
    return f;
  }

  /// out = polar factor of g, approximately. out has g's shape and may not
  /// share memory with it.
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out, ns_workspace<Backend, T>& ws) const {
    detail::check_orthogonalizer_args("polar::newton_schulz", g, out);
    (*this)(be, as_batch(g), as_batch(out), ws);
  }

  /// out[k] = polar factor of g[k] for every matrix of the stack.
  template <class Backend, class T>
  void operator()(Backend& be, in_batch<T> g, batch_view<T> out, ns_workspace<Backend, T>& ws) const {
    static_assert(is_backend_v<Backend>, POLAR_BACKEND_CONCEPT_MESSAGE);
    constexpr const char* opname = "polar::newton_schulz";
    detail::check_orthogonalizer_args(opname, g, out);
    detail::check_schedule(opname, schedule, steps());
    if (g.size() == 0) return;

    // Work on the wide orientation.
    const bool tall = g.rows() > g.cols();
    const auto gw = tall ? g.transpose() : g;
    const auto ow = tall ? out.transpose() : out;
    const index count = g.count(), n = gw.rows(), m = gw.cols();
    if (detail::dispatch_lowp<Backend>(precision, opname,
                                       [&](auto h) { iterate_lowp<decltype(h)>(be, gw, ow, ws); }))
      return;
    ws.reserve(be, count, n, m);
    auto X = row_major_batch(ws.x.data(), count, n, m, Backend::space);
    auto Y = row_major_batch(ws.y.data(), count, n, m, Backend::space);
    const auto A = row_major_batch(ws.a.data(), count, n, n, Backend::space);
    const auto B = row_major_batch(ws.b.data(), count, n, n, Backend::space);
    const bool symmetric = n >= symmetric_threshold;
    if (schedule.aol) {
      // X = D G, A = X X^T = D (G G^T) D: the first step's Gram matrix.
      ws.reserve_scales(be, count, n);
      detail::for_stack([&](auto in, auto o) { be.copy(in, o); }, gw, X);
      detail::gram(be, T(1), as_const(X), A, symmetric);
      detail::aol_scale(be, schedule.eps, X, A, B, ws.d.data());
    } else {
      detail::scale_input(be, schedule, gw, X, ws.norms.data(), ws.a.data());
    }

    // Where `out` is laid out as the iterate is (a row-major wide matrix, or
    // a stack of them one after the other), the last product writes into it
    // and the copy of the result is saved.
    const auto o0 = ow.matrix(0);
    const bool direct = steps() > 0 && o0.col_stride() == 1 && o0.row_stride() == m &&
                        (count == 1 || ow.batch_stride() == n * m);
    iterate(detail::native_ops<Backend, T>{be, symmetric}, schedule.aol, X, Y, A, B, direct ? &ow : nullptr);
    if (!direct) detail::for_stack([&](auto in, auto o) { be.copy(in, o); }, as_const(X), ow);
  }

  /// The steps on the scaled input X (with A = X X^T already formed when
  /// `a_ready`), in the number format of `ops`; the result ends in X, or in
  /// *last (then X views it) where `last` is given.
  template <class Ops, class E>
  void iterate(const Ops& ops, bool a_ready, batch_view<E>& X, batch_view<E>& Y, batch_view<E> A,
               batch_view<E> B, const batch_view<E>* last = nullptr) const {
    for (int k = 0; k < steps(); ++k) {
      if (k > 0 || !a_ready) ops.gram(as_const(X), A);  // A = X X^T
      // B = a I + b A + c A A (A symmetric: A A = A A^T); then Y = B X,
      // the a X term riding on the product instead of a pass of its own.
      ops.polynomial(schedule.at(k), as_const(A), B);
      if (last && k + 1 == steps()) {
        ops.product(as_const(B), as_const(X), *last);
        X = *last;
      } else {
        ops.product(as_const(B), as_const(X), Y);
        std::swap(X, Y);
      }
    }
  }

  /// The 16-bit iteration (see the header comment) on the wide orientation
  /// gw -> ow.
  template <class H, class Backend, class T>
  void iterate_lowp(Backend& be, batch_view<const T> gw, batch_view<T> ow, ns_workspace<Backend, T>& ws) const {
    const index count = gw.count(), n = gw.rows(), m = gw.cols();
    ws.reserve(be, count, n, m);
    auto& h = ws.template lowp<H>();
    h.reserve(be, count, n, m);
    const auto sp = Backend::space;
    const auto X = row_major_batch(ws.x.data(), count, n, m, sp);
    const auto A = row_major_batch(ws.a.data(), count, n, n, sp);
    const auto B = row_major_batch(ws.b.data(), count, n, n, sp);
    auto HX = row_major_batch(h.x.data(), count, n, m, sp);
    auto HY = row_major_batch(h.y.data(), count, n, m, sp);
    const auto HA = row_major_batch(h.a.data(), count, n, n, sp);
    const auto HB = row_major_batch(h.b.data(), count, n, n, sp);
    // The scaled input (and AOL's first Gram matrix) in T, then 16 bits.
    if (schedule.aol) {
      ws.reserve_scales(be, count, n);
      detail::for_stack([&](auto in, auto o) { be.copy(in, o); }, gw, X);
      detail::gram(be, T(1), as_const(X), A, n >= symmetric_threshold);
      detail::aol_scale(be, schedule.eps, X, A, B, ws.d.data());
      be.map(detail::to_lowp_fn<H>{}, stacked(HA), as_const(stacked(A)));
    } else {
      detail::scale_input(be, schedule, gw, X, ws.norms.data(), ws.a.data());
    }
    be.map(detail::to_lowp_fn<H>{}, stacked(HX), as_const(stacked(X)));
    iterate(detail::lowp_ops<Backend, H>{be, detail::symmetric_blocks(n, blocks)}, schedule.aol, HX, HY, HA, HB);
    detail::for_stack([&](auto in, auto o) { be.map(detail::from_lowp_fn<T>{}, o, in); }, as_const(HX), ow);
  }

  /// Convenience forms that allocate their own workspace.
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out) const {
    ns_workspace<Backend, T> ws;
    (*this)(be, g, out, ws);
  }
  /// With a workspace of its own (allocated per call).
  template <class Backend, class T>
  void operator()(Backend& be, in_batch<T> g, batch_view<T> out) const {
    ns_workspace<Backend, T> ws;
    (*this)(be, g, out, ws);
  }
};

/// The exact polar factor U V^T through the backend's SVD: the reference the
/// iterations are measured against, and an orthogonalizer of its own for
/// small matrices. Singular values at or below max(rows, cols) * epsilon *
/// the largest count as zero and their vectors are dropped, so a
/// rank-deficient G maps to the partial isometry on its range (what the
/// iterations converge to) and a zero G to zero.
struct svd_polar {
  /// svd_polar allocates per call; it needs no workspace.
  template <class Backend, class T>
  struct workspace {};

  /// out <- the exact polar factor U V^T of g's SVD.
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out, workspace<Backend, T>&) const {
    (*this)(be, g, out);
  }

  /// The same for each matrix of a stack.
  template <class Backend, class T>
  void operator()(Backend& be, in_batch<T> g, batch_view<T> out, workspace<Backend, T>&) const {
    (*this)(be, g, out);
  }

  /// out = U V^T for the thin SVD g = U S V^T.
  template <class Backend, class T>
  void operator()(Backend& be, in_matrix<T> g, matrix_view<T> out) const {
    detail::check_orthogonalizer_args("polar::svd_polar", g, out);
    (*this)(be, as_batch(g), as_batch(out));
  }

  /// out[k] = U_k V_k^T for every matrix of the stack, one SVD each.
  template <class Backend, class T>
  void operator()(Backend& be, in_batch<T> g, batch_view<T> out) const {
    constexpr const char* opname = "polar::svd_polar";
    detail::check_orthogonalizer_args(opname, g, out);
    if (g.size() == 0) return;
    const index m = g.rows(), n = g.cols(), k = m < n ? m : n;
    auto ub = be.template allocate<T>(m * k);
    auto vb = be.template allocate<T>(n * k);
    auto sb = be.template allocate<T>(k);
    const auto U = row_major_view(ub.data(), m, k, -1, Backend::space);
    const auto V = row_major_view(vb.data(), n, k, -1, Backend::space);
    const auto S = vector_view<T>(sb.data(), k, 1, Backend::space);
    const auto Sm = row_major_view(sb.data(), k, 1, -1, Backend::space);
    const T rel = T(double(m > n ? m : n) * double(std::numeric_limits<T>::epsilon()));
    for (index i = 0; i < g.count(); ++i) {
      be.svd(g[i], U, S, V);
      const T largest = be.max_abs(as_const(Sm));
      be.map(detail::rank_mask<T>{rel * largest}, Sm, as_const(Sm));
      be.scale_cols(as_const(S), U);
      be.gemm(T(1), op::n, as_const(U), op::t, as_const(V), T(0), out[i]);
    }
  }
};

}  // namespace polar
