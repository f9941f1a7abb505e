// The conformance battery on the Thrust backend's CUDA system, float and
// double. Built by the `cuda` preset (nvcc, sm_80 and sm_90); it needs a GPU
// to run, which CI does not have.
#include "polar/backend/thrust.hpp"
#include "polar/direction/adamw.hpp"

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

BOOST_AUTO_TEST_CASE(a_backend_on_the_callers_stream_queues_its_steps_there) {
  cudaStream_t stream = nullptr;
  BOOST_REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  {
    cuda_backend own;
    cuda_backend borrowed(stream);
    BOOST_TEST(borrowed.stream() == stream);
    BOOST_TEST(own.stream() != stream);
    // The same AdamW steps on both give the same bits.
    const polar::index r = 40, c = 300;
    ::thrust::device_vector<float> w1(r * c), w2(r * c), g(r * c);
    own.fill_random(polar::make_view(w1, r, c), polar::rng_key{5}, polar::distribution::normal);
    own.fill_random(polar::make_view(g, r, c), polar::rng_key{6}, polar::distribution::normal);
    own.synchronize();
    w2 = w1;
    polar::adamw_direction adamw;
    auto s1 = adamw.init(own, polar::make_view(w1, r, c));
    auto s2 = adamw.init(borrowed, polar::make_view(w2, r, c));
    for (int k = 0; k < 3; ++k) {
      adamw.step(own, polar::make_view(w1, r, c), polar::as_const(polar::make_view(g, r, c)), s1);
      adamw.step(borrowed, polar::make_view(w2, r, c), polar::as_const(polar::make_view(g, r, c)), s2);
    }
    own.synchronize();
    BOOST_REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    const std::vector<float> a(w1.begin(), w1.end()), b(w2.begin(), w2.end());
    BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
  // The backend is gone and the stream, not its own, is still usable.
  BOOST_TEST(cudaStreamSynchronize(stream) == cudaSuccess);
  BOOST_TEST(cudaStreamDestroy(stream) == cudaSuccess);
}

BOOST_AUTO_TEST_SUITE_END()
}  // namespace thrust_cuda_conformance
