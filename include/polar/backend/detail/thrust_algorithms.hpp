// polar/backend/detail/thrust_algorithms.hpp: elementwise operations,
// reductions and random fills written once over a Thrust execution policy,
// so the same code runs on Thrust's CUDA, OMP and CPP systems. Not for users:
// the Thrust backend calls these after its argument checks.
//
// Every operation is a for_each or transform_reduce over a counting iterator
// of element (or line, or Philox block) indices, with a functor that maps the
// index to (i, j) through the views' strides. When all operands are
// contiguous in the same order the functor reads data()[k] directly; otherwise
// k walks the output's unit stride, so device threads of a warp touch
// adjacent addresses.
#pragma once

#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/system/cpp/execution_policy.h>
#include <thrust/transform_reduce.h>
#include <thrust/tuple.h>
#if defined(_OPENMP)
#include <omp.h>
#include <thrust/system/omp/execution_policy.h>
#endif

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "polar/backend/detail/accumulate.hpp"
#include "polar/backend/detail/checks.hpp"
#include "polar/core/random.hpp"
#include "polar/core/threads.hpp"
#include "polar/core/view.hpp"

namespace polar::detail::thrust_alg {

using detail::widen;

POLAR_HOST_DEVICE bool finite(double x) noexcept { return x - x == 0.0; }

#if defined(_OPENMP)
/// Whether Policy is Thrust's OpenMP system.
template <class Policy>
inline constexpr bool openmp_policy = std::is_same_v<Policy, std::decay_t<decltype(::thrust::omp::par)>>;
#endif

// How a call runs on each system. The CUDA and CPP systems run Thrust's
// algorithm as it is. On the OpenMP system polar does not open Thrust's
// OpenMP regions: their barriers spin (libgomp looks 300,000 times before it
// sleeps), and beside other busy processes on the same cores a spinning
// thread burns the time slice its descheduled partner needs (thrust<omp>'s
// Muon step took 2.75 times its quiet time under load, Eigen's 2.13;
// docs/threads.md). Instead the indices are cut into host::loop_parts, which
// depend on the sizes alone, and polar's pool runs each part with Thrust's
// serial system: the same pool, waiting and thread count as the Eigen
// backend, and results that are the same bits on any number of threads.
// Below host::parallel_threshold elements, or on one thread, the call runs
// whole on the calling thread (Thrust's OpenMP algorithms open a region for
// any size: 0.7 us for an axpby of 256 floats that the serial system does in
// 0.05). With polar::use_openmp_threads(true) the call runs on Thrust's
// OpenMP system on polar::threads() threads, where the pool's jobs then run.

/// whole(policy) on the CUDA and CPP systems. On the OpenMP system, for a
/// call over `count` indices that touches `work` elements: parts(n), which
/// runs the call in n parts on polar's pool (n = 1: whole, on the calling
/// thread); or, with polar::use_openmp_threads(true), whole(policy) on
/// polar::threads() of OpenMP's threads.
template <class Policy, class Whole, class Parts>
decltype(auto) on_system(const Policy& policy, index count, index work, const Whole& whole, const Parts& parts) {
#if defined(_OPENMP)
  if constexpr (openmp_policy<Policy>) {
    const int team = work < host::parallel_threshold ? 1 : polar::threads();
    if (team > 1 && host::openmp_everywhere().load(std::memory_order_relaxed)) {
      const host::openmp_count threads(team);  // Thrust's regions take their team from it
      return whole(policy);
    }
    return parts(team > 1 ? host::loop_parts(count, work) : index(1));
  }
#endif
  (void)count;
  (void)work;
  (void)parts;
  return whole(policy);
}

/// f(k) for k in [0, count): a call that touches `work` elements.
template <class Policy, class F>
void for_each_index(const Policy& policy, index count, index work, const F& f) {
  if (count <= 0) return;
  const ::thrust::counting_iterator<index> first(0);
  on_system(
      policy, count, work, [&](const auto& p) { ::thrust::for_each_n(p, first, count, f); },
      [&](index parts) {
        host::for_parts(parts, count,
                        [&](index lo, index hi) { ::thrust::for_each_n(::thrust::cpp::par, first + lo, hi - lo, f); });
      });
}

/// The terms f(k), k in [0, count), combined by op from init: in Thrust's
/// order on the device; on the host systems each part's terms in order and
/// the parts' results in order after init (Thrust's serial system, and
/// small calls: one part).
template <class Policy, class R, class F, class Op>
R reduce_index(const Policy& policy, index count, index work, const F& f, R init, const Op& op) {
  if (count <= 0) return init;
  const ::thrust::counting_iterator<index> first(0);
  return on_system(
      policy, count, work, [&](const auto& p) { return ::thrust::transform_reduce(p, first, first + count, f, init, op); },
      [&](index parts) {
        return host::reduce_parts(
            parts, count, init,
            [&](index lo, index hi) {
              return ::thrust::transform_reduce(::thrust::cpp::par, first + lo + 1, first + hi, f, R(f(lo)), op);
            },
            op);
      });
}

/// (i, j) of element k when k runs along rows (row order) or columns.
struct element_order {
  index rows, cols;
  bool by_column;
  POLAR_HOST_DEVICE void operator()(index k, index& i, index& j) const noexcept {
    if (by_column) {
      j = k / rows;
      i = k - j * rows;
    } else {
      i = k / cols;
      j = k - i * cols;
    }
  }
};

template <class T>
element_order order_of(const matrix_view<T>& out) {
  return {out.rows(), out.cols(), !out.rows_contiguous() && out.cols_contiguous()};
}

// Elementwise functors: the flat forms read data()[k] and have no branch
// and no division, so the host compilers vectorize the loop Thrust's OMP and
// CPP systems run.
template <class F, class T, class A>
struct map1_flat {
  F f;
  T* out;
  const A* a;
  POLAR_HOST_DEVICE void operator()(index k) const { out[k] = f(a[k]); }
};
template <class F, class T, class A, class B>
struct map2_flat {
  F f;
  T* out;
  const A* a;
  const B* b;
  POLAR_HOST_DEVICE void operator()(index k) const { out[k] = f(a[k], b[k]); }
};
template <class F, class T, class A, class B, class C>
struct map3_flat {
  F f;
  T* out;
  const A* a;
  const B* b;
  const C* c;
  POLAR_HOST_DEVICE void operator()(index k) const { out[k] = f(a[k], b[k], c[k]); }
};
template <class F, class T, class A>
struct map1_strided {
  F f;
  matrix_view<T> out;
  matrix_view<const A> a;
  element_order ord;
  POLAR_HOST_DEVICE void operator()(index k) const {
    index i, j;
    ord(k, i, j);
    out(i, j) = f(a(i, j));
  }
};
template <class F, class T, class A, class B>
struct map2_strided {
  F f;
  matrix_view<T> out;
  matrix_view<const A> a;
  matrix_view<const B> b;
  element_order ord;
  POLAR_HOST_DEVICE void operator()(index k) const {
    index i, j;
    ord(k, i, j);
    out(i, j) = f(a(i, j), b(i, j));
  }
};
template <class F, class T, class A, class B, class C>
struct map3_strided {
  F f;
  matrix_view<T> out;
  matrix_view<const A> a;
  matrix_view<const B> b;
  matrix_view<const C> c;
  element_order ord;
  POLAR_HOST_DEVICE void operator()(index k) const {
    index i, j;
    ord(k, i, j);
    out(i, j) = f(a(i, j), b(i, j), c(i, j));
  }
};

// for_each_element: f on each operand's element by reference.
template <class F, class... V>
struct each_flat {
  F f;
  ::thrust::tuple<V*...> p;
  POLAR_HOST_DEVICE void operator()(index k) const { call(k, std::index_sequence_for<V...>{}); }
  template <std::size_t... I>
  POLAR_HOST_DEVICE void call(index k, std::index_sequence<I...>) const {
    f(::thrust::get<I>(p)[k]...);
  }
};
template <class F, class... V>
struct each_strided {
  F f;
  ::thrust::tuple<matrix_view<V>...> m;
  element_order ord;
  POLAR_HOST_DEVICE void operator()(index k) const {
    index i, j;
    ord(k, i, j);
    call(i, j, std::index_sequence_for<V...>{});
  }
  template <std::size_t... I>
  POLAR_HOST_DEVICE void call(index i, index j, std::index_sequence<I...>) const {
    f(::thrust::get<I>(m)(i, j)...);
  }
};

/// f(m(i, j)...) for every element, each operand's element by reference.
template <class Policy, class F, class... V>
void for_each_element(const Policy& policy, const F& f, const matrix_view<V>&... m) {
  const auto& m0 = ::thrust::get<0>(::thrust::tie(m...));
  const index n = m0.size();
  if (n == 0) return;
  const bool flat = m0.is_contiguous() && (flat_compatible(m0, m) && ...);
  if (flat)
    for_each_index(policy, n, n, each_flat<F, V...>{f, ::thrust::make_tuple(m.data()...)});
  else
    for_each_index(policy, n, n, each_strided<F, V...>{f, ::thrust::make_tuple(m...), order_of(m0)});
}

template <class Policy, class F, class T, class... In>
void map(const Policy& policy, F f, matrix_view<T> out, matrix_view<const In>... in) {
  const index n = out.size();
  if (n == 0) return;
  const bool flat = out.is_contiguous() && (flat_compatible(out, in) && ...);
  if (flat) {
    if constexpr (sizeof...(In) == 1)
      for_each_index(policy, n, n, map1_flat<F, T, In...>{f, out.data(), in.data()...});
    else if constexpr (sizeof...(In) == 2)
      for_each_index(policy, n, n, map2_flat<F, T, In...>{f, out.data(), in.data()...});
    else
      for_each_index(policy, n, n, map3_flat<F, T, In...>{f, out.data(), in.data()...});
  } else {
    const auto ord = order_of(out);
    if constexpr (sizeof...(In) == 1)
      for_each_index(policy, n, n, map1_strided<F, T, In...>{f, out, in..., ord});
    else if constexpr (sizeof...(In) == 2)
      for_each_index(policy, n, n, map2_strided<F, T, In...>{f, out, in..., ord});
    else
      for_each_index(policy, n, n, map3_strided<F, T, In...>{f, out, in..., ord});
  }
}

template <class T>
struct constant_fn {
  T value;
  template <class U>
  POLAR_HOST_DEVICE T operator()(U) const {
    return value;
  }
};
template <class T>
struct scale_fn {
  T alpha;
  POLAR_HOST_DEVICE T operator()(T v) const { return T(alpha * v); }
};
template <class T>
struct axpby_fn {
  T alpha, beta;
  POLAR_HOST_DEVICE T operator()(T x, T y) const { return T(alpha * x + beta * y); }
};
struct identity_fn {
  template <class T>
  POLAR_HOST_DEVICE T operator()(T v) const {
    return v;
  }
};

/// Sum over k of g(x(i, j), y(i, j)), one element per index: the form for
/// the GPU, where neighbouring threads read neighbouring elements.
template <class G, class A, class B>
struct pair_term {
  G g;
  matrix_view<const A> x;
  matrix_view<const B> y;
  element_order ord;
  bool flat;
  POLAR_HOST_DEVICE double operator()(index k) const {
    if (flat) return g(x.data()[k], y.data()[k]);
    index i, j;
    ord(k, i, j);
    return g(x(i, j), y(i, j));
  }
};

/// Elements per chunk of the host systems' reductions.
inline constexpr index reduce_chunk = 8192;

/// The host form: one index per chunk of reduce_chunk elements, summed with
/// eight independent accumulators so the compiler can vectorize (a single
/// accumulator fixes the order of additions and forbids it).
template <class G, class A, class B>
struct pair_chunk {
  G g;
  matrix_view<const A> x;
  matrix_view<const B> y;
  element_order ord;
  bool flat;
  index n;
  POLAR_HOST_DEVICE double operator()(index q) const {
    const index lo = q * reduce_chunk, hi = lo + reduce_chunk < n ? lo + reduce_chunk : n;
    if (flat) return contiguous_sum(x.data() + lo, y.data() + lo, hi - lo, g);
    double s = 0;
    for (index k = lo; k < hi; ++k) {
      index i, j;
      ord(k, i, j);
      s += g(x(i, j), y(i, j));
    }
    return s;
  }
};

/// Sum of g over the elements; Chunked for the host systems.
template <bool Chunked, class Policy, class G, class A, class B>
double sum_of(const Policy& policy, matrix_view<const A> x, matrix_view<const B> y, G g) {
  const index n = x.size();
  if (n == 0) return 0.0;
  const bool flat = x.is_contiguous() && flat_compatible(x, y);
  if constexpr (Chunked) {
    const index chunks = (n + reduce_chunk - 1) / reduce_chunk;
    return reduce_index(policy, chunks, n, pair_chunk<G, A, B>{g, x, y, order_of(x), flat, n}, 0.0,
                        ::thrust::plus<double>());
  } else {
    return reduce_index(policy, n, n, pair_term<G, A, B>{g, x, y, order_of(x), flat}, 0.0, ::thrust::plus<double>());
  }
}

struct product_term {
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a, A b) const {
    return widen(a) * widen(b);
  }
};
struct value_term {
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a, A) const {
    return widen(a);
  }
};
struct abs_term {
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a, A) const {
    const double v = widen(a);
    return v < 0 ? -v : v;
  }
};
struct nonfinite_term {
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a, A) const {
    return finite(widen(a)) ? 0.0 : 1.0;
  }
};
/// The host form of all_finite: 1 for a chunk of reduce_chunk elements
/// that holds a NaN or an infinity. contiguous_finite where the view is
/// contiguous; elsewhere the chunk's count of nonfinite_term.
template <class A>
struct nonfinite_chunk {
  pair_chunk<nonfinite_term, A, A> count;
  POLAR_HOST_DEVICE int operator()(index q) const {
    if (!count.flat) return count(q) == 0.0 ? 0 : 1;
    const index lo = q * reduce_chunk, hi = lo + reduce_chunk < count.n ? lo + reduce_chunk : count.n;
    return contiguous_finite(count.x.data() + lo, hi - lo) ? 0 : 1;
  }
};

