// polar/core/random.hpp: the counter-based generator behind every random
// perturbation.
//
// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as
// easy as 1, 2, 3", SC'11) maps a 128-bit counter and a 64-bit key to 128
// random bits with ten rounds of multiply-and-xor. Nothing is sequential, so
// element i of a perturbation is computed from (key, i) alone: any backend,
// any thread and any order of generation give the same value. Its raw output
// matches Random123's known-answer vectors (tests/core/random.cpp checks them).
//
// polar keys a stream by (seed, machine, step, sample):
//
//   Philox key     = (seed bits 0-31, seed bits 32-63)
//   Philox counter = (block bits 0-31,
//                     block bits 32-47 | sample << 16,
//                     step,
//                     machine)
//
// where `block` counts 128-bit outputs. So a stream has 2^48 blocks, a step
// up to 65536 samples, and seed, step and machine are free.
//
// Values from element index i (the logical, row-major index of a matrix
// element plus an offset; never the memory address):
//
//   uniform<float>(i)    word i % 4 of block i / 4: ((w >> 9) + 1/2) 2^-23
//   uniform<double>(i)   words 2(i%2), 2(i%2)+1 of block i / 2, 52 bits
//   normal<float>(i)     Box–Muller on words (2p, 2p+1) of block i / 4,
//                        p = (i / 2) % 2; even i takes the cosine, odd the sine
//   normal<double>(i)    Box–Muller on the two 52-bit uniforms of block i / 2
//   rademacher(i)        bit i % 32 of word (i / 32) % 4 of block i / 128:
//                        1 gives +1, 0 gives -1
//
// The uniforms are exact (no rounding) and lie in (0, 1). Box–Muller's
// logarithm, sine and cosine are polar's own (core/detail/repro_math.hpp),
// built from operations that IEEE 754 rounds correctly (+, -, *, /, sqrt and
// explicit fused multiply-adds), so host and device give the same bits.
// Compile without fast-math flags (-ffast-math, --use_fast_math) to keep that.
#pragma once

#include <cstdint>
#include <type_traits>

#include "polar/core/config.hpp"
#include "polar/core/detail/repro_math.hpp"

namespace polar {

/// 128 bits: a Philox counter or output.
struct u32x4 {
  std::uint32_t v[4];  ///< four 32-bit words
};

/// The Philox4x32-10 bijection.
struct philox4x32_10 {
  static constexpr std::uint32_t m0 = 0xD2511F53u;  ///< multiplier of words 0
  static constexpr std::uint32_t m1 = 0xCD9E8D57u;  ///< multiplier of words 2
  static constexpr std::uint32_t w0 = 0x9E3779B9u;  ///< key bump, word 0 (golden ratio)
  static constexpr std::uint32_t w1 = 0xBB67AE85u;  ///< key bump, word 1 (sqrt(3) - 1)

  /// Encrypts `ctr` under the 64-bit key (k0, k1).
  POLAR_HOST_DEVICE static u32x4 apply(u32x4 ctr, std::uint32_t k0, std::uint32_t k1) noexcept {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k0 += w0;
        k1 += w1;
      }
      const std::uint64_t p0 = std::uint64_t(m0) * ctr.v[0];
      const std::uint64_t p1 = std::uint64_t(m1) * ctr.v[2];
      const u32x4 next = {{std::uint32_t(p1 >> 32) ^ ctr.v[1] ^ k0, std::uint32_t(p1),
                           std::uint32_t(p0 >> 32) ^ ctr.v[3] ^ k1, std::uint32_t(p0)}};
      ctr = next;
    }
    return ctr;
  }
};

namespace detail {
/// x + s z with one rounding (an explicit fused multiply-add, so no
/// compiler contracts it differently on the host and the device); 16-bit
/// types compute in float and round once more.
template <class T>
POLAR_HOST_DEVICE T add_scaled(T x, T s, T z) noexcept {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
    return repro::fma(s, z, x);
  else
    return T(repro::fma(float(s), float(z), float(x)));
}
}  // namespace detail

