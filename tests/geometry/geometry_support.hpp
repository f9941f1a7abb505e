// tests/geometry/geometry_support.hpp: what the geometry tests share: the
// host backends they run on, dense row-major Eigen matrices filled from
// polar's generator, and their read-only views.
#pragma once

#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <cstdint>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"

namespace geometry_test {

template <class T>
using mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using dmat = mat<double>;
using backends = polar_test::eigen_and_omp;

/// An r x c matrix of standard normal values from the key {seed}.
template <class T = double, class B>
mat<T> random(B& be, polar::index r, polar::index c, std::uint64_t seed) {
  mat<T> m(r, c);
  be.fill_random(polar::make_view(m), polar::rng_key{seed}, polar::distribution::normal);
  return m;
}

/// A read-only view of m.
template <class T>
polar::matrix_view<const T> cv(const mat<T>& m) {
  return polar::make_view(m);
}

}  // namespace geometry_test