/// Whether no element is NaN or infinite; Chunked for the host systems.
template <bool Chunked, class Policy, class A>
bool all_finite(const Policy& policy, matrix_view<const A> x) {
  const index n = x.size();
  if (n == 0) return true;
  if constexpr (Chunked) {
    const index chunks = (n + reduce_chunk - 1) / reduce_chunk;
    return reduce_index(policy, chunks, n,
                        nonfinite_chunk<A>{{nonfinite_term{}, x, x, order_of(x), x.is_contiguous(), n}}, 0,
                        ::thrust::bit_or<int>()) == 0;
  } else {
    return sum_of<false>(policy, x, x, nonfinite_term{}) == 0.0;
  }
}

/// max that keeps a NaN.
struct nan_max {
  POLAR_HOST_DEVICE double operator()(double a, double b) const {
    if (a != a) return a;
    if (b != b) return b;
    return a < b ? b : a;
  }
};

struct scaled_square_term {
  double inv;
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a, A) const {
    const double v = widen(a) * inv;
    return v * v;
  }
};

template <class Policy, class T>
T max_abs(const Policy& policy, matrix_view<const T> x) {
  const index n = x.size();
  if (n == 0) return T(0);
  const double m = reduce_index(policy, n, n, pair_term<abs_term, T, T>{abs_term{}, x, x, order_of(x), x.is_contiguous()},
                                0.0, nan_max{});
  return T(m);
}

