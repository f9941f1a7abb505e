// polar/direction/muon.hpp: the Muon direction for one weight matrix.
//
// Muon (Keller Jordan, 2024) steps a weight matrix along the orthogonal polar
// factor of its gradient's momentum: the steepest-descent direction under the
// spectral norm. One step, for W (rows x cols) and gradient G:
//
//   buf <- mu buf + (1 - mu) G          (momentum_kind::ema)
//   buf <- mu buf + G                   (momentum_kind::heavy_ball)
//   M    = lerp(G, buf, mu)             (Nesterov, EMA: (1 - mu) G + mu buf)
//   M    = G + mu buf                   (Nesterov, heavy ball)
//   M    = buf                          (no Nesterov)
//   U    = orthogonalize(M)             (Newton–Schulz by default)
//   U   <- transform(M, U)              (plain_update: U unchanged)
//   W   <- W (1 - lr wd) - lr scale(rows, cols) U
//
// With bias_correction (optax's Muon; EMA momentum only), step t (1-based)
// orthogonalizes instead
//
//   M    = mu buf / (1 - mu^(t+1)) + (1 - mu) G / (1 - mu^t)   (Nesterov)
//   M    = buf / (1 - mu^t)                                     (no Nesterov)
//
// (optax.contrib.muon, scale_by_muon), so users porting from optax get its
// numbers; the default is Keller Jordan's lerp form above.
//
// The transform (polar/direction/muon_transforms.hpp) turns Muon into NorMuon,
// AdaMuon or PolarGrad without touching the orthogonalizer or the scale rule.
//
// with the scale rules: original sqrt(max(1, rows/cols)) (Keller Jordan,
// "Muon: An optimizer for hidden layers in neural networks", 2024, and
// KellerJordan/Muon muon.py); match_adamw_rms 0.2 sqrt(max(rows, cols))
// (Liu et al., "Muon is Scalable for LLM Training" (Moonlight), arXiv
// 2502.16982; torch's adjust_lr_fn="match_rms_adamw"); spectral
// sqrt(rows/cols); none 1. The matrix is read stored (out x in), rows the
// output features, as torch's nn.Linear stores its weight
// (docs/optimizer.md, "Matrix orientation").
//
// The hyperparameters are a plain aggregate; init() builds the state (the
// momentum buffer, in the backend's memory; the orthogonalizer's buffers are
// scratch that the first step makes, or that an optimizer shares among all
// its tensors: polar/core/scratch.hpp); step() checks everything before it writes, so a throwing step
// leaves W and the state as they were.
//
// Shapes: a matrix; a stack of matrices (batch_view, or a 3-D tensor_view:
// experts, heads), each orthogonalized and scaled on its own; a 4-D or 5-D
// convolution kernel, flattened to (out, in * kh * kw) with the scale taken
// from the flattened shape. 1-D tensors are rejected: they belong to AdamW.
//
// Precision: the second template argument picks the scalar type the
// orthogonalizer iterates in (void: the parameter's own). With double
// parameters and float iteration, the momentum stays in double and only the
// orthogonalizer's input and output are float.
#pragma once

#include <cmath>
#include <memory>
#include <string>
#include <type_traits>

#include "polar/core/detail/gradient_check.hpp"
#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/debug_checks.hpp"
#include "polar/core/scratch.hpp"
#include "polar/core/tensor.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/direction/muon_transforms.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"

