// polar/estimator/byte_code.hpp: one-byte codes of a projected gradient,
// for decentralized SPSA (estimator/decentralized.hpp).
//
// A byte is a sign bit (bit 7) and a 7-bit magnitude index k (bits 0-6).
// Index 0 is zero; 1..127 are the code's 127 magnitudes, increasing:
//
//   logarithmic  m_k = smallest r^(k-1), r = e^(1/steps_per_nat): equal steps
//                in ln|g|. The published prototype rounds 16 ln|g| to an
//                integer clamped to [-127, 127], 255 levels and a sign: 9
//                bits. With 7 bits for the magnitude, one of resolution and
//                range gives: the default keeps the published range (3.6e-4
//                to 2.5e3, 15.75 nats) at 8 steps per nat (each level 13.3%
//                above the one below, so rounding in ln|g| is off by at most
//                6.45%); steps_per_nat = 16 keeps the published resolution
//                over half the range (3.6e-4 to 0.95).
//   linear       m_k = k scale / 127: |g| clipped to `scale`, a value every
//                machine knows, then rounded to the nearest of 127 levels.
//
// Encoding rounds to the nearest level (geometrically for the logarithmic
// code, so |g| below smallest / sqrt(r) is 0) and saturates at the top.
// Zero always encodes as 0x00, so the byte 0x80 ("minus zero") is never
// produced: it is `byte_code::absent`, which a machine publishes in a step
// it sits out.
//
// Decoding is a lookup in a table of 128 doubles. The table is built with
// multiplications and divisions only (r by its Taylor series), which IEEE 754
// rounds the same on every machine, and never with the C library's exp:
// every replica decodes a byte to the same bits.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>

#include "polar/core/error.hpp"

namespace polar {

/// Which one-byte code (see the header comment).
enum class byte_code_kind : std::uint8_t {
  logarithmic = 1,  ///< sign and 127 levels equally spaced in ln|g|
  linear = 2        ///< sign and 127 levels equally spaced up to a known scale
};

/// A one-byte code of a projected gradient: the encoder every machine uses
/// to publish, and the table every machine decodes with.
class byte_code {
 public:
  /// The byte no code produces: "this machine sends no update this step".
  static constexpr std::uint8_t absent = 0x80;

  /// The logarithmic code over [smallest, smallest e^(126 / steps_per_nat)].
  /// @throws value_error unless smallest is finite and > 0 and
  ///         steps_per_nat is 1 to 64.
  static byte_code logarithmic(double smallest = 3.6e-4, int steps_per_nat = 8) {
    constexpr const char* op = "polar::byte_code::logarithmic";
    if (!(smallest > 0) || !std::isfinite(smallest))
      detail::raise<value_error>(op, "smallest must be finite and > 0, got ", smallest);
    if (steps_per_nat < 1 || steps_per_nat > 64)
      detail::raise<value_error>(op, "steps_per_nat must be 1 to 64, got ", steps_per_nat);
    byte_code c(byte_code_kind::logarithmic, smallest, steps_per_nat);
    const double r = exp_series(1.0 / steps_per_nat);
    const double half_step = std::sqrt(r);  // geometric midpoint factor
    c.level_[0] = 0;
    c.level_[1] = smallest;
    for (int k = 2; k < 128; ++k) c.level_[std::size_t(k)] = c.level_[std::size_t(k - 1)] * r;
    c.up_[0] = smallest / half_step;
    for (int k = 1; k < 127; ++k) c.up_[std::size_t(k)] = c.level_[std::size_t(k)] * half_step;
    if (!std::isfinite(c.level_[127]))
      detail::raise<value_error>(op, "smallest ", smallest, " with ", steps_per_nat,
                                 " steps per nat overflows a double at the top level");
    return c;
  }

  /// The linear code with levels k scale / 127, k = 0..127.
  /// @throws value_error unless scale is finite and > 0.
  static byte_code linear(double scale) {
    if (!(scale > 0) || !std::isfinite(scale))
      detail::raise<value_error>("polar::byte_code::linear", "scale must be finite and > 0, got ", scale);
    byte_code c(byte_code_kind::linear, scale, 0);
    for (int k = 0; k < 128; ++k) c.level_[std::size_t(k)] = double(k) * scale / 127.0;
    for (int k = 0; k < 127; ++k) c.up_[std::size_t(k)] = (double(k) + 0.5) * scale / 127.0;
    return c;
  }

  /// The byte of g: its sign and the nearest level, saturating.
  /// @throws non_finite_error for NaN or infinity.
  std::uint8_t encode(double g) const {
    if (!std::isfinite(g))
      detail::raise<non_finite_error>("polar::byte_code::encode", "the projected gradient is ", g,
                                      "; a byte codes finite values only");
    const double a = std::fabs(g);
    // The number of thresholds at or below |g| is the level.
    const auto k = std::uint8_t(std::upper_bound(up_.begin(), up_.end(), a) - up_.begin());
    if (k == 0) return 0;
    return std::uint8_t(g < 0 ? 0x80u | k : k);
  }

  /// The value of a byte: the same bits on every machine.
  /// @throws value_error for byte_code::absent, which carries no value.
  double decode(std::uint8_t b) const {
    if (b == absent)
      detail::raise<value_error>("polar::byte_code::decode", "byte 0x80 (absent) carries no value");
    const double m = level_[b & 0x7Fu];
    return (b & 0x80u) ? -m : m;
  }

  /// Whether |g| lies beyond the top level (encode saturates it).
  bool saturates(double g) const noexcept { return std::fabs(g) > level_[127]; }

  /// Logarithmic or linear.
  byte_code_kind kind() const noexcept { return kind_; }
  /// The logarithmic code's smallest level, or the linear code's scale.
  double parameter() const noexcept { return parameter_; }
  /// The logarithmic code's levels per nat (0 for the linear code).
  int steps_per_nat() const noexcept { return steps_; }
  /// The smallest and largest non-zero magnitudes.
  double smallest() const noexcept { return level_[1]; }
  /// The largest magnitude a code decodes to.
  double largest() const noexcept { return level_[127]; }

  /// For messages and logs, e.g. "logarithmic(3.6e-04, 8 per nat)".
  std::string describe() const {
    return kind_ == byte_code_kind::logarithmic
               ? detail::concat("logarithmic(", parameter_, ", ", steps_, " per nat)")
               : detail::concat("linear(", parameter_, ")");
  }

  /// Same kind and the same decode table.
  friend bool operator==(const byte_code& a, const byte_code& b) noexcept {
    return a.kind_ == b.kind_ && a.parameter_ == b.parameter_ && a.steps_ == b.steps_;
  }
  /// Not ==.
  friend bool operator!=(const byte_code& a, const byte_code& b) noexcept { return !(a == b); }

 private:
  byte_code(byte_code_kind kind, double parameter, int steps) : kind_(kind), parameter_(parameter), steps_(steps) {}

  // e^x for 0 < x <= 1 by its Taylor series, in a fixed order of correctly
  // rounded operations (no multiply is followed by an add it could fuse
  // with: each term is a product divided, then added).
  static double exp_series(double x) {
    double sum = 1, term = 1;
    for (int n = 1; n < 30; ++n) {
      term = term * x / double(n);
      sum = sum + term;
    }
    return sum;
  }

  byte_code_kind kind_;
  double parameter_;
  int steps_;
  std::array<double, 128> level_{};  // magnitude of index k
  std::array<double, 127> up_{};     // |g| >= up_[k] rounds to an index above k
};

}  // namespace polar
