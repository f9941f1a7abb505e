// polar/estimator/spsa.hpp: simultaneous-perturbation gradient estimates
// (SPSA) over a model's tensors, with the perturbation regenerated from its
// key instead of stored.
//
// For a random direction z over all parameters theta, the two-sided
// estimate is
//
//   g = (L(theta + eps z) - L(theta - eps z)) / (2 eps) * z
//
// (one-sided: (L(theta + eps z) - L(theta)) / eps * z), averaged over n
// samples z_1..z_n. Each z_s is drawn from polar's counter-based generator
// under the key (seed, machine, step, s): element i of tensor k is
// z_s(offset_k + i), offset_k the number of elements of the tensors before
// it. z is never stored: perturbing, restoring and updating are passes
// that regenerate it (Backend::add_random), so an estimate needs the memory
// of the parameters and nothing more, and the result is a compact
// spsa_gradient (the key and one scalar per sample) from which any machine
// can rebuild the step.
//
// Restoring theta after a perturbation (automatic, the default: exact for
// 16-bit parameters, in place for float and double):
//   in_place  theta + eps z - 2 eps z + eps z, in the parameters' own
//             precision: no extra memory, but not bit-exact (docs/spsa.md
//             has the drift measured);
//   exact     a copy of the parameters is taken before the first
//             perturbation and copied back after each evaluation: the
//             parameters come back bit for bit, at the cost of one more copy
//             of them (spsa::workspace).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "polar/core/error.hpp"
#include "polar/core/random.hpp"
#include "polar/core/tensor.hpp"
#include "polar/core/view.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/direction/sgd.hpp"

namespace polar {

/// Which difference of losses an estimate takes.
enum class spsa_difference {
  two_sided,  ///< (L(theta + eps z) - L(theta - eps z)) / 2 eps: two evaluations per sample
  one_sided   ///< (L(theta + eps z) - L(theta)) / eps: one per sample, plus L(theta) once per step
};

/// How the parameters are brought back after a perturbation.
enum class spsa_restore {
  automatic,  ///< exact for 16-bit parameters (their drift is as large as an update), in place otherwise
  in_place,   ///< subtract the perturbation again: no memory, rounding drift
  exact       ///< copy back a copy taken before: bit-exact, one copy of the parameters
};

/// Spall's gain sequences: a_k = a / (k + 1 + A)^alpha for the learning
/// rate and c_k = c / (k + 1)^gamma for the perturbation size, k counting
/// from 0. Spall's defaults alpha = 0.602, gamma = 0.101; A is commonly a
/// small fraction of the number of steps (0.001 of it in ensmallen, 0.01 in
/// noisyopt, 0.1 in PennyLane). J. C. Spall, "Implementation of the
/// simultaneous perturbation algorithm for stochastic optimization", IEEE
/// Trans. Aerospace and Electronic Systems 34(3), 1998.
struct spall_schedule {
  double a = 0.1;  ///< the learning rate's scale
  double c = 1e-3;  ///< the perturbation's scale
  double A = 0;  ///< the stability constant: the learning rate's offset in steps
  double alpha = 0.602;  ///< the learning rate's decay exponent
  double gamma = 0.101;  ///< the perturbation's decay exponent
  /// a_k = a / (k + 1 + A)^alpha.
  double lr(long k) const { return a / std::pow(double(k) + 1 + A, alpha); }
  /// c_k = c / (k + 1)^gamma.
  double epsilon(long k) const { return c / std::pow(double(k) + 1, gamma); }
};

/// A model's tensors, in order, as one vector of parameters: tensor k holds
/// elements [offset(k), offset(k) + size(k)) of every perturbation.
template <class T>
class spsa_params {
 public:
  /// Adds a matrix (any layout; element (i, j) is number i cols + j).
  void add(matrix_view<T> w) {
    check_output("polar::spsa_params::add", "W", w);
    views_.push_back(w);
    offsets_.push_back(total_);
    total_ += std::uint64_t(w.size());
    if (total_ > rng_key::max_elements)
      detail::raise<value_error>("polar::spsa_params::add", "the tensors hold ", total_,
                                 " elements, more than a perturbation's 2^50");
  }
  /// Adds a tensor of any rank, its elements in C order.
  void add(tensor_view<T> w) { add(w.flat()); }