/// Identifies one random stream: every perturbation polar draws is named by
/// these four numbers, so it can be regenerated anywhere instead of stored.
struct rng_key {
  std::uint64_t seed = 0;     ///< the run's seed
  std::uint32_t machine = 0;  ///< the machine (worker) that draws it
  std::uint32_t step = 0;     ///< the optimizer step
  std::uint32_t sample = 0;   ///< the sample within a step; below 65536

  /// Largest sample index a key may carry.
  static constexpr std::uint32_t max_sample = 0xFFFFu;
  /// Number of elements a stream can address (2^48 blocks of 4 words).
  static constexpr std::uint64_t max_elements = std::uint64_t(1) << 50;
};

/// The distributions a stream produces.
enum class distribution : unsigned char {
  normal,      ///< standard normal, Box–Muller
  rademacher,  ///< +1 or -1 with equal probability
  uniform,     ///< uniform on (0, 1)
};

/// The name of a distribution, for messages.
inline const char* to_string(distribution d) noexcept {
  switch (d) {
    case distribution::normal: return "normal";
    case distribution::rademacher: return "rademacher";
    default: return "uniform";
  }
}

/// A random stream: the values of one rng_key, indexed by element.
///
/// Stateless apart from the key, so it is copied into device kernels and
/// OpenMP threads freely; values depend on (key, index) only.
class philox_stream {
 public:
  /// @param key the stream's (seed, machine, step, sample); sample must not
  ///        exceed rng_key::max_sample (the backends check it).
  POLAR_HOST_DEVICE explicit philox_stream(const rng_key& key) noexcept
      : k0_(std::uint32_t(key.seed)),
        k1_(std::uint32_t(key.seed >> 32)),
        hi_(key.sample << 16),
        step_(key.step),
        machine_(key.machine) {}

  /// The 128 random bits of block b (b < 2^48).
  POLAR_HOST_DEVICE u32x4 block(std::uint64_t b) const noexcept {
    const u32x4 ctr = {{std::uint32_t(b), hi_ | std::uint32_t((b >> 32) & 0xFFFFu), step_, machine_}};
    return philox4x32_10::apply(ctr, k0_, k1_);
  }

