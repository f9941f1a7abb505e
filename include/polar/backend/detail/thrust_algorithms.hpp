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
#include <thrust/transform_reduce.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "polar/backend/detail/checks.hpp"
#include "polar/core/random.hpp"
#include "polar/core/view.hpp"

namespace polar::detail::thrust_alg {

/// Accumulator of reductions: double for float and the 16-bit types.
template <class T>
using acc_t = double;

template <class T>
POLAR_HOST_DEVICE double widen(T x) noexcept {
  return static_cast<double>(static_cast<float>(x));
}
POLAR_HOST_DEVICE double widen(double x) noexcept { return x; }

POLAR_HOST_DEVICE bool finite(double x) noexcept { return x - x == 0.0; }

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

template <class F, class T, class A>
struct map1 {
  F f;
  matrix_view<T> out;
  matrix_view<const A> a;
  element_order ord;
  bool flat;
  POLAR_HOST_DEVICE void operator()(index k) const {
    if (flat) {
      out.data()[k] = f(a.data()[k]);
    } else {
      index i, j;
      ord(k, i, j);
      out(i, j) = f(a(i, j));
    }
  }
};
template <class F, class T, class A, class B>
struct map2 {
  F f;
  matrix_view<T> out;
  matrix_view<const A> a;
  matrix_view<const B> b;
  element_order ord;
  bool flat;
  POLAR_HOST_DEVICE void operator()(index k) const {
    if (flat) {
      out.data()[k] = f(a.data()[k], b.data()[k]);
    } else {
      index i, j;
      ord(k, i, j);
      out(i, j) = f(a(i, j), b(i, j));
    }
  }
};
template <class F, class T, class A, class B, class C>
struct map3 {
  F f;
  matrix_view<T> out;
  matrix_view<const A> a;
  matrix_view<const B> b;
  matrix_view<const C> c;
  element_order ord;
  bool flat;
  POLAR_HOST_DEVICE void operator()(index k) const {
    if (flat) {
      out.data()[k] = f(a.data()[k], b.data()[k], c.data()[k]);
    } else {
      index i, j;
      ord(k, i, j);
      out(i, j) = f(a(i, j), b(i, j), c(i, j));
    }
  }
};

template <class Policy, class F, class T, class... In>
void map(const Policy& policy, F f, matrix_view<T> out, matrix_view<const In>... in) {
  const index n = out.size();
  if (n == 0) return;
  const bool flat = out.is_contiguous() && (flat_compatible(out, in) && ...);
  const auto ord = order_of(out);
  ::thrust::counting_iterator<index> first(0);
  if constexpr (sizeof...(In) == 1)
    ::thrust::for_each_n(policy, first, n, map1<F, T, In...>{f, out, in..., ord, flat});
  else if constexpr (sizeof...(In) == 2)
    ::thrust::for_each_n(policy, first, n, map2<F, T, In...>{f, out, in..., ord, flat});
  else
    ::thrust::for_each_n(policy, first, n, map3<F, T, In...>{f, out, in..., ord, flat});
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

/// Sum over k of g(x(i, j), y(i, j)).
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

template <class Policy, class G, class A, class B>
double sum_of(const Policy& policy, matrix_view<const A> x, matrix_view<const B> y, G g) {
  const index n = x.size();
  if (n == 0) return 0.0;
  const bool flat = x.is_contiguous() && flat_compatible(x, y);
  ::thrust::counting_iterator<index> first(0);
  return ::thrust::transform_reduce(policy, first, first + n,
                                    pair_term<G, A, B>{g, x, y, order_of(x), flat}, 0.0,
                                    ::thrust::plus<double>());
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
  ::thrust::counting_iterator<index> first(0);
  const double m = ::thrust::transform_reduce(
      policy, first, first + n, pair_term<abs_term, T, T>{abs_term{}, x, x, order_of(x), x.is_contiguous()},
      0.0, nan_max{});
  return T(m);
}

template <class Policy, class T>
T norm(const Policy& policy, matrix_view<const T> x) {
  const double s = sum_of(policy, x, x, product_term{});
  const double tiny = std::numeric_limits<double>::min() / std::numeric_limits<double>::epsilon();
  if (finite(s) && s > tiny) return T(std::sqrt(s));
  const double m = widen(max_abs(policy, x));  // zero, tiny, huge or non-finite: look closer
  if (!(m > 0.0) || !finite(m)) return T(m);
  return T(m * std::sqrt(sum_of(policy, x, x, scaled_square_term{1.0 / m})));
}

/// Norm of one line, rescued by scaling when its squares overflow or
/// underflow.
template <class T>
POLAR_HOST_DEVICE double line_norm(vector_view<const T> v) {
  double s = 0;
  for (index k = 0; k < v.size(); ++k) s += widen(v[k]) * widen(v[k]);
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
      double s = 0;
      for (index k = 0; k < row.size(); ++k) s += widen(row[k]);
      out[i] = T(s);
    }
  }
};

/// out(i) = norm or sum of row i of x, one line per thread.
template <class Policy, class T>
void reduce_rows(const Policy& policy, matrix_view<const T> x, vector_view<T> out, bool norm) {
  if (x.rows() == 0) return;
  ::thrust::for_each_n(policy, ::thrust::counting_iterator<index>(0), x.rows(),
                       line_reduce<T>{x, out, norm});
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
  ::thrust::for_each_n(policy, ::thrust::counting_iterator<index>(0), x.size(),
                       scale_lines<T>{s, x, order_of(x)});
}

/// Writes Philox block `first_block + q` into the elements of x it covers.
template <class T>
struct random_blocks {
  philox_stream st;
  distribution d;
  T scale;
  matrix_view<T> x;
  std::uint64_t offset, end, first_block;
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
      x(index(k / cols), index(k % cols)) = T(scale * tmp[e - b * per]);
    }
  }
};

template <class Policy, class T>
void fill_random(const Policy& policy, matrix_view<T> x, const rng_key& key, distribution d, T scale,
                 std::uint64_t offset) {
  const std::uint64_t n = std::uint64_t(x.size());
  if (n == 0) return;
  const std::uint64_t per = philox_stream::per_block<T>(d);
  const std::uint64_t b0 = offset / per, b1 = (offset + n - 1) / per;
  ::thrust::for_each_n(policy, ::thrust::counting_iterator<index>(0), index(b1 - b0 + 1),
                       random_blocks<T>{philox_stream(key), d, scale, x, offset, offset + n, b0});
}

}  // namespace polar::detail::thrust_alg
