// Magnitude-direction gains on Thrust's CUDA system: MD-AdamW (the fused
// two-kernel step) and MD-Muon (every gain scope and sphere) run on the
// device, and the generic sequence on the host (Thrust's CPP system, with
// fast_paths off), from the same start, and must agree. Built by the `cuda` preset (nvcc); it needs a GPU to run,
// which CI does not have, so CI checks that it compiles.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/gains/row_col_gains.hpp"

namespace {

using device_backend = polar::backend::thrust<polar::system::cuda>;
using host_backend = polar::backend::thrust<polar::system::cpp>;

/// Runs `steps` steps of opt from the same start on both backends; returns
/// the largest difference of the fused weights over the largest weight.
template <class Opt>
double device_vs_host(const Opt& opt, polar::index rows, polar::index cols, int steps) {
  Opt generic = opt;
  generic.fast_paths = false;
  device_backend dev;
  host_backend host;
  std::vector<float> w(std::size_t(rows * cols)), g(w.size());
  host.fill_random(polar::row_major_view(w.data(), rows, cols), polar::rng_key{11}, polar::distribution::normal);
  std::vector<float> wh = w;
  ::thrust::device_vector<float> wd(w.begin(), w.end()), gd(w.size());
  const auto dview = polar::make_view(wd, rows, cols);
  const auto hview = polar::row_major_view(wh.data(), rows, cols);
  auto sd = opt.init(dev, dview);
  auto sh = opt.init(host, hview);
  for (int k = 0; k < steps; ++k) {
    host.fill_random(polar::row_major_view(g.data(), rows, cols), polar::rng_key{12, 0, std::uint32_t(k)},
                     polar::distribution::normal);
    cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
    ::thrust::copy(g.begin(), g.end(), gd.begin());
    opt.step(dev, dview, polar::as_const(polar::make_view(gd, rows, cols)), sd);
    generic.step(host, hview, polar::row_major_view(static_cast<const float*>(g.data()), rows, cols), sh);
  }
  // The device's D, settled (the fused step leaves its factors pending),
  // against the host's.
  sd.settle(dev);
  BOOST_TEST(!sd.pending());
  std::vector<float> dd(w.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(::thrust::device_pointer_cast(sd.d.data()), ::thrust::device_pointer_cast(sd.d.data()) + dd.size(),
                 dd.begin());
  double dworst = 0;
  for (std::size_t i = 0; i < dd.size(); ++i)
    dworst = std::fmax(dworst, std::fabs(double(dd[i]) - double(sh.d.data()[i])));
  BOOST_TEST(dworst <= 1e-3);
  std::vector<float> back(w.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(wd.begin(), wd.end(), back.begin());
  double worst = 0, big = 0;
  for (std::size_t i = 0; i < back.size(); ++i) {
    worst = std::fmax(worst, std::fabs(double(back[i]) - double(wh[i])));
    big = std::fmax(big, std::fabs(double(wh[i])));
  }
  BOOST_TEST(sd.steps == steps);
  return worst / big;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(gains_cuda)

BOOST_AUTO_TEST_CASE(md_adamw_and_md_muon_agree_with_the_host) {
  for (auto gains : {polar::gain_scope::both, polar::gain_scope::rows, polar::gain_scope::cols,
                     polar::gain_scope::scalar})
    for (auto sphere : {polar::sphere_scope::flat, polar::sphere_scope::rows, polar::sphere_scope::cols}) {
      // Row (column) spheres need row (column) gains to carry W's norms.
      if (sphere == polar::sphere_scope::rows && gains != polar::gain_scope::both && gains != polar::gain_scope::rows)
        continue;
      if (sphere == polar::sphere_scope::cols && gains != polar::gain_scope::both && gains != polar::gain_scope::cols)
        continue;
      BOOST_TEST_CONTEXT("gains " << int(gains) << " sphere " << int(sphere)) {
        polar::md_adamw adam;
        adam.gains = gains;
        adam.sphere = sphere;
        adam.direction.lr = 1e-2;
        adam.gain_direction.lr = 1e-2;
        BOOST_TEST(device_vs_host(adam, 48, 72, 10) <= 1e-4);
        // More rows than the column sums' blocks, more columns than a
        // block's threads.
        BOOST_TEST(device_vs_host(adam, 300, 1100, 3) <= 1e-4);
        polar::md_muon muon;
        muon.gains = gains;
        muon.sphere = sphere;
        muon.direction.lr = 1e-2;
        muon.gain_direction.lr = 1e-2;
        BOOST_TEST(device_vs_host(muon, 48, 72, 5) <= 1e-3);
      }
    }
}

BOOST_AUTO_TEST_SUITE_END()
