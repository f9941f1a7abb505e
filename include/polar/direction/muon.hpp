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
//   W   <- W (1 - lr wd) - lr scale(rows, cols) U
//
// with the scale rules (REFERENCE.md): original sqrt(max(1, rows/cols));
// match_adamw_rms 0.2 sqrt(max(rows, cols)) (Moonlight), spectral
// sqrt(rows/cols), none 1.
//
// The hyperparameters are a plain aggregate; init() builds the state (the
// momentum buffer and the orthogonalizer's workspace, in the backend's
// memory); step() checks everything before it writes, so a throwing step
// leaves W and the state as they were.
#pragma once

#include <cmath>
#include <type_traits>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"

namespace polar {

/// How the momentum buffer accumulates gradients.
enum class momentum_kind : unsigned char {
  ema,         ///< buf <- mu buf + (1 - mu) g
  heavy_ball,  ///< buf <- mu buf + g
};

/// How Muon scales the orthogonal update of a rows x cols matrix.
enum class scale_rule : unsigned char {
  original,         ///< sqrt(max(1, rows / cols)), Keller Jordan's
  match_adamw_rms,  ///< 0.2 sqrt(max(rows, cols)): the RMS of an AdamW update (Moonlight)
  spectral,         ///< sqrt(rows / cols)
  none,             ///< 1
};

/// The scale factor of a rule for a rows x cols update.
inline double muon_scale(scale_rule rule, index rows, index cols) noexcept {
  const double r = double(rows), c = double(cols);
  switch (rule) {
    case scale_rule::original: return std::sqrt(r / c > 1.0 ? r / c : 1.0);
    case scale_rule::match_adamw_rms: return 0.2 * std::sqrt(r > c ? r : c);
    case scale_rule::spectral: return std::sqrt(r / c);
    default: return 1.0;
  }
}

namespace detail {
/// Nesterov's look-ahead: lerp(g, buf, mu) for the EMA buffer, g + mu buf
/// for the heavy-ball one.
template <class T>
struct nesterov_fn {
  T mu;
  bool heavy_ball;
  POLAR_HOST_DEVICE T operator()(T g, T b) const {
    return heavy_ball ? T(g + mu * b) : T((T(1) - mu) * g + mu * b);
  }
};
}  // namespace detail

/// Muon's hyperparameters and its step.
///
/// @tparam Orthogonalizer a policy with
///   `template <class B, class T> using workspace = ...;` and
///   `void operator()(B&, in_matrix<T> m, matrix_view<T> out, workspace<B, T>&) const`;
///   polar::newton_schulz by default.
template <class Orthogonalizer = newton_schulz>
struct muon_direction {
  double lr = 0.02;                          ///< learning rate
  double momentum = 0.95;                    ///< mu, in [0, 1)
  bool nesterov = true;                      ///< Nesterov momentum
  momentum_kind kind = momentum_kind::ema;   ///< how the buffer accumulates
  scale_rule scale = scale_rule::original;   ///< update scale
  double weight_decay = 0.0;                 ///< decoupled: W <- W (1 - lr wd)
  Orthogonalizer orthogonalizer{};           ///< the polar-factor approximation

  /// The per-matrix state: momentum buffer, orthogonalizer input and output,
  /// and the orthogonalizer's workspace, all in the backend's memory.
  template <class Backend, class T>
  struct state {
    typename Backend::template buffer<T> buf, m, u;
    typename Orthogonalizer::template workspace<Backend, T> ws;
    index rows = 0, cols = 0;
    long steps = 0;  ///< steps taken
  };

  /// A fresh state for W: zero momentum.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    constexpr const char* opname = "polar::muon::init";
    check_input(opname, "W", w);
    check_matrix_shape(opname, w.rows(), w.cols());
    state<Backend, T> s;
    s.rows = w.rows();
    s.cols = w.cols();
    s.buf = be.template allocate<T>(w.size());
    s.m = be.template allocate<T>(w.size());
    s.u = be.template allocate<T>(w.size());
    be.fill(view(s.buf, s.rows, s.cols, Backend::space), T(0));
    return s;
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
    check_no_alias(opname, "W", w, "G", g);
    if (w.rows() != s.rows || w.cols() != s.cols)
      detail::raise<shape_error>(opname, "W is ", w.rows(), "x", w.cols(), " but the state was made for ",
                                 s.rows, "x", s.cols);
    check_hyperparameters(opname);
    if (!be.all_finite(g)) detail::raise<non_finite_error>(opname, "G (", g.rows(), "x", g.cols(), ") holds NaN or infinity");

    const auto buf = view(s.buf, s.rows, s.cols, Backend::space);
    const auto m = view(s.m, s.rows, s.cols, Backend::space);
    const auto u = view(s.u, s.rows, s.cols, Backend::space);
    const T mu = T(momentum);
    // buf <- mu buf + c g
    be.axpby(kind == momentum_kind::ema ? T(1 - momentum) : T(1), g, mu, buf);
    // M: the orthogonalizer's input
    if (!nesterov)
      be.copy(as_const(buf), m);
    else if (kind == momentum_kind::ema)
      be.map(detail::nesterov_fn<T>{mu, false}, m, g, as_const(buf));
    else
      be.map(detail::nesterov_fn<T>{mu, true}, m, g, as_const(buf));
    orthogonalizer(be, as_const(m), u, s.ws);
    // W <- W (1 - lr wd) - lr scale U
    const double sc = muon_scale(scale, s.rows, s.cols);
    be.axpby(T(-lr * sc), as_const(u), T(1 - lr * weight_decay), w);
    ++s.steps;
  }

  /// Rejects matrices Muon does not handle (vectors and scalars).
  static void check_matrix_shape(const char* opname, index rows, index cols) {
    if (rows < 2 || cols < 2)
      detail::raise<unsupported_error>(opname, "a ", rows, "x", cols,
                                       " tensor is not a matrix; give 1-D parameters (biases, gains, "
                                       "norms) to AdamW");
  }

 private:
  template <class Buffer>
  static auto view(Buffer& b, index rows, index cols, memory_space space) {
    return row_major_view(b.data(), rows, cols, -1, space);
  }

  void check_hyperparameters(const char* opname) const {
    if (!(lr >= 0) || !std::isfinite(lr)) detail::raise<value_error>(opname, "lr must be finite and >= 0, got ", lr);
    if (!(momentum >= 0 && momentum < 1))
      detail::raise<value_error>(opname, "momentum must be in [0, 1), got ", momentum);
    if (!(weight_decay >= 0) || !std::isfinite(weight_decay))
      detail::raise<value_error>(opname, "weight_decay must be finite and >= 0, got ", weight_decay);
  }
};

}  // namespace polar