namespace polar {

/// How Muon scales the orthogonal update of a rows x cols matrix.
enum class scale_rule : unsigned char {
  original,         ///< sqrt(max(1, rows / cols)), Keller Jordan's
  match_adamw_rms,  ///< 0.2 sqrt(max(rows, cols)): the RMS of an AdamW update (Moonlight)
  spectral,         ///< sqrt(rows / cols)
  none,             ///< 1
  aspect,           ///< sqrt(max(rows / cols, cols / rows)): the MD reference's, for D on its sphere
};

/// The scale factor of a rule for a rows x cols update.
inline double muon_scale(scale_rule rule, index rows, index cols) noexcept {
  const double r = double(rows), c = double(cols);
  switch (rule) {
    case scale_rule::original: return std::sqrt(r / c > 1.0 ? r / c : 1.0);
    case scale_rule::match_adamw_rms: return 0.2 * std::sqrt(r > c ? r : c);
    case scale_rule::spectral: return std::sqrt(r / c);
    case scale_rule::aspect: return std::sqrt(r > c ? r / c : c / r);
    default: return 1.0;
  }
}

namespace detail {
/// What a Muon step needs only while it runs: the orthogonalizer's input
/// and output and its workspace, in the iteration precision. Shared by every
/// state of an optimizer (polar/core/scratch.hpp).
template <class Backend, class C, class Orthogonalizer>
struct muon_scratch {
  typename Backend::template buffer<C> m;  ///< the orthogonalizer's input
  typename Backend::template buffer<C> u;  ///< its output, the polar factor
  typename Backend::template buffer<C> aux;  ///< the transform's scratch (norms, row moments)
  typename Orthogonalizer::template workspace<Backend, C> ws;  ///< the orthogonalizer's buffers
  /// Room for n elements in m and u, and `extra` for the transform.
  void reserve(Backend& be, index n, index extra = 0) {
    if (m.size() < n) {
      m = be.template allocate<C>(n);
      u = be.template allocate<C>(n);
    }
    if (aux.size() < extra) aux = be.template allocate<C>(extra);
  }
  /// Bytes held.
  std::size_t bytes() const { return buffer_bytes(m, u, aux) + workspace_bytes(ws); }
};

/// Whether Muon with transform X steps deferred: X::deferrable where X
/// declares it, else whether X derives from stateless_transform.
template <class X, class = void>
struct transform_deferrable : std::is_base_of<stateless_transform, X> {};
template <class X>
struct transform_deferrable<X, std::void_t<decltype(X::deferrable)>> : std::bool_constant<X::deferrable> {};
}  // namespace detail

/// Muon's hyperparameters and its step.
///
/// @tparam Orthogonalizer a policy with
///   `template <class B, class T> using workspace = ...;` and
///   `void operator()(B&, in_batch<T> m, batch_view<T> out, workspace<B, T>&) const`
///   (stacks; a matrix is a stack of one); polar::newton_schulz by default,
///   polar::gram_newton_schulz and polar::svd_polar also fit.
/// @tparam Compute the scalar type the orthogonalizer iterates in; void for
///   the parameter's own.
/// @tparam Transform what is done to the orthogonalized momentum before it
///   is scaled: plain_update (Muon), normuon, adamuon, polargrad
///   (polar/direction/muon_transforms.hpp).
template <class Orthogonalizer = newton_schulz, class Compute = void, class Transform = plain_update>
struct muon_direction {
  double lr = 0.02;                          ///< learning rate
  double momentum = 0.95;                    ///< mu, in [0, 1)
  bool nesterov = true;                      ///< Nesterov momentum
  momentum_kind kind = momentum_kind::ema;   ///< how the buffer accumulates
  scale_rule scale = scale_rule::original;   ///< update scale
  double weight_decay = 0.0;                 ///< decoupled: W <- W (1 - lr wd)
  Orthogonalizer orthogonalizer{};           ///< the polar-factor approximation
  Transform transform{};                     ///< after the orthogonalizer (NorMuon, AdaMuon, PolarGrad)
  bool bias_correction = false;              ///< optax's bias-corrected momentum (EMA only; see above)

  /// The scalar type the orthogonalizer runs in for parameters of type T.
  template <class T>
  using compute_t = std::conditional_t<std::is_void_v<Compute>, T, Compute>;

  /// The per-tensor state: the momentum buffer (parameter precision, in
  /// the backend's memory), and a pointer to the scratch a step uses
  /// (orthogonalizer input, output and workspace in the iteration
  /// precision): the state's own, allocated at its first step, until an
  /// optimizer shares one scratch among all its states (share_scratch).
  template <class Backend, class T>
  struct state {
    using C = compute_t<T>;  ///< the scalar type the orthogonalizer iterates in
    /// The scratch type a step of this state uses.
    using scratch_type = detail::muon_scratch<Backend, C, Orthogonalizer>;
    typename Backend::template buffer<T> buf;  ///< momentum, in the parameter's precision
    typename Transform::template state<Backend, C> post;  ///< the transform's state, in C
    std::shared_ptr<scratch_type> scratch;     ///< the step's scratch (not saved in checkpoints)
    index count = 0;  ///< matrices in the stack Muon sees
    index rows = 0;   ///< rows of each
    index cols = 0;   ///< columns of each
    long steps = 0;                       ///< steps taken
    /// Uses the pool's scratch from now on instead of the state's own.
    void share_scratch(scratch_pool& pool) { scratch = pool.get<scratch_type>(); }
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the momentum,
    /// the stack's shape, the steps (the scratch is not kept).
    template <class F>
    void visit(F& f) {
      f.buffer("buf", buf);
      f.shape("count", count);
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.value("steps", steps);
      f.nested("transform", post);
    }
  };