template <bool Chunked, class Policy, class T>
T norm(const Policy& policy, matrix_view<const T> x) {
  const double s = sum_of<Chunked>(policy, x, x, product_term{});
  const double tiny = std::numeric_limits<double>::min() / std::numeric_limits<double>::epsilon();
  if (finite(s) && s > tiny) return T(std::sqrt(s));
  const double m = widen(max_abs(policy, x));  // zero, tiny, huge or non-finite: look closer
  if (!(m > 0.0) || !finite(m)) return T(m);
  return T(m * std::sqrt(sum_of<Chunked>(policy, x, x, scaled_square_term{1.0 / m})));
}

/// g applied to the first of two arguments.
template <class G>
struct first_of {
  G g;
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a, A) const {
    return g(a);
  }
};

/// Sum of g(v[k]) over a line; eight accumulators when the line is
/// contiguous, so the loop vectorizes.
template <class T, class G>
POLAR_HOST_DEVICE double line_sum(vector_view<const T> v, G g) {
  const index n = v.size();
  if (v.stride() != 1 || n < 16) {
    double s = 0;
    for (index k = 0; k < n; ++k) s += g(v[k]);
    return s;
  }
  return contiguous_sum(v.data(), v.data(), n, first_of<G>{g});
}

struct square_of {
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a) const {
    return widen(a) * widen(a);
  }
};
struct value_of {
  template <class A>
  POLAR_HOST_DEVICE double operator()(A a) const {
    return widen(a);
  }
};

