// polar/schedule.hpp: learning-rate and weight-decay schedules.
//
// A schedule is a factor of a group's configured value, a function of the
// number of steps t the group has taken before this one (0 at the first
// step), as torch's LambdaLR and optax's schedules are:
//
//   lr(t) = lr * s(t)
//
// With W the warmup length, T the total length, f the final factor and
// p the fraction of the decay phase done:
//
//   constant()                        1
//   linear_warmup(W)                  min(1, (t + 1) / W)
//   cosine(T, f, W)                   warmup, then f + (1 - f) (1 + cos(pi p)) / 2,
//                                     p = min(1, (t - W) / (T - W))
//   linear_decay(T, f, W)             warmup, then 1 - (1 - f) p
//   warmup_stable_decay(W, S, D, f)   warmup, S steps at 1, then 1 - (1 - f) p over
//                                     D steps (the trapezoid of Hagele et al. 2024,
//                                     "Scaling Laws and Compute-Optimal Training
//                                     Beyond Fixed Training Durations")
//   step_decay(k, gamma)              gamma^floor(t / k)
//   spall_gain(A, alpha)              ((1 + A) / (t + 1 + A))^alpha
//   spall_perturbation(gamma)         (1 / (t + 1))^gamma
//
// The last two are Spall's gain sequences for SPSA (J. C. Spall,
// "Implementation of the simultaneous perturbation algorithm for stochastic
// optimization", IEEE Trans. Aerospace and Electronic Systems 34(3), 1998):
// a_k = a / (k + 1 + A)^alpha and c_k = c / (k + 1)^gamma, with the
// recommended alpha = 0.602 and gamma = 0.101, written as factors of a_0 and
// c_0. Any callable long -> double is a schedule too.
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <utility>

#include "polar/core/error.hpp"

namespace polar {

/// A factor of a configured hyperparameter as a function of the step (see
/// the header comment). Copyable; the step count lives in the optimizer's
/// state, not here.
class schedule {
 public:
  /// The constant schedule, 1.
  schedule() : schedule(constant()) {}
  /// A user's schedule: f(t) for t = 0, 1, ... steps taken; name is what
  /// errors and describe() call it.
  explicit schedule(std::function<double(long)> f, std::string name = "user schedule")
      : f_(std::move(f)), name_(std::move(name)) {
    if (!f_) detail::raise<value_error>("polar::schedule", "the function is empty");
  }

  /// The factor at step t (t steps taken before this one).
  /// @throws value_error for a negative t, or when the function gives NaN,
  ///         infinity or a negative factor.
  double operator()(long t) const {
    if (t < 0) detail::raise<value_error>("polar::schedule", name_, " asked for step ", t);
    const double v = f_(t);
    if (!(v >= 0) || !std::isfinite(v))
      detail::raise<value_error>("polar::schedule", name_, " gives ", v, " at step ", t,
                                 "; a factor must be finite and >= 0");
    return v;
  }
  /// What the schedule is: "cosine(total 1000, final 0.1, warmup 100)".
  const std::string& describe() const noexcept { return name_; }