  /// A fresh state for the matrix W: zero momentum.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    return init(be, as_batch(w));
  }
  /// A fresh state for a stack of matrices.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, batch_view<U> w) const {
    constexpr const char* opname = "polar::muon::init";
    check_input(opname, "W", w);
    check_matrix_shape(opname, w.rows(), w.cols());
    state<Backend, T> s;
    s.count = w.count();
    s.rows = w.rows();
    s.cols = w.cols();
    s.buf = detail::zero_buffer<T>(be, s.count * s.rows, s.cols);
    s.post = transform.template init<Backend, compute_t<T>>(be, s.count, s.rows, s.cols);
    return s;
  }
  /// A fresh state for a tensor of rank 2 to 5 (see the header comment).
  /// A fresh state for a tensor, seen as its flat matrix (leading extent x the rest).
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, tensor_view<U> w) const {
    return init(be, as_matrix_stack("polar::muon::init", w));
  }

  /// One step of W along the orthogonalized momentum of G.
  /// @throws shape_error, value_error, non_finite_error (G holds NaN or
  ///         infinity); nothing is written when it throws.
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* opname = "polar::muon::step";
    check_output(opname, "W", w);
    check_input(opname, "G", g);
    check_same_shape(opname, "W", w, "G", g);
    step(be, as_batch(w), as_batch(g), s);
  }
  /// One step of a tensor of rank 2 to 5.
  /// One step on a tensor, seen as its flat matrix; W and G must have the same shape.
  template <class Backend, class T>
  void step(Backend& be, tensor_view<T> w, tensor_view<const T> g, state<Backend, T>& s) const {
    constexpr const char* opname = "polar::muon::step";
    detail::check_same_tensor_shape(opname, w, g);
    step(be, as_matrix_stack(opname, w), as_matrix_stack(opname, g), s);
  }
  /// One step of each matrix of a stack, each orthogonalized and scaled on
  /// its own.
  template <class Backend, class T>
  void step(Backend& be, batch_view<T> w, in_batch<T> g, state<Backend, T>& s) const {
    using C = compute_t<T>;
    constexpr const char* opname = "polar::muon::step";
    check_output(opname, "W", w);
    check_input(opname, "G", g);
    check_same_shape(opname, "W", w, "G", g);
    check_no_alias(opname, "W", w, "G", g);
    detail::debug_check_state(be, opname, s);
    if (w.count() != s.count || w.rows() != s.rows || w.cols() != s.cols)
      detail::raise_state_mismatch(opname, "W", shape_of(w.count(), w.rows(), w.cols()), s.count, s.rows, s.cols);
    check();
    const bool deferred = advance(be, opname, g, s, true);
    const auto u = view(s.scratch->u, s, Backend::space);
    // W <- W (1 - lr wd) - lr scale U
    const double step = lr * muon_scale(scale, s.rows, s.cols), keep = 1 - lr * weight_decay;
    if (deferred)  // in a deferred_checks scope: guarded, so a failed check stops it
      detail::for_stack(
          [&](auto wv, auto uv) {
            be.for_each_element(detail::guarded(detail::decay_and_step_in_place<T>{T(keep), T(step)}), wv, uv);
          },
          w, as_const(u));
    else if constexpr (std::is_same_v<C, T>)
      detail::for_stack([&](auto wv, auto uv) { be.axpby(T(-step), uv, T(keep), wv); }, w, as_const(u));
    else
      detail::for_stack([&](auto wv, auto uv) { be.map(detail::decay_and_step<T>{T(keep), T(step)}, wv, as_const(wv), uv); },
                        w, as_const(u));
    detail::count_step(s.steps);
  }

  /// d = -lr scale U, the increment of a step without weight decay, for a
  /// matrix (the form a geometry composes with).
  template <class Backend, class T>
  void update(Backend& be, in_matrix<T> g, state<Backend, T>& s, matrix_view<T> d) const {
    using C = compute_t<T>;
    constexpr const char* opname = "polar::muon::update";
    check_input(opname, "G", g);
    check_output(opname, "D", d);
    check_same_shape(opname, "D", d, "G", g);
    check_no_alias(opname, "D", d, "G", g);
    if (s.count != 1 || g.rows() != s.rows || g.cols() != s.cols)
      detail::raise_state_mismatch(opname, "G", detail::concat(g.rows(), "x", g.cols()), s.count, s.rows, s.cols);
    check(opname);
    advance(be, opname, as_batch(g), s);
    const auto u = row_major_view(s.scratch->u.data(), s.rows, s.cols, -1, Backend::space);
    const double step = lr * muon_scale(scale, s.rows, s.cols);
    if constexpr (std::is_same_v<C, T>)
      be.axpby(T(-step), as_const(u), T(0), d);
    else
      be.map(detail::scale_cast_fn<T>{T(-step)}, d, as_const(u));
    ++s.steps;
  }
  /// Calls f on each state buffer that is a tangent vector at W: the
  /// momentum (of a single matrix).
  template <class Backend, class T, class F>
  void for_each_tangent(state<Backend, T>& s, F&& f) const {
    f(row_major_view(s.buf.data(), s.count * s.rows, s.cols, -1, Backend::space));
  }

  /// Rejects matrices Muon does not handle (vectors and scalars).
  static void check_matrix_shape(const char* opname, index rows, index cols) {
    if (rows < 2 || cols < 2)
      detail::raise<unsupported_error>(opname, "a ", rows, "x", cols,
                                       " tensor is not a matrix; give 1-D parameters (biases, gains, "
                                       "norms) to AdamW");
  }

  /// Throws value_error for hyperparameters out of range.
  void check(const char* opname = "polar::muon") const {
    detail::check_lr(opname, lr);
    detail::check_unit_interval(opname, "momentum", momentum);
    detail::check_weight_decay(opname, weight_decay);
    if (bias_correction && kind != momentum_kind::ema)
      detail::raise<value_error>(opname, "bias_correction (optax's form) needs momentum_kind::ema, got heavy_ball");
    transform.check(opname);
  }

 private:
  // Whether a step can run deferred: its transform says so (guarded state
  // writes, nothing read back; see stateless_transform), so that every
  // write of the step is guarded.
  static constexpr bool deferrable = detail::transform_deferrable<Transform>::value;

  // Checks G's finiteness, then buf <- momentum(buf, G) and u <- orth(M).
  // Returns whether the step runs deferred (a step() of a deferrable Muon
  // in a deferred_checks scope): the check is then queued, the buffer's
  // update guarded, and the caller guards its write of W.
  template <class Backend, class T>
  bool advance(Backend& be, const char* opname, in_batch<T> g, state<Backend, T>& s, bool may_defer = false) const {
    using C = compute_t<T>;
    const bool deferred = may_defer && deferrable && detail::deferred_for<Backend>(opname) != nullptr;
    bool finite = true;
    detail::for_stack([&](auto gv) { finite = finite && !detail::nonfinite_gradient(be, gv, opname, deferred); }, g);
    if (!finite)
      detail::raise<non_finite_error>(opname, "G (", shape_of(s.count, s.rows, s.cols), ") holds NaN or infinity");

    auto& scratch = detail::scratch_of(s.scratch);
    scratch.reserve(be, s.count * s.rows * s.cols, transform.aux_size(s.count, s.rows, s.cols));
    const auto buf = view(s.buf, s, Backend::space);
    const auto m = view(scratch.m, s, Backend::space);
    const auto u = view(scratch.u, s, Backend::space);
    const T mu = T(momentum);
    // buf <- mu buf + c g
    const T c = kind == momentum_kind::ema ? T(1 - momentum) : T(1);
    if (deferred)
      detail::for_stack(
          [&](auto gv, auto bv) { be.for_each_element(detail::guarded(detail::buffer_step_fn<T>{c, mu}), bv, gv); },
          g, buf);
    else
      detail::for_stack([&](auto gv, auto bv) { be.axpby(c, gv, mu, bv); }, g, buf);
    // M: the orthogonalizer's input, in the iteration precision
    const double t = double(s.steps + 1);
    if (bias_correction && nesterov) {
      // optax: mu buf / (1 - mu^(t+1)) + (1 - mu) g / (1 - mu^t)
      const detail::biased_nesterov_fn<C> f{C(momentum / (1 - std::pow(momentum, t + 1))),
                                             C((1 - momentum) / (1 - std::pow(momentum, t)))};
      detail::for_stack([&](auto mv, auto gv, auto bv) { be.map(f, mv, gv, bv); }, m, g, as_const(buf));
    } else if (bias_correction) {
      be.map(detail::scale_cast_fn<C>{C(1 / (1 - std::pow(momentum, t)))}, stacked(m), as_const(stacked(buf)));
    } else if (nesterov) {
      const detail::nesterov_fn<C> f{C(momentum), kind == momentum_kind::heavy_ball};
      detail::for_stack([&](auto mv, auto gv, auto bv) { be.map(f, mv, gv, bv); }, m, g, as_const(buf));
    } else if constexpr (std::is_same_v<C, T>) {
      be.copy(as_const(stacked(buf)), stacked(m));
    } else {
      be.map(detail::cast_fn<C>{}, stacked(m), as_const(stacked(buf)));
    }
    transform.prepare(be, m);
    orthogonalizer(be, as_const(m), u, scratch.ws);
    transform.apply(be, as_const(m), u, s.post, s.steps + 1, scratch.aux.data());
    return deferred;
  }

  static std::string shape_of(index count, index rows, index cols) {
    return count == 1 ? detail::concat(rows, "x", cols) : detail::concat(count, " x ", rows, "x", cols);
  }
  template <class Buffer, class State>
  static auto view(Buffer& b, const State& s, memory_space space) {
    return row_major_batch(b.data(), s.count, s.rows, s.cols, space);
  }
};

}  // namespace polar
