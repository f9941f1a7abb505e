// polar/geometry/manifold_muon.hpp: Muon restricted to the Stiefel manifold
// (Jeremy Bernstein, "Modular Manifolds", Thinking Machines Lab, 2025).
//
// For a tall point W (n x p, W^T W = I; a wide W is handled as its
// transpose) and momentum M, the steepest tangent direction under the
// spectral norm solves
//
//   max <M, A>  subject to  |A|_2 <= 1,  W^T A + A^T W = 0.
//
// Its dual is solved by ascent on the symmetric multiplier Lambda:
//
//   Lambda = -(W^T M + M^T W) / 4
//   repeat k = 0, 1, ...:
//     A = msign(M + 2 W Lambda)
//     H = W^T A + A^T W                 (the constraint's residual)
//     stop when |H|_F / p < tolerance, or after max_dual_steps
//     Lambda <- Lambda - alpha_k (1 - k / max_dual_steps) H
//
// with alpha_0 = dual_lr and, from k = 1, the secant (Barzilai–Borwein)
// length alpha_{k-1} <Hp, Hp> / (<Hp, Hp> - <Hp, H>) (Hp the previous
// residual) kept within [dual_lr / 4, 4 dual_lr]: on 1024 x 256 float
// sequences it halves the iterations to 1e-4 at dual_lr 0.1 (13.1 to 7.3 a
// step) and leaves them at 0.2 (6.7 and 6.5).
//
// (J. Bernstein, "Modular Manifolds", Thinking Machines Lab, 2025, and its
// code: thinking-machines-lab/manifolds manifold_muon.py)
//
// then W <- msign(W - lr A), the polar retraction. For a square W the
// answer is closed: A = W msign(skew(W^T M)), with no iteration.
//
// msign is the orthogonalizer's polar factor: svd_polar by default, exact.
// The fast form takes a Newton–Schulz orthogonalizer
// (manifold_muon<newton_schulz>), whose msign costs one Muon step's
// orthogonalization instead of an SVD; on 1024 x 256 float problems its
// residual still falls below 1e-5 (Jordan's five steps), as the SVD form's
// does. What else keeps a step to a few Muon steps:
//
//   - warm start (warm_start, default on): each step's ascent starts from
//     the multiplier the previous step ended with (kept in the state and in
//     checkpoints). Consecutive momenta differ little, so that multiplier is
//     already near this step's: on a 1024 x 256 sequence of noisy gradients
//     (momentum 0.95) the ascent to 1e-4 took 7.2 iterations a step instead
//     of 10, and to 1e-3, 2.65 instead of 5;
//   - the tolerance: |H|_F / p below 1e-3 makes A tangent to a part in a
//     thousand, which the retraction then absorbs; 1e-6 (the default) is
//     for the exact form and tests;
//   - the retraction by Newton's iteration X <- X (3I - X^T X) / 2 from
//     X = W - lr A, whose singular values are within about lr of 1: it
//     converges quadratically, usually in one step (two products of n p^2),
//     to working precision, so W stays on the manifold to rounding whatever
//     msign's accuracy. A step too long for it (|X^T X - I|_F / sqrt(p) over
//     0.5) takes the exact SVD factor instead. The SVD form keeps its SVD
//     retraction.
//
// The number of iterations the last step used and its final residual are in
// the state.
//
// M is scaled to a root mean square singular value of 1 (|M|_F = sqrt(p))
// first: A does not change (the constraint set is a cone and msign ignores
// scale), and dual_lr then means the same whatever the gradient's magnitude
// and the matrix's size. At that scale the default dual_lr is 0.1, not the
// published 0.01 (tuned for raw gradients; 0.1 here is the 0.05 at unit
// Frobenius norm that earlier versions used on 4-column matrices), the
// largest that converges on the 9 x 4 test problems. Larger matrices take
// more: with 0.2, 64 x 16 problems reach 1e-6 in 15 iterations instead of
// 38 and 1024 x 256 ones 1e-4 in 10 instead of about 21; with 0.4 the
// residual first grows (1024 x 256: 62 iterations to 1e-6), and on 9 x 4
// problems 0.2 stops at the cap of 100 short of 1e-6.
//
// Momentum (default: Muon's, 0.95 with Nesterov) accumulates the tangent
// part of the gradient and is transported (by projection) after each step,
// as in riemannian<momentum, stiefel>: accumulating raw gradients instead
// mixes in normal components of earlier points, which stalls convergence
// (the Brockett test problem stops 0.1 short of its optimum). With
// momentum = 0 the step is the published algorithm: its answer A depends
// only on the gradient's tangent part.
#pragma once