  /// 1 at every step.
  static schedule constant() {
    return schedule([](long) { return 1.0; }, "constant");
  }
  /// min(1, (t + 1) / warmup): reaches 1 at step warmup - 1.
  static schedule linear_warmup(long warmup) {
    check_count("linear_warmup", "warmup", warmup, 1);
    return schedule([warmup](long t) { return ramp(t, warmup); }, detail::concat("linear_warmup(", warmup, ")"));
  }
  /// Linear warmup over `warmup` steps, then a half cosine from 1 to
  /// final_factor at step total, final_factor after.
  static schedule cosine(long total, double final_factor = 0, long warmup = 0) {
    check_decay("cosine", total, final_factor, warmup);
    return schedule(
        [=](long t) {
          if (t < warmup) return ramp(t, warmup);
          const double p = progress(t - warmup, total - warmup);
          return final_factor + (1 - final_factor) * 0.5 * (1 + std::cos(pi * p));
        },
        detail::concat("cosine(total ", total, ", final ", final_factor, ", warmup ", warmup, ")"));
  }
  /// Linear warmup over `warmup` steps, then linear from 1 to final_factor
  /// at step total, final_factor after.
  static schedule linear_decay(long total, double final_factor = 0, long warmup = 0) {
    check_decay("linear_decay", total, final_factor, warmup);
    return schedule(
        [=](long t) {
          if (t < warmup) return ramp(t, warmup);
          return 1 - (1 - final_factor) * progress(t - warmup, total - warmup);
        },
        detail::concat("linear_decay(total ", total, ", final ", final_factor, ", warmup ", warmup, ")"));
  }
  /// Warmup-stable-decay (trapezoidal): linear warmup over `warmup` steps,
  /// `stable` steps at 1, then linear to final_factor over `decay` steps.
  static schedule warmup_stable_decay(long warmup, long stable, long decay, double final_factor = 0) {
    check_count("warmup_stable_decay", "warmup", warmup, 0);
    check_count("warmup_stable_decay", "stable", stable, 0);
    check_count("warmup_stable_decay", "decay", decay, 1);
    check_final("warmup_stable_decay", final_factor);
    return schedule(
        [=](long t) {
          if (t < warmup) return ramp(t, warmup);
          if (t < warmup + stable) return 1.0;
          return 1 - (1 - final_factor) * progress(t - warmup - stable, decay);
        },
        detail::concat("warmup_stable_decay(warmup ", warmup, ", stable ", stable, ", decay ", decay, ", final ",
                       final_factor, ")"));
  }
  /// gamma^floor(t / every): the factor falls by gamma every `every` steps.
  static schedule step_decay(long every, double gamma) {
    check_count("step_decay", "every", every, 1);
    if (!(gamma >= 0) || !std::isfinite(gamma))
      detail::raise<value_error>("polar::schedule::step_decay", "gamma is ", gamma, "; it must be finite and >= 0");
    return schedule([=](long t) { return std::pow(gamma, double(t / every)); },
                    detail::concat("step_decay(every ", every, ", gamma ", gamma, ")"));
  }
  /// Spall's SPSA gain a_k / a_0 = ((1 + A) / (k + 1 + A))^alpha.
  static schedule spall_gain(double stability = 0, double alpha = 0.602) {
    if (!(stability >= 0) || !std::isfinite(stability))
      detail::raise<value_error>("polar::schedule::spall_gain", "A is ", stability, "; it must be finite and >= 0");
    check_exponent("spall_gain", "alpha", alpha);
    return schedule([=](long t) { return std::pow((1 + stability) / (double(t) + 1 + stability), alpha); },
                    detail::concat("spall_gain(A ", stability, ", alpha ", alpha, ")"));
  }
  /// Spall's SPSA perturbation size c_k / c_0 = (1 / (k + 1))^gamma.
  static schedule spall_perturbation(double gamma = 0.101) {
    check_exponent("spall_perturbation", "gamma", gamma);
    return schedule([=](long t) { return std::pow(1.0 / (double(t) + 1), gamma); },
                    detail::concat("spall_perturbation(gamma ", gamma, ")"));
  }

 private:
  static constexpr double pi = 3.14159265358979323846;
  static double ramp(long t, long warmup) { return t + 1 >= warmup ? 1.0 : double(t + 1) / double(warmup); }
  static double progress(long done, long length) { return done >= length ? 1.0 : double(done) / double(length); }
  static void check_count(const char* which, const char* name, long v, long least) {
    if (v < least)
      detail::raise<value_error>((std::string("polar::schedule::") + which).c_str(), name, " is ", v, "; it must be >= ",
                                 least);
  }
  static void check_final(const char* which, double f) {
    if (!(f >= 0) || !std::isfinite(f))
      detail::raise<value_error>((std::string("polar::schedule::") + which).c_str(), "final_factor is ", f,
                                 "; it must be finite and >= 0");
  }
  static void check_decay(const char* which, long total, double final_factor, long warmup) {
    check_count(which, "warmup", warmup, 0);
    check_final(which, final_factor);
    if (total <= warmup)
      detail::raise<value_error>((std::string("polar::schedule::") + which).c_str(), "total is ", total,
                                 " steps but warmup is ", warmup, "; total must be longer than the warmup");
  }
  static void check_exponent(const char* which, const char* name, double v) {
    if (!(v >= 0) || !std::isfinite(v))
      detail::raise<value_error>((std::string("polar::schedule::") + which).c_str(), name, " is ", v,
                                 "; it must be finite and >= 0");
  }

  std::function<double(long)> f_;
  std::string name_;
};

}  // namespace polar