  /// The number of tensors.
  index count() const noexcept { return index(views_.size()); }
  /// Tensor k, as a matrix.
  matrix_view<T> view(index k) const { return views_[std::size_t(k)]; }
  /// Where tensor k starts in the perturbation's stream: the elements before it.
  std::uint64_t offset(index k) const { return offsets_[std::size_t(k)]; }
  /// All elements.
  std::uint64_t size() const noexcept { return total_; }

 private:
  std::vector<matrix_view<T>> views_;
  std::vector<std::uint64_t> offsets_;
  std::uint64_t total_ = 0;
};

/// A gradient estimate as keys and scalars: sum over s of coeff[s] z_s,
/// z_s the perturbation under `key` with sample s.
struct spsa_gradient {
  rng_key key{};                             ///< seed, machine, step (sample 0)
  distribution dist = distribution::normal;  ///< of z
  std::vector<double> projected;             ///< per sample: the difference quotient
  std::vector<double> coeff;                 ///< per sample: projected / samples
  double loss = std::numeric_limits<double>::quiet_NaN();  ///< the mean loss evaluated at the perturbed points
  /// The number of directions averaged.
  index samples() const noexcept { return index(coeff.size()); }
};

/// The SPSA estimator's hyperparameters and its estimate (see the header
/// comment). A plain aggregate.
struct spsa {
  double epsilon = 1e-3;                                ///< perturbation size
  int samples = 1;                                      ///< n, averaged
  spsa_difference difference = spsa_difference::two_sided;  ///< two-sided, or one-sided with L(theta) once per step
  distribution dist = distribution::normal;             ///< normal or rademacher
  spsa_restore restore = spsa_restore::automatic;  ///< how the weights come back after each evaluation
  std::uint64_t seed = 0;                               ///< shared by every machine
  std::uint32_t machine = 0;                            ///< this machine's id

  /// The exact mode's copy of the parameters (empty in place).
  template <class Backend, class T>
  struct workspace {
    std::vector<typename Backend::template buffer<T>> copy;  ///< the parameters before perturbing (exact restore)
  };

  /// Throws value_error for hyperparameters out of range.
  void check(const char* op = "polar::spsa") const {
    if (!(epsilon > 0) || !std::isfinite(epsilon))
      detail::raise<value_error>(op, "epsilon must be finite and > 0, got ", epsilon);
    if (samples < 1 || std::uint32_t(samples) > rng_key::max_sample + 1)
      detail::raise<value_error>(op, "samples must be 1 to ", rng_key::max_sample + 1, ", got ", samples);
    if (dist != distribution::normal && dist != distribution::rademacher)
      detail::raise<value_error>(op, "z must be normal or rademacher, got ", to_string(dist));
  }

  /// Whether parameters of type T are restored by copy (restore resolved).
  template <class T>
  bool exact() const noexcept {
    return restore == spsa_restore::exact || (restore == spsa_restore::automatic && sizeof(T) < 4);
  }

  /// The key of sample s at a step.
  rng_key key(std::uint32_t step, std::uint32_t s = 0) const noexcept { return rng_key{seed, machine, step, s}; }