#include <cmath>
#include <limits>
#include <memory>
#include <utility>
#include <type_traits>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/debug_checks.hpp"
#include "polar/core/detail/state_snapshot.hpp"
#include "polar/core/scratch.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/geometry/detail/common.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/geometry/stiefel.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"

namespace polar {

namespace detail {
/// (a - b) / 2.
template <class T>
struct half_difference {
  POLAR_HOST_DEVICE T operator()(T a, T b) const { return T(T(0.5) * (a - b)); }
};

/// What a manifold Muon step needs only while it runs: the dual ascent's
/// buffers, the manifold's and msign's workspaces, and the copy of the state
/// taken before the step (polar/core/scratch.hpp).
template <class Backend, class T, class Orthogonalizer>
struct manifold_muon_scratch {
  typename Backend::template buffer<T> m;       ///< the dual ascent's M, unit Frobenius norm
  typename Backend::template buffer<T> z;       ///< M + 2 W Lambda
  typename Backend::template buffer<T> a;       ///< the direction A
  typename Backend::template buffer<T> lambda;  ///< the multiplier Lambda, p x p
  typename Backend::template buffer<T> h;       ///< the residual W^T A + A^T W (and the retraction's Gram matrix)
  typename Backend::template buffer<T> hp;      ///< the previous iteration's residual
  typename stiefel<Orthogonalizer>::template workspace<Backend, T> geo;  ///< the manifold's scratch
  typename Orthogonalizer::template workspace<Backend, T> orth;  ///< msign's scratch
  /// A copy of what the state's visit() lists, put back if an SVD fails.
  state_snapshot<Backend, T> backup;
  /// Room for an n x p point (n >= p).
  void reserve(Backend& be, index n, index p) {
    if (m.size() < n * p) {
      m = be.template allocate<T>(n * p);
      z = be.template allocate<T>(n * p);
      a = be.template allocate<T>(n * p);
    }
    if (lambda.size() < p * p) {
      lambda = be.template allocate<T>(p * p);
      h = be.template allocate<T>(p * p);
      hp = be.template allocate<T>(p * p);
    }
  }
  /// Bytes held.
  std::size_t bytes() const {
    return buffer_bytes(m, z, a, lambda, h, hp) + geo.bytes() + workspace_bytes(orth) + backup.bytes();
  }
};
}  // namespace detail

/// Manifold Muon's hyperparameters and step (see the header comment).
template <class Orthogonalizer = svd_polar>
struct manifold_muon {
  double lr = 0.02;                         ///< eta, the spectral length of a step, >= 0
  double momentum = 0.95;                   ///< mu, in [0, 1); 0 steps along the gradient
  bool nesterov = true;                     ///< Nesterov momentum
  momentum_kind kind = momentum_kind::ema;  ///< how the buffer accumulates
  double dual_lr = 0.1;                     ///< alpha, the dual ascent's step, > 0 (see above)
  int max_dual_steps = 100;                 ///< the dual ascent's iteration cap, >= 1
  double tolerance = 1e-6;                  ///< stop when |H|_F / p falls below it, >= 0
  Orthogonalizer orthogonalizer{};          ///< msign
  bool check_point = POLAR_CHECK_MANIFOLD != 0;  ///< check W on the manifold before each step
  bool warm_start = true;  ///< start each ascent from the last step's multiplier

