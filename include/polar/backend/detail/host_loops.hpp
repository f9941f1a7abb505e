// polar/backend/detail/host_loops.hpp: elementwise operations, reductions
// and random fills over host views, threaded with OpenMP. Not for users: the
// Eigen backend calls these after its argument checks.
//
// Each loop takes the fastest path the layouts allow: one flat loop when
// every operand is contiguous in the same order (vectorizable), otherwise a
// loop nest whose inner index follows the output's unit stride. Work under
// parallel_threshold elements stays on one thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "polar/backend/concept.hpp"
#include "polar/backend/detail/accumulate.hpp"
#include "polar/backend/detail/checks.hpp"
#include "polar/core/random.hpp"
#include "polar/core/threads.hpp"


namespace polar::detail::host {

/// The accumulator of reductions: double for float and the 16-bit types.
template <class T>
using acc_t = double;

using detail::widen;

/// out(i, j) = f(in(i, j)...).
template <class F, class T, class... In>
void map(F f, matrix_view<T> out, matrix_view<const In>... in) {
  const index r = out.rows(), c = out.cols(), n = r * c;
  if (n == 0) return;
  if (out.is_contiguous() && (detail::flat_compatible(out, in) && ...)) {
    T* o = out.data();
    for_parts(loop_parts(n, n), n, [=](index lo, index hi) {
      for (index k = lo; k < hi; ++k) o[k] = f(in.data()[k]...);
    });
  } else if (out.rows_contiguous()) {
    for_parts(loop_parts(r, n), r, [=](index lo, index hi) {
      for (index i = lo; i < hi; ++i)
        for (index j = 0; j < c; ++j) out(i, j) = f(in(i, j)...);
    });
  } else {
    for_parts(loop_parts(c, n), c, [=](index lo, index hi) {
      for (index j = lo; j < hi; ++j)
        for (index i = 0; i < r; ++i) out(i, j) = f(in(i, j)...);
    });
  }
}

/// f(m(i, j)...) with each operand's element by reference, for every
/// element: one flat loop where every operand is contiguous in the first's
/// order, else along the first operand's unit stride.
template <class F, class... V>
void for_each_element(const F& f, const matrix_view<V>&... m) {
  const auto& m0 = std::get<0>(std::forward_as_tuple(m...));
  const index r = m0.rows(), c = m0.cols(), n = r * c;
  if (n == 0) return;
  if (m0.is_contiguous() && (detail::flat_compatible(m0, m) && ...)) {
    for_parts(loop_parts(n, n), n, [&](index lo, index hi) {
      const F g = f;  // a copy on the stack: the stores cannot alias its constants
      POLAR_OMP(simd)
      for (index k = lo; k < hi; ++k) g(m.data()[k]...);
    });
  } else if (m0.rows_contiguous()) {
    for_parts(loop_parts(r, n), r, [&](index lo, index hi) {
      const F g = f;
      for (index i = lo; i < hi; ++i)
        for (index j = 0; j < c; ++j) g(m(i, j)...);
    });
  } else {
    for_parts(loop_parts(c, n), c, [&](index lo, index hi) {
      const F g = f;
      for (index j = lo; j < hi; ++j)
        for (index i = 0; i < r; ++i) g(m(i, j)...);
    });
  }
}

template <class T>
void fill(matrix_view<T> x, T value) {
  const index r = x.rows(), c = x.cols(), n = r * c;
  if (n == 0) return;
  if (x.is_contiguous()) {
    T* o = x.data();
    for_parts(loop_parts(n, n), n, [=](index lo, index hi) {
      for (index k = lo; k < hi; ++k) o[k] = value;
    });
  } else if (x.rows_contiguous()) {
    for_parts(loop_parts(r, n), r, [=](index lo, index hi) {
      for (index i = lo; i < hi; ++i)
        for (index j = 0; j < c; ++j) x(i, j) = value;
    });
  } else {
    for_parts(loop_parts(c, n), c, [=](index lo, index hi) {
      for (index j = lo; j < hi; ++j)
        for (index i = 0; i < r; ++i) x(i, j) = value;
    });
  }
}

/// Sum over elements of g(x(i, j), y(i, j)) in the accumulator type.
template <class T, class G>
acc_t<T> sum_of(matrix_view<const T> x, matrix_view<const T> y, G g) {
  const index r = x.rows(), c = x.cols(), n = r * c;
  using A = acc_t<T>;
  if (n == 0) return A(0);
  const auto plus = [](A u, A v) { return u + v; };
  if (x.is_contiguous() && detail::flat_compatible(x, y)) {
    // Chunks of contiguous_sum: vectorized within, threaded across.
    constexpr index chunk = 8192;
    const index chunks = (n + chunk - 1) / chunk;
    const T* a = x.data();
    const T* b = y.data();
    return reduce_parts(loop_parts(chunks, n), chunks, A(0), [=](index q0, index q1) {
      A s = 0;
      for (index q = q0; q < q1; ++q) {
        const index lo = q * chunk;
        s += contiguous_sum(a + lo, b + lo, std::min(chunk, n - lo), g);
      }
      return s;
    }, plus);
  } else if (x.rows_contiguous()) {
    return reduce_parts(loop_parts(r, n), r, A(0), [=](index lo, index hi) {
      A s = 0;
      for (index i = lo; i < hi; ++i)
        for (index j = 0; j < c; ++j) s += g(x(i, j), y(i, j));
      return s;
    }, plus);
  } else {
    return reduce_parts(loop_parts(c, n), c, A(0), [=](index lo, index hi) {
      A s = 0;
      for (index j = lo; j < hi; ++j)
        for (index i = 0; i < r; ++i) s += g(x(i, j), y(i, j));
      return s;
    }, plus);
  }
}

template <class T>
T dot(matrix_view<const T> x, matrix_view<const T> y) {
  return T(sum_of(x, y, [](T a, T b) { return widen(a) * widen(b); }));
}

template <class T>
T sum(matrix_view<const T> x) {
  return T(sum_of(x, x, [](T a, T) { return widen(a); }));
}

/// Largest |x|, NaN when x holds a NaN.
template <class T>
T max_abs(matrix_view<const T> x) {
  const index r = x.rows(), c = x.cols(), n = r * c;
  using A = acc_t<T>;
  if (n == 0) return T(0);
  // The largest |x| and whether a NaN was seen.
  struct acc {
    A m = 0;
    bool nan = false;
  };
  const auto visit = [](T v, acc& s) {
    const A a = std::abs(widen(v));
    if (a != a) s.nan = true;
    if (a > s.m) s.m = a;
  };
  const auto join = [](acc u, acc v) { return acc{std::max(u.m, v.m), u.nan || v.nan}; };
  const acc m = x.rows_contiguous()
                    ? reduce_parts(loop_parts(r, n), r, acc{}, [=](index lo, index hi) {
                        acc s;
                        for (index i = lo; i < hi; ++i)
                          for (index j = 0; j < c; ++j) visit(x(i, j), s);
                        return s;
                      }, join)
                    : reduce_parts(loop_parts(c, n), c, acc{}, [=](index lo, index hi) {
                        acc s;
                        for (index j = lo; j < hi; ++j)
                          for (index i = 0; i < r; ++i) visit(x(i, j), s);
                        return s;
                      }, join);
  return m.nan ? std::numeric_limits<T>::quiet_NaN() : T(m.m);
}

/// The number of NaN and infinite elements of x: a pass that only counts
/// where all_finite has found one (so a finite x costs that one pass).
template <class T>
check_word count_nonfinite(matrix_view<const T> x);

/// Whether no element is NaN or infinite: contiguous_finite over
/// contiguous chunks or rows, threaded across them.
template <class T>
bool all_finite(matrix_view<const T> x) {
  const index r = x.rows(), c = x.cols(), n = r * c;
  if (n == 0) return true;
  const auto both = [](bool u, bool v) { return u && v; };
  // finite(k): whether item k (a chunk, row, column or element) is finite.
  const auto over = [&](index items, auto finite) {
    return reduce_parts(loop_parts(items, n), items, true, [=](index lo, index hi) {
      bool ok = true;
      for (index k = lo; k < hi; ++k) ok = finite(k) && ok;
      return ok;
    }, both);
  };
  if (x.is_contiguous()) {
    constexpr index chunk = 8192;
    const T* a = x.data();
    return over((n + chunk - 1) / chunk, [=](index q) {
      return contiguous_finite(a + q * chunk, std::min(chunk, n - q * chunk));
    });
  }
  if (x.rows_contiguous()) return over(r, [=](index i) { return contiguous_finite(&x(i, 0), c); });
  if (x.cols_contiguous()) return over(c, [=](index j) { return contiguous_finite(&x(0, j), r); });
  return over(r, [=](index i) {
    bool ok = true;
    for (index j = 0; j < c; ++j) ok = contiguous_finite(&x(i, j), 1) && ok;
    return ok;
  });
}

template <class T>
check_word count_nonfinite(matrix_view<const T> x) {
  return all_finite<T>(x) ? 0 : count_nonfinite_serial(x);
}

/// Frobenius norm. One pass of squares in the accumulator; a scaled second
/// pass only when that overflows or underflows.
template <class T>
T norm(matrix_view<const T> x) {
  using A = acc_t<T>;
  const A s = sum_of(x, x, [](T a, T) { return widen(a) * widen(a); });
  const A tiny = std::numeric_limits<A>::min() / std::numeric_limits<A>::epsilon();
  if (std::isfinite(s) && s > tiny) return T(std::sqrt(s));
  const A m = widen(max_abs(x));  // zero, tiny, huge or non-finite: look closer
  if (!(m > A(0)) || !std::isfinite(m)) return T(m);
  const A inv = A(1) / m;
  const A t = sum_of(x, x, [inv](T a, T) {
    const A v = widen(a) * inv;
    return v * v;
  });
  return T(m * std::sqrt(t));
}

/// out(i) = h(sum_j g(x(i, j))) for each row i.
template <class T, class G, class H>
void reduce_rows(matrix_view<const T> x, vector_view<T> out, G g, H h) {
  using A = acc_t<T>;
  const index r = x.rows(), c = x.cols();
  if (x.rows_contiguous() || c <= 1) {
    for_parts(loop_parts(r, r * c), r, [&](index lo, index hi) {
      for (index i = lo; i < hi; ++i) {
        A s = 0;
        if (c == 0) {
          // An empty row: no element to address (the data may be null).
        } else if (x.col_stride() == 1 || c == 1) {
          const T* p = &x(i, 0);
          s = contiguous_sum(p, p, c, [&g](T a, T) { return g(a); });
        } else {
          for (index j = 0; j < c; ++j) s += g(x(i, j));
        }
        out[i] = T(h(s, x.row(i)));
      }
    });
  } else {
    // Columns are contiguous: sweep them, keeping one accumulator per row of
    // a block of rows.
    constexpr index block = 512;
    const index nb = (r + block - 1) / block;
    for_parts(loop_parts(nb, r * c), nb, [&](index lo, index hi) {
      for (index b = lo; b < hi; ++b) {
        const index i0 = b * block, i1 = std::min(r, i0 + block);
        A acc[block] = {};
        for (index j = 0; j < c; ++j)
          for (index i = i0; i < i1; ++i) acc[i - i0] += g(x(i, j));
        for (index i = i0; i < i1; ++i) out[i] = T(h(acc[i - i0], x.row(i)));
      }
    });
  }
}

template <class T>
void row_sums(matrix_view<const T> x, vector_view<T> out) {
  reduce_rows(x, out, [](T v) { return widen(v); }, [](acc_t<T> s, vector_view<const T>) { return s; });
}

template <class T>
void row_norms(matrix_view<const T> x, vector_view<T> out) {
  using A = acc_t<T>;
  reduce_rows(
      x, out, [](T v) { return widen(v) * widen(v); },
      [](A s, vector_view<const T> row) -> A {
        const A tiny = std::numeric_limits<A>::min() / std::numeric_limits<A>::epsilon();
        if (std::isfinite(s) && s > tiny) return std::sqrt(s);
        // Rescue a row whose squares overflow or underflow: scale by its max.
        A m = 0;
        for (index j = 0; j < row.size(); ++j) m = std::max(m, A(std::abs(widen(row[j]))));
        if (!(m > A(0)) || !std::isfinite(m)) return s != s ? s : m;
        A t = 0;
        for (index j = 0; j < row.size(); ++j) {
          const A v = widen(row[j]) / m;
          t += v * v;
        }
        return m * std::sqrt(t);
      });
}

template <class T>
void scale_rows(vector_view<const T> s, matrix_view<T> x) {
  const index r = x.rows(), c = x.cols();
  if (x.rows_contiguous()) {
    for_parts(loop_parts(r, r * c), r, [=](index lo, index hi) {
      for (index i = lo; i < hi; ++i) {
        const T f = s[i];
        for (index j = 0; j < c; ++j) x(i, j) = T(x(i, j) * f);
      }
    });
  } else {
    for_parts(loop_parts(c, r * c), c, [=](index lo, index hi) {
      for (index j = lo; j < hi; ++j)
        for (index i = 0; i < r; ++i) x(i, j) = T(x(i, j) * s[i]);
    });
  }
}

/// Calls out(k, z(first + k)) for k in [0, count), block by block of the
/// stream (each Philox block is computed once).
template <class T, class Out>
void generate_range(const philox_stream& st, distribution d, std::uint64_t first, std::uint64_t count, Out out) {
  if (count == 0) return;
  const std::uint64_t per = philox_stream::per_block<T>(d);
  const std::uint64_t b0 = first / per, b1 = (first + count - 1) / per;
  T tmp[128];
  for (std::uint64_t b = b0; b <= b1; ++b) {
    st.fill_block<T>(d, b, tmp);
    const std::uint64_t lo = std::max(first, b * per), hi = std::min(first + count, (b + 1) * per);
    for (std::uint64_t e = lo; e < hi; ++e) out(e - first, tmp[e - b * per]);
  }
}

/// The Rademacher values z(lo..hi) into out[0..hi-lo) (out = scale z, or with
/// Add out + scale z), for float and double: whole blocks of 128 signs word
/// by word in vectorizable loops, the partial blocks at the ends element by
/// element. z = +-1, so x + scale z is x +- scale, one rounding, the same
/// value add_scaled's fused multiply-add gives.
template <bool Add, class T>
void rademacher_run(const philox_stream& st, T* out, std::uint64_t lo, std::uint64_t hi, T scale) {
  // Elements [a, b) one by one (the partial blocks).
  const auto edge = [&](std::uint64_t a, std::uint64_t b) {
    if (a >= b) return;
    T* const o = out + (a - lo);
    generate_range<T>(st, distribution::rademacher, a, b - a, [o, scale](std::uint64_t k, T z) {
      if constexpr (Add)
        o[k] = add_scaled(o[k], scale, z);
      else
        o[k] = T(scale * z);
    });
  };
  const std::uint64_t b0 = (lo + 127) / 128, b1 = hi / 128;  // whole blocks [b0, b1)
  if (b0 >= b1) {
    edge(lo, hi);
    return;
  }
  edge(lo, 128 * b0);
  const T plus = scale, minus = T(-scale);
  for (std::uint64_t b = b0; b < b1; ++b) {
    const u32x4 w = st.block(b);
    T* const o = out + (128 * b - lo);
    for (unsigned q = 0; q < 4; ++q) {
      const std::uint32_t word = w.v[q];
      T* const oq = o + 32 * q;
      POLAR_OMP(simd)
      for (unsigned j = 0; j < 32; ++j) {
        const T v = ((word >> j) & 1u) ? plus : minus;
        if constexpr (Add)
          oq[j] = T(oq[j] + v);
        else
          oq[j] = v;
      }
    }
  }
  edge(128 * b1, hi);
}

/// The float normal values z(lo..hi) into out[0..hi-lo) (out = scale z, or
/// with Add add_scaled(out, scale, z)): sixteen Philox blocks at a time, their
/// rounds and the 32 Box-Muller pairs they give each in one vectorizable
/// loop, with the same arithmetic as philox_stream::normal (so the same
/// bits); the partial blocks at the ends element by element.
template <bool Add>
void normal_run(const philox_stream& st, float* out, std::uint64_t lo, std::uint64_t hi, float scale) {
  constexpr unsigned lanes = 16;  // blocks per group: 64 values
  const auto edge = [&](std::uint64_t a, std::uint64_t b) {
    if (a >= b) return;
    float* const o = out + (a - lo);
    generate_range<float>(st, distribution::normal, a, b - a, [o, scale](std::uint64_t k, float z) {
      if constexpr (Add)
        o[k] = add_scaled(o[k], scale, z);
      else
        o[k] = float(scale * z);
    });
  };
  const std::uint64_t g0 = (lo + 4 * lanes - 1) / (4 * lanes), g1 = hi / (4 * lanes);  // whole groups
  if (g0 >= g1) {
    edge(lo, hi);
    return;
  }
  edge(lo, 4 * lanes * g0);
  std::uint32_t w[4][lanes];
  float u1[2 * lanes], u2[2 * lanes], zc[2 * lanes], zs[2 * lanes];
  for (std::uint64_t g = g0; g < g1; ++g) {
    st.blocks<lanes>(g * lanes, w);
    // Pair k = 2 l + p of the group: words 2p and 2p + 1 of block l.
    for (unsigned l = 0; l < lanes; ++l)
      for (unsigned p = 0; p < 2; ++p) {
        u1[2 * l + p] = repro::uniform_from_bits(w[2 * p][l]);
        u2[2 * l + p] = repro::uniform_from_bits(w[2 * p + 1][l]);
      }
    POLAR_OMP(simd)
    for (unsigned k = 0; k < 2 * lanes; ++k) repro::box_muller_pair(u1[k], u2[k], zc[k], zs[k]);
    float* const o = out + (4 * lanes * g - lo);
    POLAR_OMP(simd)
    for (unsigned k = 0; k < 2 * lanes; ++k) {
      if constexpr (Add) {
        o[2 * k] = add_scaled(o[2 * k], scale, zc[k]);
        o[2 * k + 1] = add_scaled(o[2 * k + 1], scale, zs[k]);
      } else {
        o[2 * k] = float(scale * zc[k]);
        o[2 * k + 1] = float(scale * zs[k]);
      }
    }
  }
  edge(4 * lanes * g1, hi);
}

/// x(i, j) = scale z(offset + i cols + j), or with Add x(i, j) + scale z(...)
/// in one rounding (detail::add_scaled).
template <bool Add, class T>
void random_pass(matrix_view<T> x, const rng_key& key, distribution d, T scale, std::uint64_t offset) {
  const philox_stream st(key);
  const index r = x.rows(), c = x.cols(), n = r * c;
  if (n == 0) return;
  const auto put = [scale](T& to, T z) {
    if constexpr (Add)
      to = add_scaled(to, scale, z);
    else
      to = T(scale * z);
  };
  if (x.rows_contiguous() && (r <= 1 || x.row_stride() == c)) {
    // One run of n elements: split it into chunks of whole blocks.
    T* p = x.data();
    const std::uint64_t per = philox_stream::per_block<T>(d);
    const std::uint64_t chunk = per * 256;
    const std::uint64_t first = offset;
    const std::uint64_t start_block = first / per;
    const std::uint64_t end = first + std::uint64_t(n);
    const index nchunks = index((end - start_block * per + chunk - 1) / chunk);
    for_parts(loop_parts(nchunks, n), nchunks, [&](index q0, index q1) {
      for (index q = q0; q < q1; ++q) {
        const std::uint64_t lo = std::max(first, start_block * per + std::uint64_t(q) * chunk);
        const std::uint64_t hi = std::min(end, start_block * per + std::uint64_t(q + 1) * chunk);
        if (lo >= hi) continue;
        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
          if (d == distribution::rademacher) {
            rademacher_run<Add>(st, p + (lo - first), lo, hi, scale);
            continue;
          }
        }
        if constexpr (std::is_same_v<T, float>) {
          if (d == distribution::normal) {
            normal_run<Add>(st, p + (lo - first), lo, hi, scale);
            continue;
          }
        }
        generate_range<T>(st, d, lo, hi - lo, [p, lo, first, put](std::uint64_t k, T z) { put(p[lo - first + k], z); });
      }
    });
  } else {
    for_parts(loop_parts(r, n), r, [&](index lo, index hi) {
      for (index i = lo; i < hi; ++i) {
        const auto row = x.row(i);
        generate_range<T>(st, d, offset + std::uint64_t(i) * std::uint64_t(c), std::uint64_t(c),
                          [row, put](std::uint64_t k, T z) { put(row[index(k)], z); });
      }
    });
  }
}

template <class T>
void fill_random(matrix_view<T> x, const rng_key& key, distribution d, T scale, std::uint64_t offset) {
  random_pass<false>(x, key, d, scale, offset);
}

template <class T>
void add_random(matrix_view<T> x, const rng_key& key, distribution d, T scale, std::uint64_t offset) {
  random_pass<true>(x, key, d, scale, offset);
}

}  // namespace polar::detail::host
