// The conformance battery on the Thrust backend's host systems (OMP and
// CPP), float and double, and what is particular to Thrust: views of Thrust
// vectors and bit-identical random fills across backends.
#include "polar/backend/thrust.hpp"

#include <thrust/host_vector.h>

#include "conformance/backend_conformance.hpp"
#include "polar/backend/eigen.hpp"

namespace thrust_host_conformance {
using omp_backend = polar::backend::thrust<polar::system::omp>;
using cpp_backend = polar::backend::thrust<polar::system::cpp>;
using conformance_types = boost::mpl::list<polar_test::config<omp_backend, float>,
                                           polar_test::config<omp_backend, double>,
                                           polar_test::config<cpp_backend, float>,
                                           polar_test::config<cpp_backend, double>>;

BOOST_AUTO_TEST_SUITE(thrust_host_backend)
#include "conformance/backend_conformance.ipp"

BOOST_AUTO_TEST_CASE(are_backends_with_names) {
  static_assert(polar::is_backend_v<omp_backend>);
  static_assert(polar::is_backend_v<cpp_backend>);
  static_assert(omp_backend::space == polar::memory_space::host);
  BOOST_TEST(std::string(omp_backend::name()) == "thrust<omp>");
  BOOST_TEST(std::string(cpp_backend::name()) == "thrust<cpp>");
}

using random_types = boost::mpl::list<float, double>;
BOOST_AUTO_TEST_CASE_TEMPLATE(random_fills_are_bit_identical_across_backends, T, random_types) {
  polar::backend::eigen eb;
  omp_backend ob;
  cpp_backend cb;
  const polar::rng_key key{77, 5, 123, 9};
  for (auto d : {polar::distribution::normal, polar::distribution::rademacher, polar::distribution::uniform}) {
    std::vector<T> e(100 * 77), o(100 * 77), c(100 * 77);
    // Different layouts on purpose: the values follow the logical index.
    eb.fill_random(polar::row_major_view(e.data(), 100, 77), key, d, T(1), 11);
    ob.fill_random(polar::col_major_view(o.data(), 100, 77), key, d, T(1), 11);
    cb.fill_random(polar::row_major_view(c.data(), 100, 77), key, d, T(1), 11);
    const auto ov = polar::col_major_view(o.data(), 100, 77);
    std::size_t bad = 0;
    for (polar::index i = 0; i < 100; ++i)
      for (polar::index j = 0; j < 77; ++j) {
        const T ev = e[std::size_t(i * 77 + j)];
        bad += std::memcmp(&ev, &ov(i, j), sizeof(T)) != 0;
        bad += std::memcmp(&ev, &c[std::size_t(i * 77 + j)], sizeof(T)) != 0;
      }
    BOOST_TEST(bad == 0u);
  }
}

BOOST_AUTO_TEST_CASE(views_of_thrust_vectors) {
  ::thrust::host_vector<float> h(12);
  for (int i = 0; i < 12; ++i) h[std::size_t(i)] = float(i);
  const auto v = polar::make_view(h, 3, 4);
  BOOST_TEST(v.space() == polar::memory_space::host);
  BOOST_TEST(v(2, 1) == 9.0f);
  const auto c = polar::make_view(h, 3, 4, polar::layout::col_major);
  BOOST_TEST(c(2, 1) == 5.0f);
  ::thrust::omp::vector<double> ov(6, 1.5);
  BOOST_TEST(polar::make_view(ov, 2, 3).space() == polar::memory_space::host);
  omp_backend b;
  BOOST_TEST(b.sum(polar::make_view(ov, 2, 3)) == 9.0);
  polar_test::check_throws<polar::shape_error>([&] { (void)polar::make_view(h, 4, 4); },
                                               {"polar::make_view", "4x4", "16", "12"});
#if THRUST_DEVICE_SYSTEM != THRUST_DEVICE_SYSTEM_CUDA
  // With THRUST_DEVICE_SYSTEM set to OMP (the polar::thrust target's default
  // without nvcc) thrust::device_vector lives on the host, and its view says
  // so. (In the CUDA configuration this file is compiled by the host compiler,
  // which cannot make a device_vector; tests/backend/thrust_cuda.cu covers it.)
  ::thrust::device_vector<float> dv(4, 0.0f);
  const auto dview = polar::make_view(dv, 2, 2);
  static_assert(std::is_same_v<decltype(dview), const polar::matrix_view<float>>);
  BOOST_TEST(dview.space() == polar::memory_space::host);
  BOOST_TEST(b.norm(dview) == 0.0f);
#endif
  // A view that claims device memory is refused by the host systems.
  polar_test::check_throws<polar::memory_space_error>(
      [&] {
        b.fill(polar::row_major_view(h.data(), 3, 4, -1, polar::memory_space::device), 1.0f);
      },
      {"polar::fill", "device memory", "host memory"});
}

BOOST_AUTO_TEST_SUITE_END()
}  // namespace thrust_host_conformance
