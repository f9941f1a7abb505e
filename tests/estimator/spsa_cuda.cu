// SPSA and decentralized SPSA on Thrust's CUDA system: a replica whose
// weights live on the device proposes the same bytes as a host replica
// (Thrust's CPP system) at every step, and after applying the same records
// holds the same bits: the perturbation is regenerated on the device with
// the host's arithmetic, and the exact restore copies device memory. Built by
// the `cuda` preset (nvcc); it needs a GPU to run, which CI does not have,
// so CI checks that it compiles.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <Eigen/Core>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/estimator/decentralized.hpp"

namespace {

using device_backend = polar::backend::thrust<polar::system::cuda>;
using host_backend = polar::backend::thrust<polar::system::cpp>;

double quadratic(const std::vector<float>& w) {
  double s = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double d = double(w[i]) - 0.01 * double(i % 13);
    s += 0.5 * (1 + double(i % 7)) * d * d;
  }
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(spsa_cuda)

BOOST_AUTO_TEST_CASE(a_device_replica_matches_a_host_replica_bit_for_bit) {
  for (auto dist : {polar::distribution::normal, polar::distribution::rademacher})
    BOOST_TEST_CONTEXT(polar::to_string(dist)) {
      const polar::index rows = 37, cols = 53;
      device_backend dev;
      host_backend host;
      std::vector<float> wh(std::size_t(rows * cols));
      host.fill_random(polar::row_major_view(wh.data(), rows, cols), polar::rng_key{5}, polar::distribution::normal,
                       0.05f);
      ::thrust::device_vector<float> wd(wh.begin(), wh.end());
      polar::spsa_params<float> ph, pd;
      ph.add(polar::row_major_view(wh.data(), rows, cols));
      pd.add(polar::make_view(wd, rows, cols));
      polar::shared_spsa cfg;
      cfg.seed = 31;
      cfg.lr = 1e-3;
      cfg.dist = dist;
      polar::decentralized_spsa<host_backend, float> rh(cfg, 0);
      polar::decentralized_spsa<device_backend, float> rd(cfg, 0);
      std::vector<float> back(wh.size());
      const auto device_loss = [&] {
        cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
        ::thrust::copy(wd.begin(), wd.end(), back.begin());
        return quadratic(back);
      };
      for (int s = 0; s < 40; ++s) {
        const std::uint8_t bh = rh.propose(host, ph, [&] { return quadratic(wh); });
        const std::uint8_t bd = rd.propose(dev, pd, device_loss);
        BOOST_TEST(bh == bd, "step " << s);
        // Machine 0's byte and a second machine's, as a run would apply them.
        const std::vector<polar::byte_record> records{{0, bh}, {9, std::uint8_t(1 + s % 100)}};
        rh.apply(host, ph, records);
        rd.apply(dev, pd, records);
      }
      cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
      ::thrust::copy(wd.begin(), wd.end(), back.begin());
      BOOST_TEST(std::memcmp(back.data(), wh.data(), sizeof(float) * wh.size()) == 0);
      // Replaying the host's log on the device from the start gives the same.
      std::vector<float> w0(wh.size());
      host.fill_random(polar::row_major_view(w0.data(), rows, cols), polar::rng_key{5}, polar::distribution::normal,
                       0.05f);
      ::thrust::device_vector<float> wr(w0.begin(), w0.end());
      polar::spsa_params<float> pr;
      pr.add(polar::make_view(wr, rows, cols));
      polar::replay(dev, pr, rh.log());
      cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
      ::thrust::copy(wr.begin(), wr.end(), back.begin());
      BOOST_TEST(std::memcmp(back.data(), wh.data(), sizeof(float) * wh.size()) == 0);
    }
}

// 16-bit parameters: CUDA's __half and __nv_bfloat16 on the device against
// Eigen's half and bfloat16 on the host (both IEEE binary16 and bfloat16,
// compared as bits). SPSA steps with the default restore (exact for 16-bit
// types) and the SGD step: the same bits after 20 steps.
template <class DeviceT, class HostT>
void sixteen_bit_steps_match() {
  static_assert(sizeof(DeviceT) == 2 && sizeof(HostT) == 2, "16-bit types");
  const polar::index rows = 19, cols = 23;
  device_backend dev;
  host_backend host;
  std::vector<HostT> wh(std::size_t(rows * cols));
  for (std::size_t i = 0; i < wh.size(); ++i) wh[i] = HostT(0.02f * float(int(i * 37 % 23) - 11));
  std::vector<DeviceT> staged(wh.size());
  std::memcpy(staged.data(), wh.data(), 2 * wh.size());
  ::thrust::device_vector<DeviceT> wd(staged.begin(), staged.end());
  polar::spsa_params<HostT> ph;
  polar::spsa_params<DeviceT> pd;
  ph.add(polar::row_major_view(wh.data(), rows, cols));
  pd.add(polar::make_view(wd, rows, cols));
  polar::spsa est;
  est.seed = 3;
  est.epsilon = 1e-2;
  typename polar::spsa::template workspace<host_backend, HostT> wsh;
  typename polar::spsa::template workspace<device_backend, DeviceT> wsd;
  const auto loss = [](const auto& v) {
    double s = 0;
    for (const auto& x : v) s += (double(float(x)) - 0.01) * (double(float(x)) - 0.01);
    return s;
  };
  std::vector<DeviceT> back(wh.size());
  for (std::uint32_t k = 0; k < 20; ++k) {
    const auto gh = est.estimate(host, ph, [&] { return loss(wh); }, k, wsh);
    const auto gd = est.estimate(dev, pd, [&] {
      cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
      ::thrust::copy(wd.begin(), wd.end(), back.begin());
      return loss(back);
    }, k, wsd);
    BOOST_TEST(gh.projected[0] == gd.projected[0], "step " << k);
    polar::spsa_sgd_step(host, ph, gh, 0.05);
    polar::spsa_sgd_step(dev, pd, gd, 0.05);
  }
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(wd.begin(), wd.end(), back.begin());
  BOOST_TEST(std::memcmp(back.data(), wh.data(), 2 * wh.size()) == 0);
}

BOOST_AUTO_TEST_CASE(sixteen_bit_parameters_match_the_host) {
  sixteen_bit_steps_match<__half, Eigen::half>();
  sixteen_bit_steps_match<__nv_bfloat16, Eigen::bfloat16>();
}

BOOST_AUTO_TEST_SUITE_END()
