// The conformance battery on the Thrust backend's CUDA system, float and
// double. Built by the `cuda` preset (nvcc, sm_80 and sm_90); it needs a GPU
// to run, which CI does not have.
#include "polar/backend/thrust.hpp"

#include "conformance/backend_conformance.hpp"

namespace thrust_cuda_conformance {
using cuda_backend = polar::backend::thrust<polar::system::cuda>;
using conformance_types = boost::mpl::list<polar_test::config<cuda_backend, float>,
                                           polar_test::config<cuda_backend, double>>;

BOOST_AUTO_TEST_SUITE(thrust_cuda_backend)
#include "conformance/backend_conformance.ipp"

BOOST_AUTO_TEST_CASE(is_a_device_backend) {
  static_assert(polar::is_backend_v<cuda_backend>);
  static_assert(cuda_backend::space == polar::memory_space::device);
  BOOST_TEST(std::string(cuda_backend::name()) == "thrust<cuda>");
}

BOOST_AUTO_TEST_CASE(host_memory_is_refused_with_a_typed_error) {
  cuda_backend b;
  std::vector<float> host(12, 1.0f);
  polar_test::check_throws<polar::memory_space_error>(
      [&] { b.scale(2.0f, polar::row_major_view(host.data(), 3, 4)); },
      {"polar::scale", "host memory", "device memory"});
  BOOST_TEST(host[0] == 1.0f);
}

BOOST_AUTO_TEST_CASE(random_fills_match_the_host_generator_bit_for_bit) {
  cuda_backend b;
  const polar::rng_key key{2026, 1, 2, 3};
  const polar::philox_stream st(key);
  ::thrust::device_vector<float> dv(64 * 33);
  b.fill_random(polar::make_view(dv, 64, 33), key, polar::distribution::normal);
  std::vector<float> got(64 * 33);
  b.copy_to_host(polar::make_view(dv, 64, 33), polar::row_major_view(got.data(), 64, 33));
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const float want = st.normal<float>(i);
    bad += std::memcmp(&want, &got[i], sizeof(float)) != 0;
  }
  BOOST_TEST(bad == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
}  // namespace thrust_cuda_conformance
