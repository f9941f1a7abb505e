// tests/support.hpp: helpers shared by polar's tests.
#pragma once

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar_test {

using polar::index;

/// True in a build under AddressSanitizer (the sanitize preset). A test
/// that repeats one code path many times to measure an accumulated error
/// may repeat it fewer times there, where the point is memory errors and
/// undefined behaviour, which the first repetitions already exercise; it
/// says so where it does, and the Release run keeps the full count.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool under_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool under_sanitizer = true;
#else
inline constexpr bool under_sanitizer = false;
#endif
#else
inline constexpr bool under_sanitizer = false;
#endif

/// A dense row-major host matrix in double: the reference side of tests.
struct host_matrix {
  index rows = 0, cols = 0;
  std::vector<double> v;
  host_matrix() = default;
  host_matrix(index r, index c, double fill = 0.0) : rows(r), cols(c), v(std::size_t(r * c), fill) {}
  double& operator()(index i, index j) { return v[std::size_t(i * cols + j)]; }
  double operator()(index i, index j) const { return v[std::size_t(i * cols + j)]; }
  double norm() const {
    double s = 0;
    for (double x : v) s += x * x;
    return std::sqrt(s);
  }
};

/// Uniform entries in [-1, 1) from a seeded std::mt19937_64 (the test data,
/// not polar's generator).
inline host_matrix random_matrix(index r, index c, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  host_matrix m(r, c);
  for (auto& x : m.v) x = u(g);
  return m;
}

inline host_matrix product(const host_matrix& a, bool ta, const host_matrix& b, bool tb) {
  const index m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
  const index n = tb ? b.rows : b.cols;
  host_matrix c(m, n);
  for (index i = 0; i < m; ++i)
    for (index j = 0; j < n; ++j) {
      double s = 0;
      for (index l = 0; l < k; ++l) s += (ta ? a(l, i) : a(i, l)) * (tb ? b(j, l) : b(l, j));
      c(i, j) = s;
    }
  return c;
}

inline host_matrix transpose(const host_matrix& a) {
  host_matrix t(a.cols, a.rows);
  for (index i = 0; i < a.rows; ++i)
    for (index j = 0; j < a.cols; ++j) t(j, i) = a(i, j);
  return t;
}

/// ||a - b||_F.
inline double distance(const host_matrix& a, const host_matrix& b) {
  BOOST_REQUIRE_EQUAL(a.rows, b.rows);
  BOOST_REQUIRE_EQUAL(a.cols, b.cols);
  double s = 0;
  for (std::size_t i = 0; i < a.v.size(); ++i) s += (a.v[i] - b.v[i]) * (a.v[i] - b.v[i]);
  return std::sqrt(s);
}

/// Relative accuracy tests expect of T's arithmetic on small problems.
template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

/// Checks that `f` throws E and that the message contains every fragment.
template <class E, class F>
void check_throws(F&& f, std::initializer_list<std::string> fragments) {
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    const std::string what = e.what();
    for (const std::string& frag : fragments)
      BOOST_CHECK_MESSAGE(what.find(frag) != std::string::npos,
                          "message \"" << what << "\" lacks \"" << frag << "\"");
  }
  BOOST_CHECK_MESSAGE(thrown, "expected exception not thrown");
}

}  // namespace polar_test