  /// Blocks b, b + 1, ..., b + L - 1 at once: word k of block b + l in
  /// w[k][l], the same bits as block(b + l). The rounds run lane by lane in
  /// loops the compiler can vectorize (host bulk fills).
  template <unsigned L>
  void blocks(std::uint64_t b, std::uint32_t (&w)[4][L]) const noexcept {
    std::uint32_t c0[L], c1[L], c2[L], c3[L];
    for (unsigned l = 0; l < L; ++l) {
      const std::uint64_t bl = b + l;
      c0[l] = std::uint32_t(bl);
      c1[l] = hi_ | std::uint32_t((bl >> 32) & 0xFFFFu);
      c2[l] = step_;
      c3[l] = machine_;
    }
    std::uint32_t k0 = k0_, k1 = k1_;
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k0 += philox4x32_10::w0;
        k1 += philox4x32_10::w1;
      }
      POLAR_OMP(simd)
      for (unsigned l = 0; l < L; ++l) {
        const std::uint64_t p0 = std::uint64_t(philox4x32_10::m0) * c0[l];
        const std::uint64_t p1 = std::uint64_t(philox4x32_10::m1) * c2[l];
        const std::uint32_t n0 = std::uint32_t(p1 >> 32) ^ c1[l] ^ k0, n1 = std::uint32_t(p1);
        const std::uint32_t n2 = std::uint32_t(p0 >> 32) ^ c3[l] ^ k1, n3 = std::uint32_t(p0);
        c0[l] = n0;
        c1[l] = n1;
        c2[l] = n2;
        c3[l] = n3;
      }
    }
    for (unsigned l = 0; l < L; ++l) {
      w[0][l] = c0[l];
      w[1][l] = c1[l];
      w[2][l] = c2[l];
      w[3][l] = c3[l];
    }
  }

  /// Uniform on (0, 1), exact: element i.
  template <class T>
  POLAR_HOST_DEVICE T uniform(std::uint64_t i) const noexcept {
    if constexpr (sizeof(T) <= 4) {
      return T(detail::repro::uniform_from_bits(block(i >> 2).v[i & 3]));
    } else {
      const u32x4 w = block(i >> 1);
      const unsigned k = unsigned(i & 1) * 2;
      return T(detail::repro::uniform_from_bits(w.v[k], w.v[k + 1]));
    }
  }

  /// Standard normal: element i.
  template <class T>
  POLAR_HOST_DEVICE T normal(std::uint64_t i) const noexcept {
    if constexpr (sizeof(T) <= 4) {
      const u32x4 w = block(i >> 2);
      const unsigned k = unsigned((i >> 1) & 1) * 2;
      return T(detail::repro::box_muller<float>(
          detail::repro::uniform_from_bits(w.v[k]),
          detail::repro::uniform_from_bits(w.v[k + 1]), (i & 1) != 0));
    } else {
      const u32x4 w = block(i >> 1);
      return T(detail::repro::box_muller<double>(
          detail::repro::uniform_from_bits(w.v[0], w.v[1]),
          detail::repro::uniform_from_bits(w.v[2], w.v[3]), (i & 1) != 0));
    }
  }

  /// +1 or -1: element i.
  template <class T>
  POLAR_HOST_DEVICE T rademacher(std::uint64_t i) const noexcept {
    const std::uint32_t word = block(i >> 7).v[(i >> 5) & 3];
    return ((word >> (i & 31)) & 1u) ? T(1) : T(-1);
  }

  /// Element i of the given distribution.
  template <class T>
  POLAR_HOST_DEVICE T operator()(distribution d, std::uint64_t i) const noexcept {
    switch (d) {
      case distribution::normal: return normal<T>(i);
      case distribution::rademacher: return rademacher<T>(i);
      default: return uniform<T>(i);
    }
  }

  /// Elements per block for a distribution and scalar type: 4 floats or 2
  /// doubles (normal, uniform), 128 signs (rademacher).
  template <class T>
  POLAR_HOST_DEVICE static constexpr unsigned per_block(distribution d) noexcept {
    return d == distribution::rademacher ? 128u : (sizeof(T) <= 4 ? 4u : 2u);
  }

  /// Writes the per_block<T>(d) values of block b to out[0..]; the same
  /// values as operator() on indices b * per_block + k, computed once per
  /// block (the fast path for bulk fills).
  template <class T>
  POLAR_HOST_DEVICE void fill_block(distribution d, std::uint64_t b, T* out) const noexcept {
    const u32x4 w = block(b);
    if (d == distribution::rademacher) {
      for (unsigned k = 0; k < 128; ++k) out[k] = ((w.v[k >> 5] >> (k & 31)) & 1u) ? T(1) : T(-1);
    } else if constexpr (sizeof(T) <= 4) {
      float u[4];
      for (unsigned k = 0; k < 4; ++k) u[k] = detail::repro::uniform_from_bits(w.v[k]);
      if (d == distribution::uniform) {
        for (unsigned k = 0; k < 4; ++k) out[k] = T(u[k]);
      } else {
        for (unsigned p = 0; p < 2; ++p) {
          float c, s;
          detail::repro::box_muller_pair(u[2 * p], u[2 * p + 1], c, s);
          out[2 * p] = T(c);
          out[2 * p + 1] = T(s);
        }
      }
    } else {
      const double u0 = detail::repro::uniform_from_bits(w.v[0], w.v[1]);
      const double u1 = detail::repro::uniform_from_bits(w.v[2], w.v[3]);
      if (d == distribution::uniform) {
        out[0] = T(u0);
        out[1] = T(u1);
      } else {
        double c, s;
        detail::repro::box_muller_pair(u0, u1, c, s);
        out[0] = T(c);
        out[1] = T(s);
      }
    }
  }

 private:
  std::uint32_t k0_, k1_, hi_, step_, machine_;
};

}  // namespace polar
