// tests/backends.hpp: the backends the algorithm suites run on.
//
// Every algorithm suite runs on the Eigen backend. Where CCCL is there
// (polar::thrust; CMake defines POLAR_TEST_THRUST), the same suites also run
// on Thrust's OMP and CPP host systems; without it they still build and run
// on Eigen alone, so a machine without the CUDA toolkit tests every
// algorithm.
#pragma once

#include <boost/mpl/list.hpp>

#include "polar/backend/eigen.hpp"
#if POLAR_TEST_THRUST
#include "polar/backend/thrust.hpp"
#endif

namespace polar_test {

#if POLAR_TEST_THRUST
#if POLAR_TEST_NO_THRUST_CPP
/// Eigen and thrust<omp>: the sanitize preset leaves thrust<cpp> out
/// (POLAR_TEST_THRUST_CPP=OFF): polar's code on it is thrust<omp>'s, with
/// Thrust's serial algorithms, and the Release run covers it.
using host_backends = boost::mpl::list<polar::backend::eigen, polar::backend::thrust<polar::system::omp>>;
#else
/// Eigen, thrust<omp> and thrust<cpp>.
using host_backends = boost::mpl::list<polar::backend::eigen, polar::backend::thrust<polar::system::omp>,
                                       polar::backend::thrust<polar::system::cpp>>;
#endif
/// Eigen and thrust<omp>.
using eigen_and_omp = boost::mpl::list<polar::backend::eigen, polar::backend::thrust<polar::system::omp>>;
/// thrust<omp> where it is built, else Eigen.
using omp_or_eigen = polar::backend::thrust<polar::system::omp>;
/// thrust<cpp> where it is built, else Eigen.
using cpp_or_eigen = polar::backend::thrust<polar::system::cpp>;
#else
using host_backends = boost::mpl::list<polar::backend::eigen>;
using eigen_and_omp = boost::mpl::list<polar::backend::eigen>;
using omp_or_eigen = polar::backend::eigen;
using cpp_or_eigen = polar::backend::eigen;
#endif

}  // namespace polar_test