  /// Whether msign is the exact SVD factor (then the retraction is too).
  static constexpr bool exact_msign = std::is_same_v<Orthogonalizer, svd_polar>;

  /// The per-matrix state: momentum, the shape, the last ascent's figures,
  /// and a pointer to the scratch a step uses: the state's own until an
  /// optimizer shares one among all its states (share_scratch).
  template <class Backend, class T>
  struct state {
    /// The scratch type a step of this state uses.
    using scratch_type = detail::manifold_muon_scratch<Backend, T, Orthogonalizer>;
    typename Backend::template buffer<T> buf;     ///< momentum (tangent, transported)
    typename Backend::template buffer<T> lambda;  ///< the multiplier the last ascent ended with, p x p (empty when square)
    std::shared_ptr<scratch_type> scratch;        ///< the step's scratch (not saved in checkpoints)
    index rows = 0;  ///< W's rows
    index cols = 0;  ///< W's columns
    long steps = 0;               ///< steps taken
    int dual_iterations = 0;      ///< msign evaluations of the last step's dual ascent (0 when square)
    double dual_residual = 0;     ///< |H|_F / p when the last step's ascent stopped
    /// Uses the pool's scratch from now on instead of the state's own.
    void share_scratch(scratch_pool& pool) { scratch = pool.get<scratch_type>(); }
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the momentum, the shape, the steps and the last ascent's figures.
    template <class F>
    void visit(F& f) {
      f.buffer("buf", buf);
      f.buffer("lambda", lambda);
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.value("steps", steps);
      f.value("dual_iterations", dual_iterations);
      f.value("dual_residual", dual_residual);
    }
  };

  /// A fresh state for the point W: zero momentum.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    constexpr const char* op = "polar::manifold_muon::init";
    check_input(op, "W", w);
    state<Backend, T> s;
    s.rows = w.rows();
    s.cols = w.cols();
    const index n = tall_rows(s), p = tall_cols(s);
    s.buf = detail::zero_buffer<T>(be, n, p);
    if (n != p) s.lambda = detail::zero_buffer<T>(be, p, p);  // a square W has no ascent
    if (check_point) check_on_manifold(be, geometry(), w, detail::scratch_of(s.scratch).geo, -1, op);
    return s;
  }

