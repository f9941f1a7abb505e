// polar/core/lowp.hpp: the 16-bit floating-point storage types that
// Newton–Schulz iterates in on tensor cores: bfloat16 (8 exponent bits, 7
// fraction bits: float's range) and float16 (IEEE binary16: 5 and 10).
//
// They are storage, not arithmetic: a value converts to float and back,
// rounding to nearest with ties to even, as the GPU's conversions do
// (__float2bfloat16_rn, __float2half_rn), so the host and the device store
// the same bits for the same float. Their layout is the GPU's __nv_bfloat16
// and __half, so device buffers of them go to cuBLAS as those types.
// Products of 16-bit operands accumulate in float (the backends'
// gemm_batched_lowp) and round once.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "polar/core/config.hpp"

namespace polar {

namespace detail {

/// The bits of a float.
POLAR_HOST_DEVICE std::uint32_t float_bits(float f) {
  std::uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
/// The float of some bits.
POLAR_HOST_DEVICE float bits_float(std::uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/// f rounded to bfloat16 (nearest, ties to even); NaN stays a (quiet) NaN.
POLAR_HOST_DEVICE std::uint16_t to_bfloat16_bits(float f) {
  std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::uint16_t(u >> 16);
}

/// f rounded to IEEE binary16 (nearest, ties to even), with its subnormals;
/// beyond 65504 (at or past the halfway point to 65536) infinity.
POLAR_HOST_DEVICE std::uint16_t to_float16_bits(float f) {
  std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return std::uint16_t(sign | 0x7e00u);  // NaN
  if (u >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds past 65504
  if (u < 0x38800000u) {                                        // below 2^-14: subnormal or zero
    if (u <= 0x33000000u) return std::uint16_t(sign);           // at most 2^-25: rounds to zero
    const std::uint32_t e = u >> 23, m = (u & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // units of 2^-24
    std::uint32_t q = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return std::uint16_t(sign | q);
  }
  std::uint32_t r = u - 0x38000000u;  // exponent rebiased from 127 to 15
  r += 0xfffu + ((r >> 13) & 1u);
  return std::uint16_t(sign | (r >> 13));
}

/// The float of bfloat16 bits (exact).
POLAR_HOST_DEVICE float from_bfloat16_bits(std::uint16_t h) { return bits_float(std::uint32_t(h) << 16); }

/// The float of binary16 bits (exact).
POLAR_HOST_DEVICE float from_float16_bits(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = float(m) * 5.9604644775390625e-8f;  // m 2^-24, exact
    return sign ? -v : v;
  }
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

}  // namespace detail

/// A bfloat16 value: float's sign and exponent, 7 bits of fraction.
struct bfloat16 {
  std::uint16_t bits;  ///< the stored bits
  bfloat16() = default;
  /// f rounded to nearest, ties to even.
  POLAR_HOST_DEVICE explicit bfloat16(float f) : bits(detail::to_bfloat16_bits(f)) {}
  /// The value, exactly.
  POLAR_HOST_DEVICE explicit operator float() const { return detail::from_bfloat16_bits(bits); }
};

/// An IEEE binary16 value: 5 exponent bits, 10 of fraction (65504 at most).
struct float16 {
  std::uint16_t bits;  ///< the stored bits
  float16() = default;
  /// f rounded to nearest, ties to even (infinity past 65504).
  POLAR_HOST_DEVICE explicit float16(float f) : bits(detail::to_float16_bits(f)) {}
  /// The value, exactly.
  POLAR_HOST_DEVICE explicit operator float() const { return detail::from_float16_bits(bits); }
};

/// Whether T is one of polar's 16-bit storage types.
template <class T>
inline constexpr bool is_lowp_v = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;

namespace detail {

/// out = H(x): a float or double converted to 16 bits (through float).
template <class H>
struct to_lowp_fn {
  template <class T>
  POLAR_HOST_DEVICE H operator()(T x) const {
    return H(float(x));
  }
};

/// out = T(h): 16 bits back to float or double.
template <class T>
struct from_lowp_fn {
  template <class H>
  POLAR_HOST_DEVICE T operator()(H h) const {
    return T(float(h));
  }
};

/// h <- H(s float(h)): a 16-bit value scaled, rounded once.
template <class H>
struct lowp_scale_fn {
  float s;
  POLAR_HOST_DEVICE H operator()(H h) const { return H(s * float(h)); }
};

/// h <- H(float(h) + v): a 16-bit value shifted, rounded once.
template <class H>
struct lowp_shift_fn {
  float v;
  POLAR_HOST_DEVICE H operator()(H h) const { return H(float(h) + v); }
};

}  // namespace detail

}  // namespace polar
