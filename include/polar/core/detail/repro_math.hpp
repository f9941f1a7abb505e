// polar/core/detail/repro_math.hpp: reproducible logarithm, sine and cosine
// for the normal generator. Not for users.
//
// The C library's and CUDA's logf, sinf and cosf differ in their last bits,
// so a Box–Muller built on them would give different perturbations on host
// and device. These functions use only operations IEEE 754 rounds correctly:
// +, -, *, /, sqrt and fused multiply-add. On the device each goes through a
// round-to-nearest intrinsic (__fmul_rn and friends), which nvcc never
// contracts or approximates whatever the flags; on the host every multiply
// whose result is added is written as an explicit fma, so contraction has
// nothing left to fuse.
//
// log: u = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s),
// s = (m - 1)/(m + 1), by its odd series (|s| < 0.172, so 4 terms in float and
// 11 in double reach the format's precision). sin and cos of 2 pi u: the
// quadrant and the octant are taken from u exactly (4u, and 1 - f for the
// upper half of a quadrant), then Taylor polynomials of sin(pi h / 2) and
// cos(pi h / 2) on h in [0, 1/2]: the dropped terms are below 1e-10 (float)
// and 1e-20 (double).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "polar/core/config.hpp"

namespace polar::detail::repro {

POLAR_HOST_DEVICE float mul(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
POLAR_HOST_DEVICE double mul(double a, double b) noexcept {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
POLAR_HOST_DEVICE float add(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
POLAR_HOST_DEVICE double add(double a, double b) noexcept {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
POLAR_HOST_DEVICE float sub(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
POLAR_HOST_DEVICE double sub(double a, double b) noexcept {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
POLAR_HOST_DEVICE float div(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
POLAR_HOST_DEVICE double div(double a, double b) noexcept {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
POLAR_HOST_DEVICE float fma(float a, float b, float c) noexcept {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
POLAR_HOST_DEVICE double fma(double a, double b, double c) noexcept {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
POLAR_HOST_DEVICE float sqrt(float a) noexcept {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
POLAR_HOST_DEVICE double sqrt(double a) noexcept {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

template <class To, class From>
POLAR_HOST_DEVICE To bit_cast(From x) noexcept {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To y;
  std::memcpy(&y, &x, sizeof(To));
  return y;
}

/// Uniform on (0, 1) from 32 bits: ((w >> 9) + 1/2) 2^-23, exact in float.
POLAR_HOST_DEVICE float uniform_from_bits(std::uint32_t w) noexcept {
  // Both the product and the sum are exact, so contraction changes nothing.
  return float(w >> 9) * 1.1920928955078125e-07f + 5.9604644775390625e-08f;
}
/// Uniform on (0, 1) from 64 bits: ((x >> 12) + 1/2) 2^-52, exact in double.
POLAR_HOST_DEVICE double uniform_from_bits(std::uint32_t hi, std::uint32_t lo) noexcept {
  const std::uint64_t x = (std::uint64_t(hi) << 32 | lo) >> 12;
  return double(x) * 2.220446049250313080847263336181640625e-16 +
         1.1102230246251565404236316680908203125e-16;
}

/// Natural logarithm of u, 0 < u < infinity, u normal.
POLAR_HOST_DEVICE float log(float u) noexcept {
  const std::uint32_t bits = bit_cast<std::uint32_t>(u);
  const std::uint32_t mant = bits & 0x007FFFFFu;
  const bool upper = mant > 0x003504F3u;  // m > sqrt(2): use m / 2
  const int e = int(bits >> 23) - 127 + (upper ? 1 : 0);
  const float m = bit_cast<float>(mant | (upper ? 0x3F000000u : 0x3F800000u));
  const float f = sub(m, 1.0f);  // exact
  const float s = div(f, add(2.0f, f));
  const float s2 = mul(s, s);
  float p = fma(1.0f / 9.0f, s2, 1.0f / 7.0f);
  p = fma(p, s2, 1.0f / 5.0f);
  p = fma(p, s2, 1.0f / 3.0f);
  const float t = mul(2.0f, s);  // exact
  const float log_m = fma(mul(t, s2), p, t);
  const float ef = float(e);
  return fma(ef, 0.693147182464599609375f, fma(ef, -1.904654212125933613e-09f, log_m));
}

POLAR_HOST_DEVICE double log(double u) noexcept {
  const std::uint64_t bits = bit_cast<std::uint64_t>(u);
  const std::uint64_t mant = bits & 0x000FFFFFFFFFFFFFull;
  const bool upper = mant > 0x0006A09E667F3BCDull;
  const int e = int(bits >> 52) - 1023 + (upper ? 1 : 0);
  const double m = bit_cast<double>(mant | (upper ? 0x3FE0000000000000ull : 0x3FF0000000000000ull));
  const double f = sub(m, 1.0);
  const double s = div(f, add(2.0, f));
  const double s2 = mul(s, s);
  double p = 1.0 / 23.0;
  p = fma(p, s2, 1.0 / 21.0);
  p = fma(p, s2, 1.0 / 19.0);
  p = fma(p, s2, 1.0 / 17.0);
  p = fma(p, s2, 1.0 / 15.0);
  p = fma(p, s2, 1.0 / 13.0);
  p = fma(p, s2, 1.0 / 11.0);
  p = fma(p, s2, 1.0 / 9.0);
  p = fma(p, s2, 1.0 / 7.0);
  p = fma(p, s2, 1.0 / 5.0);
  p = fma(p, s2, 1.0 / 3.0);
  const double t = mul(2.0, s);
  const double log_m = fma(mul(t, s2), p, t);
  const double ef = double(e);
  return fma(ef, 0.6931471805599453094, fma(ef, 2.3190468138462996e-17, log_m));
}

// sin(pi h / 2) / h and cos(pi h / 2) as polynomials in h^2, h in [0, 1/2].
POLAR_HOST_DEVICE void quarter_sincos(float h, float& s, float& c) noexcept {
  const float x = mul(h, h);
  float ps = fma(-3.598843235212085e-06f, x, 0.00016044118478735983f);
  ps = fma(ps, x, -0.004681754135318688f);
  ps = fma(ps, x, 0.07969262624616705f);
  ps = fma(ps, x, -0.6459640975062463f);
  ps = fma(ps, x, 1.5707963267948966f);
  float pc = fma(-2.5202042373060607e-05f, x, 0.0009192602748394266f);
  pc = fma(pc, x, -0.02086348076335296f);
  pc = fma(pc, x, 0.25366950790104803f);
  pc = fma(pc, x, -1.2337005501361697f);
  pc = fma(pc, x, 1.0f);
  s = mul(h, ps);
  c = pc;
}

POLAR_HOST_DEVICE void quarter_sincos(double h, double& s, double& c) noexcept {
  const double x = mul(h, h);
  double ps = fma(-4.377065467313742e-14, x, 6.0669357311061955e-12);
  ps = fma(ps, x, -6.688035109811468e-10);
  ps = fma(ps, x, 5.692172921967927e-08);
  ps = fma(ps, x, -3.598843235212085e-06);
  ps = fma(ps, x, 0.00016044118478735983);
  ps = fma(ps, x, -0.004681754135318688);
  ps = fma(ps, x, 0.07969262624616705);
  ps = fma(ps, x, -0.6459640975062463);
  ps = fma(ps, x, 1.5707963267948966);
  double pc = fma(-5.294400200734623e-13, x, 6.565963114979473e-11);
  pc = fma(pc, x, -6.386603083791852e-09);
  pc = fma(pc, x, 4.710874778818172e-07);
  pc = fma(pc, x, -2.5202042373060607e-05);
  pc = fma(pc, x, 0.0009192602748394266);
  pc = fma(pc, x, -0.02086348076335296);
  pc = fma(pc, x, 0.25366950790104803);
  pc = fma(pc, x, -1.2337005501361697);
  pc = fma(pc, x, 1.0);
  s = mul(h, ps);
  c = pc;
}

/// cos(2 pi u) and sin(2 pi u) for u in [0, 1).
template <class T>
POLAR_HOST_DEVICE void sincos_2pi(T u, T& c, T& s) noexcept {
  const T t = mul(T(4), u);  // exact
  const int q = int(t);      // quadrant
  const T f = sub(t, T(q));  // exact, in [0, 1)
  const bool upper = f > T(0.5);
  const T h = upper ? sub(T(1), f) : f;  // exact
  T sh, ch;
  quarter_sincos(h, sh, ch);
  const T sp = upper ? ch : sh;  // sin(pi f / 2)
  const T cp = upper ? sh : ch;  // cos(pi f / 2)
  // The quadrant: (c, s) = (cp, sp), (-sp, cp), (-cp, -sp), (sp, -cp). As
  // selects, not a switch, so that loops over many values vectorize;
  // negation is exact, so the values are the same either way.
  const int k = q & 3;
  const T c0 = (k & 1) ? sp : cp;
  const T s0 = (k & 1) ? cp : sp;
  c = (k == 1 || k == 2) ? -c0 : c0;
  s = (k >= 2) ? -s0 : s0;
}

/// Both Box–Muller normals of the uniforms (u1, u2): r cos and r sin of
/// 2 pi u2, with r = sqrt(-2 log u1).
template <class T>
POLAR_HOST_DEVICE void box_muller_pair(T u1, T u2, T& z0, T& z1) noexcept {
  const T r = sqrt(mul(T(-2), log(u1)));
  T c, s;
  sincos_2pi(u2, c, s);
  z0 = mul(r, c);
  z1 = mul(r, s);
}

/// One of the two Box–Muller normals: the sine one when `second`.
template <class T>
POLAR_HOST_DEVICE T box_muller(T u1, T u2, bool second) noexcept {
  T z0, z1;
  box_muller_pair(u1, u2, z0, z1);
  return second ? z1 : z0;
}

}  // namespace polar::detail::repro
