// polar/direction/dion.hpp: Dion, low-rank orthonormalized updates with
// error feedback (Ahn, Xu, Abreu and Langford, "Dion: Distributed
// Orthonormalized Updates", arXiv 2504.05295; microsoft/dion dion_simple.py).
//
// For W (rows x cols = m x n) with momentum M (m x n) and a right factor Q
// (n x r) that persists from step to step, one step is
//
//   M <- M + G
//   P  = orthonormal basis of M Q        (thin QR, m x r)
//   R  = M^T P                           (n x r)
//   M <- M - (1 - mu) P R^T              (error feedback: what the rank-r
//                                         update took out decays, the rest stays)
//   Q <- R with unit columns: R(:, j) / (|R(:, j)| + eps)
//   W <- W (1 - lr wd) - lr scale(m, n) P Q^T
//
// with scale sqrt(m / n) (scale_rule::spectral) by default, as dion's.
// P Q^T is one step of power iteration toward the top-r singular subspace
// of M: it costs 8 m n r + O(m r^2) flops instead of Newton–Schulz's
// 15 min(m, n)^2 max(m, n), so it pays for large matrices at a small rank.
// At full rank r = min(m, n) the error feedback leaves mu M, so with a steady
// gradient M tends to G / (1 - mu), the power iteration converges to its
// singular vectors, and P Q^T to its polar factor U V^T: Muon's direction
// (the test checks this).
//
// Q starts as a Gaussian matrix drawn from polar's counter-based generator
// under `seed` (the same on every backend). The state keeps M, Q, the rank
// and the steps, and checkpoints save them.
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/debug_checks.hpp"
#include "polar/core/random.hpp"
#include "polar/core/scratch.hpp"
#include "polar/core/tensor.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/direction/muon.hpp"

namespace polar {

namespace detail {
/// 1 / (x + eps): Dion's column normalization.
template <class T>
struct inverse_plus_fn {
  T eps;
  POLAR_HOST_DEVICE T operator()(T x) const { return T(T(1) / (x + eps)); }
};

/// What a Dion step needs only while it runs: M Q and its orthonormal
/// basis P, R = M^T P, the QR's triangle and R's column norms.
template <class Backend, class T>
struct dion_scratch {
  typename Backend::template buffer<T> mq;     ///< M Q, m x r
  typename Backend::template buffer<T> p;      ///< its orthonormal basis P, m x r
  typename Backend::template buffer<T> r;      ///< R = M^T P, n x r
  typename Backend::template buffer<T> tri;    ///< the QR's triangle, r x r
  typename Backend::template buffer<T> norms;  ///< R's column norms, r
  /// Room for an m x n matrix at rank k.
  void reserve(Backend& be, index m, index n, index k) {
    if (mq.size() < m * k) {
      mq = be.template allocate<T>(m * k);
      p = be.template allocate<T>(m * k);
    }
    if (r.size() < n * k) r = be.template allocate<T>(n * k);
    if (tri.size() < k * k) tri = be.template allocate<T>(k * k);
    if (norms.size() < k) norms = be.template allocate<T>(k);
  }
  /// Bytes held.
  std::size_t bytes() const { return buffer_bytes(mq, p, r, tri, norms); }
};
}  // namespace detail

/// Dion's hyperparameters and step (see the header comment).
struct dion_direction {
  double lr = 0.01;                         ///< learning rate
  double momentum = 0.95;                   ///< mu, in [0, 1): the share of the taken part that stays
  index rank = 0;                           ///< r; 0 or more than min(rows, cols): full rank
  scale_rule scale = scale_rule::spectral;  ///< update scale, sqrt(rows / cols) (dion's)
  double weight_decay = 0.0;                ///< decoupled: W <- W (1 - lr wd)
  double eps = 1e-8;                        ///< added to R's column norms, > 0
  std::uint64_t seed = 0;                   ///< the stream Q's start is drawn from

