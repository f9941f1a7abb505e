// SPSA and decentralized SPSA on Thrust's CUDA system: a replica whose
// weights live on the device proposes the same bytes as a host replica
// (Thrust's CPP system) at every step, and after applying the same records
// holds the same bits: the perturbation is regenerated on the device with
// the host's arithmetic, and the exact restore copies device memory. Built by
// the `cuda` preset (nvcc); it needs a GPU to run, which CI does not have,
// so CI checks that it compiles.
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
      ::thrust::copy(wr.begin(), wr.end(), back.begin());
      BOOST_TEST(std::memcmp(back.data(), wh.data(), sizeof(float) * wh.size()) == 0);
    }
}

BOOST_AUTO_TEST_SUITE_END()