  /// Estimates the gradient at the parameters' current values. loss() is
  /// the caller's oracle: it evaluates the model with the parameters as they
  /// are when it is called (perturbed) and returns a number. On return the
  /// parameters hold their values from before (bit for bit in the exact
  /// mode).
  /// @throws value_error for hyperparameters out of range; non_finite_error
  ///         when loss() returns NaN or infinity (the parameters restored
  ///         first); whatever loss() throws (the parameters restored first).
  template <class Backend, class T, class Loss>
  spsa_gradient estimate(Backend& be, const spsa_params<T>& p, Loss&& loss, std::uint32_t step,
                         workspace<Backend, T>& ws) const {
    constexpr const char* op = "polar::spsa::estimate";
    check(op);
    spsa_gradient g;
    g.key = key(step);
    g.dist = dist;
    if (exact<T>()) snapshot(be, p, ws);
    const bool two = difference == spsa_difference::two_sided;
    double base = 0, total = 0;
    int evaluations = 0;
    // Evaluates at the current point; on a bad value or an exception,
    // `back` (the perturbation applied so far, in units of eps z_s) is
    // undone before the error leaves.
    const auto evaluate = [&](std::uint32_t s, double back, const char* where) {
      double v;
      try {
        v = double(loss());
      } catch (...) {
        undo(be, p, ws, g.key, s, back);
        throw;
      }
      if (!std::isfinite(v)) {
        undo(be, p, ws, g.key, s, back);
        detail::raise<non_finite_error>(op, "the loss oracle returned ", v, " at ", where, " (step ", step,
                                        ", sample ", s, "); the parameters are restored");
      }
      return v;
    };
    if (!two) base = evaluate(0, 0, "theta");
    for (int si = 0; si < samples; ++si) {
      const auto s = std::uint32_t(si);
      perturb(be, p, g.key, s, epsilon);
      const double plus = evaluate(s, 1, "theta + eps z");
      double minus = base;
      if (two) {
        if (exact<T>()) {
          copy_back(be, p, ws);
          perturb(be, p, g.key, s, -epsilon);
        } else {
          perturb(be, p, g.key, s, -2 * epsilon);
        }
        minus = evaluate(s, -1, "theta - eps z");
        undo(be, p, ws, g.key, s, -1);
      } else {
        undo(be, p, ws, g.key, s, 1);
      }
      const double q = two ? (plus - minus) / (2 * epsilon) : (plus - minus) / epsilon;
      g.projected.push_back(q);
      g.coeff.push_back(q / samples);
      total += two ? plus + minus : plus;
      evaluations += two ? 2 : 1;
    }
    g.loss = total / evaluations;
    return g;
  }