  /// One step of W along the spectral steepest tangent direction.
  /// @throws shape_error, value_error (hyperparameters; in debug builds, W
  ///         off the manifold), non_finite_error; nothing is written then.
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::manifold_muon::step";
    detail::check_step_args(be, op, w, g, s.rows, s.cols);
    detail::debug_check_state(be, op, s);
    check(op);
    auto& scratch = detail::scratch_of(s.scratch);
    if (check_point) check_on_manifold(be, geometry(), w, scratch.geo, -1, op);
    const bool wide = s.rows < s.cols;
    const auto W = wide ? w.transpose() : w;
    const auto G = wide ? g.transpose() : g;
    const index n = W.rows(), p = W.cols();
    const auto sp = Backend::space;
    const auto geo = geometry();
    // An SVD that does not converge (in msign or the retraction) throws
    // after the momentum moved, but before W is written; the state is put
    // back then.
    scratch.reserve(be, n, p);
    scratch.backup.save(be, s);
    try {
      advance(be, W, G, s, scratch);
    } catch (...) {
      scratch.backup.restore(be, s);
      throw;
    }
    geo.transport(be, as_const(W), row_major_view(s.buf.data(), n, p, -1, sp), scratch.geo);
    ++s.steps;
  }

 private:
  // The body of step(): the momentum, the dual ascent and the retraction.
  template <class Backend, class T>
  void advance(Backend& be, matrix_view<T> W, in_matrix<T> G, state<Backend, T>& s,
               typename state<Backend, T>::scratch_type& ws) const {
    const index n = W.rows(), p = W.cols();
    const auto sp = Backend::space;
    const auto buf = row_major_view(s.buf.data(), n, p, -1, sp);
    const auto M = row_major_view(ws.m.data(), n, p, -1, sp);
    const auto Z = row_major_view(ws.z.data(), n, p, -1, sp);
    const auto A = row_major_view(ws.a.data(), n, p, -1, sp);
    const auto L = row_major_view(ws.lambda.data(), p, p, -1, sp);
    const auto H = row_major_view(ws.h.data(), p, p, -1, sp);
    const auto geo = geometry();
    // Momentum of the tangent gradient (the objective <M, A> over tangent A
    // only sees M's tangent part, so projecting first changes no answer and
    // starts the dual ascent at Lambda = 0 from msign of a tangent M).
    geo.tangent_part(be, as_const(W), G, Z, ws.geo);
    const T mu = T(momentum);
    be.axpby(kind == momentum_kind::ema ? T(1 - momentum) : T(1), as_const(Z), mu, buf);
    if (nesterov)
      be.map(detail::nesterov_fn<T>{mu, kind == momentum_kind::heavy_ball}, M, as_const(Z), as_const(buf));
    else
      be.copy(as_const(buf), M);

    // msign and the polar factor ignore M's scale; scaled to a root mean
    // square singular value of 1 (|M|_F = sqrt(p)), the dual step dual_lr
    // depends neither on the gradient's magnitude nor on the matrix's size.
    const double mnorm = double(be.norm(as_const(M)));
    if (mnorm > 0) be.scale(T(std::sqrt(double(M.cols())) / mnorm), M);
    s.dual_iterations = 0;
    s.dual_residual = 0;
    if (n == p) {
      // A = W msign(skew(W^T M)).
      be.gemm(T(1), op::t, as_const(W), op::n, as_const(M), T(0), H);
      be.map(detail::half_difference<T>{}, L, as_const(H), as_const(H.transpose()));
      orthogonalizer(be, as_batch(as_const(L)), as_batch(H), ws.orth);
      be.gemm(T(1), op::n, as_const(W), op::n, as_const(H), T(0), A);
    } else {
      const auto last = row_major_view(s.lambda.data(), p, p, -1, sp);
      if (warm_start && s.steps > 0) {
        be.copy(as_const(last), L);  // the last step's multiplier
      } else {
        // Lambda = -(W^T M + M^T W) / 4
        be.gemm(T(1), op::t, as_const(W), op::n, as_const(M), T(0), H);
        be.map(detail::half_sum_transpose<T>{}, L, as_const(H), as_const(H.transpose()));
        be.scale(T(-0.5), L);
      }
      const double root = double(p);  // sqrt(numel(H)) for the p x p H
      double alpha = dual_lr;
      // This iteration's residual and the previous one's, swapped rather
      // than copied at the end of each iteration.
      auto Hk = H;
      auto Hp = row_major_view(ws.hp.data(), p, p, -1, sp);
      for (int k = 0; k < max_dual_steps; ++k) {
        // A = msign(M + 2 W Lambda)
        be.copy(as_const(M), Z);
        be.gemm(T(2), op::n, as_const(W), op::n, as_const(L), T(1), Z);
        orthogonalizer(be, as_batch(as_const(Z)), as_batch(A), ws.orth);
        ++s.dual_iterations;
        // H = W^T A + A^T W, symmetric: 2 sym(W^T A)
        be.gemm(T(1), op::t, as_const(W), op::n, as_const(A), T(0), Z.block(0, 0, p, p));
        be.map(detail::plus_fn<T>{}, Hk, as_const(Z.block(0, 0, p, p)), as_const(Z.block(0, 0, p, p).transpose()));
        s.dual_residual = double(be.norm(as_const(Hk))) / root;
        if (s.dual_residual < tolerance) break;
        if (k > 0) {
          // The secant (Barzilai–Borwein) length <s, s> / <s, y> for the
          // last move s = -alpha Hp and the change y = Hp - H of the
          // residual, kept within [dual_lr / 4, 4 dual_lr].
          const double hp2 = double(be.dot(as_const(Hp), as_const(Hp))), hph = double(be.dot(as_const(Hp), as_const(Hk)));
          if (hp2 - hph > 0) alpha = std::min(std::max(alpha * hp2 / (hp2 - hph), 0.25 * dual_lr), 4 * dual_lr);
        }
        const double step = alpha * (1.0 - double(k) / double(max_dual_steps));
        be.axpby(T(-step), as_const(Hk), T(1), L);
        std::swap(Hk, Hp);
      }
      be.copy(as_const(L), last);
    }
    // W <- msign(W - lr A), the polar retraction; the momentum moves to the
    // new tangent space.
    be.scale(T(-lr), A);
    if constexpr (exact_msign) {
      geo.retract(be, W, as_const(A), ws.geo);
    } else {
      be.map(detail::plus_fn<T>{}, Z, as_const(W), as_const(A));
      newton_retract(be, Z, W, H);
    }
  }

  // W <- the polar factor of Z (n x p, near the manifold) by Newton's
  // iteration X <- X (3I - X^T X) / 2, which squares |X^T X - I| each
  // step; Z is overwritten. Falls back to the exact SVD factor when Z is
  // too far from the manifold for the iteration (|Z^T Z - I|_F / sqrt(p)
  // over 0.5).
  template <class Backend, class T>
  static void newton_retract(Backend& be, matrix_view<T> Z, matrix_view<T> W, matrix_view<T> C) {
    const index p = Z.cols();
    const double eps = double(std::numeric_limits<T>::epsilon());
    const double floor = 4 * eps, squares_away = std::sqrt(8 * eps);
    matrix_view<T> from = Z, to = W;
    for (int it = 0; it < 8; ++it) {
      // C = X^T X - I; X <- X (I - C / 2)
      be.syrk(uplo::lower, T(1), op::t, as_const(from), T(0), C);
      be.symmetrize(uplo::lower, C);
      detail::add_to_diagonal(be, T(-1), C);
      const double r = double(be.norm(as_const(C))) / std::sqrt(double(p));
      if (it == 0 && !(r <= 0.5)) {
        svd_polar{}(be, as_const(from), W);
        return;
      }
      if (r <= floor) break;
      be.scale(T(-0.5), C);
      detail::add_to_diagonal(be, T(1), C);
      be.gemm(T(1), op::n, as_const(from), op::n, as_const(C), T(0), to);
      std::swap(from, to);
      if (r <= squares_away) break;  // the step just taken squared r to rounding
    }
    if (from.data() != W.data()) be.copy(as_const(from), W);
  }

 public:

  /// Throws value_error for hyperparameters out of range.
  void check(const char* op = "polar::manifold_muon") const {
    detail::check_lr(op, lr);
    detail::check_unit_interval(op, "momentum", momentum);
    detail::check_positive(op, "dual_lr", dual_lr);
    if (max_dual_steps < 1) detail::raise<value_error>(op, "max_dual_steps must be >= 1, got ", max_dual_steps);
    if (!(tolerance >= 0) || !std::isfinite(tolerance))
      detail::raise<value_error>(op, "tolerance must be finite and >= 0, got ", tolerance);

  }

  /// The Stiefel geometry this optimizer keeps W on (polar retraction).
  stiefel<Orthogonalizer> geometry() const {
    stiefel<Orthogonalizer> st;
    st.retraction = stiefel_retraction::polar;
    st.orthogonalizer = orthogonalizer;
    return st;
  }

 private:
  template <class State>
  static index tall_rows(const State& s) { return s.rows < s.cols ? s.cols : s.rows; }
  template <class State>
  static index tall_cols(const State& s) { return s.rows < s.cols ? s.rows : s.cols; }
};

}  // namespace polar