/// Norm of one line, rescued by scaling when its squares overflow or
/// underflow.
template <class T>
POLAR_HOST_DEVICE double line_norm(vector_view<const T> v) {
  const double s = line_sum(v, square_of{});
  const double tiny = 2.2250738585072014e-308 / 2.220446049250313e-16;
  if (finite(s) && s > tiny) return ::sqrt(s);
  double m = 0;
  for (index k = 0; k < v.size(); ++k) m = nan_max{}(m, abs_term{}(v[k], v[k]));
  if (!(m > 0.0) || !finite(m)) return s != s ? s : m;
  double t = 0;
  for (index k = 0; k < v.size(); ++k) {
    const double u = widen(v[k]) / m;
    t += u * u;
  }
  return m * ::sqrt(t);
}

template <class T>
struct line_reduce {
  matrix_view<const T> x;  // lines are rows of x
  vector_view<T> out;
  bool norm;
  POLAR_HOST_DEVICE void operator()(index i) const {
    const auto row = x.row(i);
    if (norm) {
      out[i] = T(line_norm<T>(row));
    } else {
      out[i] = T(line_sum(row, value_of{}));
    }
  }
};

/// out(i) = norm or sum of row i of x, one line per thread.
template <class Policy, class T>
void reduce_rows(const Policy& policy, matrix_view<const T> x, vector_view<T> out, bool norm) {
  if (x.rows() == 0) return;
  for_each_index(policy, x.rows(), x.size(), line_reduce<T>{x, out, norm});
}