 private:
  // theta += scale z_s over every tensor.
  template <class Backend, class T>
  void perturb(Backend& be, const spsa_params<T>& p, const rng_key& key, std::uint32_t s, double scale) const {
    rng_key k = key;
    k.sample = s;
    for (index t = 0; t < p.count(); ++t) be.add_random(p.view(t), k, dist, T(scale), p.offset(t));
  }
  // Takes theta away from `back` eps z_s, back to theta.
  template <class Backend, class T>
  void undo(Backend& be, const spsa_params<T>& p, workspace<Backend, T>& ws, const rng_key& key, std::uint32_t s,
            double back) const {
    if (back == 0) return;
    if (exact<T>())
      copy_back(be, p, ws);
    else
      perturb(be, p, key, s, -back * epsilon);
  }
  template <class Backend, class T>
  static void snapshot(Backend& be, const spsa_params<T>& p, workspace<Backend, T>& ws) {
    if (ws.copy.size() != std::size_t(p.count())) ws.copy.resize(std::size_t(p.count()));
    for (index t = 0; t < p.count(); ++t) {
      const auto v = p.view(t);
      auto& b = ws.copy[std::size_t(t)];
      if (index(b.size()) != v.size()) b = be.template allocate<T>(v.size());
      be.copy(as_const(v), row_major_view(b.data(), v.rows(), v.cols(), -1, Backend::space));
    }
  }
  template <class Backend, class T>
  static void copy_back(Backend& be, const spsa_params<T>& p, workspace<Backend, T>& ws) {
    for (index t = 0; t < p.count(); ++t) {
      const auto v = p.view(t);
      auto& b = ws.copy[std::size_t(t)];
      be.copy(row_major_view(static_cast<const T*>(b.data()), v.rows(), v.cols(), -1, Backend::space), v);
    }
  }
};

/// theta <- theta - lr g, z regenerated sample by sample (one pass over the
/// parameters per sample, no memory): SPSA's SGD step.
template <class Backend, class T>
void spsa_sgd_step(Backend& be, const spsa_params<T>& p, const spsa_gradient& g, double lr) {
  detail::check_lr("polar::spsa_sgd_step", lr);
  rng_key k = g.key;
  for (index s = 0; s < g.samples(); ++s) {
    k.sample = std::uint32_t(s);
    const T scale = T(-lr * g.coeff[std::size_t(s)]);
    for (index t = 0; t < p.count(); ++t) be.add_random(p.view(t), k, g.dist, scale, p.offset(t));
  }
}

/// The momentum buffers of spsa_momentum_step: one per tensor of the
/// parameter set (the memory of the parameters once more, as for momentum
/// on backprop gradients; z is never stored).
template <class Backend, class T>
struct spsa_momentum_state {
  std::vector<typename Backend::template buffer<T>> buf;  ///< one momentum buffer per tensor
  long steps = 0;  ///< steps taken
  /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the momentum buffers and the steps.
  template <class F>
  void visit(F& f) {
    f.buffers("buf", buf);
    f.value("steps", steps);
  }
};

/// SGD with momentum on a compact estimate, z regenerated into the buffers:
/// with a = 1 (heavy ball) or 1 - mu (EMA) and g = sum_s coeff[s] z_s,
///
///   buf <- mu buf + a g
///   theta <- (1 - lr wd) theta - lr buf                  (plain)
///   theta <- (1 - lr wd) theta - lr (mu buf + a g)       (Nesterov)
///
/// the rules of momentum_direction::step, whose hyperparameters it takes.
/// Each sample costs one pass over the buffers (and one more over theta for
/// Nesterov); the dense gradient is never formed. The state starts empty
/// (zero buffers on the first call).
/// @throws value_error for hyperparameters out of range, or a state from
///         another parameter set (nothing changed).
template <class Backend, class T>
void spsa_momentum_step(Backend& be, const spsa_params<T>& p, const spsa_gradient& g, const momentum_direction& dir,
                        spsa_momentum_state<Backend, T>& st) {
  constexpr const char* op = "polar::spsa_momentum_step";
  dir.check(op);
  if (!st.buf.empty() && st.buf.size() != std::size_t(p.count()))
    detail::raise<value_error>(op, "the state holds ", st.buf.size(), " buffers but the parameter set ", p.count(),
                               " tensors");
  for (index t = 0; t < index(st.buf.size()); ++t)
    if (index(st.buf[std::size_t(t)].size()) != p.view(t).size())
      detail::raise<value_error>(op, "buffer ", t, " holds ", st.buf[std::size_t(t)].size(), " elements but tensor ",
                                 t, " ", p.view(t).size());
  if (st.buf.empty())
    for (index t = 0; t < p.count(); ++t)
      st.buf.push_back(detail::zero_buffer<T>(be, p.view(t).rows(), p.view(t).cols()));
  const double a = dir.kind == momentum_kind::ema ? 1 - dir.momentum : 1;
  const T mu = T(dir.momentum), keep = T(1 - dir.lr * dir.weight_decay);
  for (index t = 0; t < p.count(); ++t) {
    const auto w = p.view(t);
    const auto buf = detail::state_view<Backend>(st.buf[std::size_t(t)], w.rows(), w.cols());
    be.scale(mu, buf);
    rng_key k = g.key;
    for (index s = 0; s < g.samples(); ++s) {
      k.sample = std::uint32_t(s);
      be.add_random(buf, k, g.dist, T(a * g.coeff[std::size_t(s)]), p.offset(t));
    }
    if (dir.nesterov) {
      be.axpby(T(-dir.lr * dir.momentum), as_const(buf), keep, w);
      for (index s = 0; s < g.samples(); ++s) {
        k.sample = std::uint32_t(s);
        be.add_random(w, k, g.dist, T(-dir.lr * a * g.coeff[std::size_t(s)]), p.offset(t));
      }
    } else {
      be.axpby(T(-dir.lr), as_const(buf), keep, w);
    }
  }
  ++st.steps;
}

/// out <- the estimate's values on tensor k of p (out has that tensor's
/// shape): the dense gradient, for directions that keep state (AdamW, Muon:
/// ZO-Adam and ZO-Muon by composition). Costs one gradient's memory.
template <class Backend, class T>
void spsa_materialize(Backend& be, const spsa_params<T>& p, const spsa_gradient& g, index k, matrix_view<T> out) {
  constexpr const char* op = "polar::spsa_materialize";
  if (k < 0 || k >= p.count()) detail::raise<value_error>(op, "tensor ", k, " of ", p.count());
  const auto v = p.view(k);
  if (out.rows() != v.rows() || out.cols() != v.cols())
    detail::raise<shape_error>(op, "out is ", out.rows(), "x", out.cols(), " but tensor ", k, " is ", v.rows(), "x",
                               v.cols());
  if (g.samples() == 0) detail::raise<value_error>(op, "the estimate has no samples");
  rng_key key = g.key;
  for (index s = 0; s < g.samples(); ++s) {
    key.sample = std::uint32_t(s);
    const T c = T(g.coeff[std::size_t(s)]);
    if (s == 0)
      be.fill_random(out, key, g.dist, c, p.offset(k));
    else
      be.add_random(out, key, g.dist, c, p.offset(k));
  }
}

}  // namespace polar