  /// The per-matrix state: M, Q, the shape and rank, the steps, and a
  /// pointer to the scratch a step uses (the state's own until an optimizer
  /// shares one among all its states).
  template <class Backend, class T>
  struct state {
    /// The scratch type a step of this state uses.
    using scratch_type = detail::dion_scratch<Backend, T>;
    typename Backend::template buffer<T> buf;  ///< the momentum M, rows x cols
    typename Backend::template buffer<T> q;    ///< the right factor Q, cols x rank
    std::shared_ptr<scratch_type> scratch;     ///< the step's scratch (not saved in checkpoints)
    index rows = 0;  ///< W's rows
    index cols = 0;  ///< W's columns
    index rank = 0;  ///< r
    long steps = 0;  ///< steps taken
    /// Uses the pool's scratch from now on instead of the state's own.
    void share_scratch(scratch_pool& pool) { scratch = pool.get<scratch_type>(); }
    /// Lists what a checkpoint keeps.
    template <class F>
    void visit(F& f) {
      f.buffer("buf", buf);
      f.buffer("q", q);
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.shape("rank", rank);
      f.value("steps", steps);
    }
  };

  /// The rank a rows x cols matrix gets.
  index rank_for(index rows, index cols) const noexcept {
    const index full = rows < cols ? rows : cols;
    return rank > 0 && rank < full ? rank : full;
  }

  /// A fresh state for W: zero momentum, a Gaussian Q.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    constexpr const char* opname = "polar::dion::init";
    check_input(opname, "W", w);
    muon_direction<>::check_matrix_shape(opname, w.rows(), w.cols());
    if (rank < 0) detail::raise<value_error>(opname, "rank must be >= 0 (0: full), got ", rank);
    state<Backend, T> s;
    s.rows = w.rows();
    s.cols = w.cols();
    s.rank = rank_for(s.rows, s.cols);
    s.buf = detail::zero_buffer<T>(be, s.rows, s.cols);
    s.q = be.template allocate<T>(s.cols * s.rank);
    be.fill_random(detail::state_view<Backend>(s.q, s.cols, s.rank), rng_key{seed}, distribution::normal);
    return s;
  }

  /// One step of W.
  /// @throws shape_error, value_error, non_finite_error (G holds NaN or
  ///         infinity); nothing is written when it throws.
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* opname = "polar::dion::step";
    detail::check_step_args(be, opname, w, g, s.rows, s.cols);
    detail::debug_check_state(be, opname, s);
    check(opname);
    const index m = s.rows, n = s.cols, k = s.rank;
    auto& ws = detail::scratch_of(s.scratch);
    ws.reserve(be, m, n, k);
    const auto M = detail::state_view<Backend>(s.buf, m, n);
    const auto Q = detail::state_view<Backend>(s.q, n, k);
    const auto MQ = detail::state_view<Backend>(ws.mq, m, k);
    const auto P = detail::state_view<Backend>(ws.p, m, k);
    const auto R = detail::state_view<Backend>(ws.r, n, k);
    const auto tri = detail::state_view<Backend>(ws.tri, k, k);
    const auto norms = vector_view<T>(ws.norms.data(), k, 1, Backend::space);
    const auto nm = detail::state_view<Backend>(ws.norms, 1, k);
    be.axpby(T(1), g, T(1), M);                                              // M += G
    be.gemm(T(1), op::n, as_const(M), op::n, as_const(Q), T(0), MQ);          // M Q
    be.qr(as_const(MQ), P, tri);                                             // P
    be.gemm(T(1), op::t, as_const(M), op::n, as_const(P), T(0), R);           // R = M^T P
    be.gemm(T(-(1 - momentum)), op::n, as_const(P), op::t, as_const(R), T(1), M);  // error feedback
    be.col_norms(as_const(R), norms);                                        // Q = R, unit columns
    be.map(detail::inverse_plus_fn<T>{T(eps)}, nm, as_const(nm));
    be.copy(as_const(R), Q);
    be.scale_cols(as_const(norms), Q);
    if (weight_decay != 0) be.scale(T(1 - lr * weight_decay), w);
    be.gemm(T(-lr * muon_scale(scale, m, n)), op::n, as_const(P), op::t, as_const(Q), T(1), w);
    ++s.steps;
  }

  /// Throws value_error for hyperparameters out of range.
  void check(const char* opname = "polar::dion") const {
    detail::check_lr(opname, lr);
    detail::check_unit_interval(opname, "momentum", momentum);
    detail::check_weight_decay(opname, weight_decay);
    detail::check_positive(opname, "eps", eps);
    if (rank < 0) detail::raise<value_error>(opname, "rank must be >= 0 (0: full), got ", rank);
  }
};

}  // namespace polar