template <class T>
struct scale_lines {
  vector_view<const T> s;
  matrix_view<T> x;
  element_order ord;
  POLAR_HOST_DEVICE void operator()(index k) const {
    index i, j;
    ord(k, i, j);
    x(i, j) = T(x(i, j) * s[i]);
  }
};

/// x(i, j) *= s(i).
template <class Policy, class T>
void scale_rows(const Policy& policy, vector_view<const T> s, matrix_view<T> x) {
  if (x.empty()) return;
  for_each_index(policy, x.size(), x.size(), scale_lines<T>{s, x, order_of(x)});
}

/// Copies one triangle of the square c onto the other, element k.
template <class T>
struct mirror {
  matrix_view<T> c;
  bool from_lower;
  POLAR_HOST_DEVICE void operator()(index k) const {
    const index i = k / c.cols(), j = k - i * c.cols();
    if (i < j) {
      if (from_lower)
        c(i, j) = c(j, i);
      else
        c(j, i) = c(i, j);
    }
  }
};

/// mirror on each matrix of a stack of square matrices, element k of the
/// whole stack.
template <class T>
struct mirror_batched {
  batch_view<T> c;
  bool from_lower;
  POLAR_HOST_DEVICE void operator()(index k) const {
    const index n = c.rows(), q = k / (n * n), r = k - q * n * n;
    mirror<T>{c.matrix(q), from_lower}(r);
  }
};

/// Writes Philox block `first_block + q` into the elements of x it covers:
/// scale z, or with add x + scale z in one rounding (detail::add_scaled).
template <class T>
struct random_blocks {
  philox_stream st;
  distribution d;
  T scale;
  matrix_view<T> x;
  std::uint64_t offset, end, first_block;
  bool add;
  POLAR_HOST_DEVICE void operator()(index q) const {
    const std::uint64_t per = philox_stream::per_block<T>(d);
    const std::uint64_t b = first_block + std::uint64_t(q);
    T tmp[128];
    st.template fill_block<T>(d, b, tmp);
    const std::uint64_t lo = b * per > offset ? b * per : offset;
    const std::uint64_t hi = (b + 1) * per < end ? (b + 1) * per : end;
    const std::uint64_t cols = std::uint64_t(x.cols());
    for (std::uint64_t e = lo; e < hi; ++e) {
      const std::uint64_t k = e - offset;
      T& to = x(index(k / cols), index(k % cols));
      to = add ? add_scaled(to, scale, tmp[e - b * per]) : T(scale * tmp[e - b * per]);
    }
  }
};

template <class Policy, class T>
void random_pass(const Policy& policy, matrix_view<T> x, const rng_key& key, distribution d, T scale,
                 std::uint64_t offset, bool add) {
  const std::uint64_t n = std::uint64_t(x.size());
  if (n == 0) return;
  const std::uint64_t per = philox_stream::per_block<T>(d);
  const std::uint64_t b0 = offset / per, b1 = (offset + n - 1) / per;
  for_each_index(policy, index(b1 - b0 + 1), x.size(),
                 random_blocks<T>{philox_stream(key), d, scale, x, offset, offset + n, b0, add});
}

template <class Policy, class T>
void fill_random(const Policy& policy, matrix_view<T> x, const rng_key& key, distribution d, T scale,
                 std::uint64_t offset) {
  random_pass(policy, x, key, d, scale, offset, false);
}

template <class Policy, class T>
void add_random(const Policy& policy, matrix_view<T> x, const rng_key& key, distribution d, T scale,
                std::uint64_t offset) {
  random_pass(policy, x, key, d, scale, offset, true);
}

}  // namespace polar::detail::thrust_alg
