// The geometries and their compositions on Thrust's CUDA system: the same
// steps run on the device and on the host (Thrust's CPP system) from the
// same start, and must agree. Built by the `cuda` preset (nvcc); it needs a
// GPU to run, which CI does not have, so CI checks that it compiles.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/manifold_muon.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/geometry/stiefel.hpp"

namespace {

using device_backend = polar::backend::thrust<polar::system::cuda>;
using host_backend = polar::backend::thrust<polar::system::cpp>;

/// Runs `steps` steps of opt from the same start on both backends and
/// returns the largest difference of the results; checks both are on the set.
template <class Opt>
double device_vs_host(Opt opt, polar::index rows, polar::index cols, int steps, Opt host_opt) {
  device_backend dev;
  host_backend host;
  std::vector<float> w(std::size_t(rows * cols)), g(w.size());
  host.fill_random(polar::row_major_view(w.data(), rows, cols), polar::rng_key{1}, polar::distribution::normal);
  typename decltype(opt.geometry)::template workspace<host_backend, float> hws;
  opt.geometry.project(host, polar::row_major_view(w.data(), rows, cols), hws);
  std::vector<float> wh = w;
  ::thrust::device_vector<float> wd(w.begin(), w.end()), gd(w.size());
  const auto dview = polar::make_view(wd, rows, cols);
  const auto gview = polar::make_view(gd, rows, cols);
  auto sd = opt.init(dev, dview);
  auto sh = host_opt.init(host, polar::row_major_view(wh.data(), rows, cols));
  for (int k = 0; k < steps; ++k) {
    host.fill_random(polar::row_major_view(g.data(), rows, cols), polar::rng_key{2, 0, std::uint32_t(k)},
                     polar::distribution::normal);
    cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
    ::thrust::copy(g.begin(), g.end(), gd.begin());
    opt.step(dev, dview, polar::as_const(gview), sd);
    host_opt.step(host, polar::row_major_view(wh.data(), rows, cols),
                  polar::row_major_view(static_cast<const float*>(g.data()), rows, cols), sh);
  }
  std::vector<float> back(w.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(wd.begin(), wd.end(), back.begin());
  typename decltype(opt.geometry)::template workspace<device_backend, float> dws;
  BOOST_TEST(opt.geometry.distance(dev, polar::as_const(dview), dws) <= 1e-4);
  BOOST_TEST(opt.geometry.distance(host, polar::row_major_view(static_cast<const float*>(wh.data()), rows, cols), hws) <= 1e-4);
  double worst = 0;
  for (std::size_t i = 0; i < back.size(); ++i) worst = std::fmax(worst, std::fabs(double(back[i]) - double(wh[i])));
  return worst;
}

template <class Opt>
double device_vs_host(Opt opt, polar::index rows, polar::index cols, int steps) {
  return device_vs_host(opt, rows, cols, steps, opt);
}

/// The fused row-sphere step of opt on the device against the host's fused
/// step and the host's generic sequence.
template <class Opt>
void fused_on_device(Opt opt, const char* name) {
  BOOST_TEST_CONTEXT(name) {
    opt.geometry = {polar::sphere_scope::rows, 2.0};
    opt.direction.lr = 1e-2;
    BOOST_TEST(opt.template takes_fast_path<device_backend>());
    Opt generic = opt;
    generic.fast_paths = false;
    // 700 columns: more than a block's threads, not a multiple of them.
    for (const auto& [rows, cols] : {std::pair<polar::index, polar::index>{300, 700}, {33, 5}}) {
      BOOST_TEST(device_vs_host(opt, rows, cols, 10) <= 1e-4);
      BOOST_TEST(device_vs_host(opt, rows, cols, 10, generic) <= 1e-4);
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(geometry_cuda)

BOOST_AUTO_TEST_CASE(fused_row_sphere_steps_agree_with_the_host) {
  fused_on_device(polar::riemannian_sgd<polar::hypersphere>{}, "sgd");
  fused_on_device(polar::riemannian_momentum<polar::hypersphere>{}, "momentum");
  polar::riemannian_momentum<polar::hypersphere> nesterov;
  nesterov.direction.nesterov = true;
  fused_on_device(nesterov, "nesterov");
  fused_on_device(polar::riemannian_adam<polar::hypersphere>{}, "adam");
}

BOOST_AUTO_TEST_CASE(fused_row_sphere_refusals_write_nothing_on_the_device) {
  device_backend dev;
  polar::riemannian_momentum<polar::hypersphere> opt;
  opt.geometry = {polar::sphere_scope::rows, 1.0};
  opt.check_point = false;
  const polar::index rows = 6, cols = 300;
  std::vector<float> w(std::size_t(rows * cols), 0.5f), g(w.size(), 0.25f);
  for (polar::index j = 0; j < cols; ++j) w[std::size_t(4 * cols + j)] = g[std::size_t(4 * cols + j)] = 0;
  ::thrust::device_vector<float> wd(w.begin(), w.end()), gd(g.begin(), g.end());
  auto s = opt.init(dev, polar::make_view(wd, rows, cols));
  try {
    opt.step(dev, polar::make_view(wd, rows, cols), polar::as_const(polar::make_view(gd, rows, cols)), s);
    BOOST_TEST(false, "a zero row with nothing to step along was stepped");
  } catch (const polar::numerical_error& e) {
    BOOST_TEST(std::string(e.what()).find("row 4") != std::string::npos);
  }
  gd[7] = std::numeric_limits<float>::quiet_NaN();
  BOOST_CHECK_THROW(
      opt.step(dev, polar::make_view(wd, rows, cols), polar::as_const(polar::make_view(gd, rows, cols)), s),
      polar::non_finite_error);
  const std::vector<float> back(wd.begin(), wd.end());
  BOOST_TEST(back == w);
  BOOST_TEST(s.steps == 0);
}


BOOST_AUTO_TEST_CASE(spheres_and_stiefel_agree_with_the_host) {
  for (auto scope : {polar::sphere_scope::flat, polar::sphere_scope::rows, polar::sphere_scope::cols}) {
    polar::riemannian_adam<polar::hypersphere> opt;
    opt.geometry = {scope, 1.0, polar::sphere_retraction::exponential};
    opt.direction.lr = 1e-2;
    BOOST_TEST(device_vs_host(opt, 48, 40, 10) <= 1e-4);
  }
  for (auto retr : {polar::stiefel_retraction::qr, polar::stiefel_retraction::polar, polar::stiefel_retraction::cayley,
                    polar::stiefel_retraction::exponential}) {
    polar::riemannian_momentum<polar::stiefel<>> opt;
    opt.geometry = {polar::stiefel_metric::canonical, retr,
                    retr == polar::stiefel_retraction::cayley ? polar::stiefel_transport::cayley
                                                              : polar::stiefel_transport::projection};
    opt.direction.lr = 1e-2;
    BOOST_TEST(device_vs_host(opt, 64, 16, 10) <= 1e-4);
  }
  polar::riemannian_muon<polar::stiefel<>> muon;
  BOOST_TEST(device_vs_host(muon, 64, 16, 5) <= 1e-3);
}

BOOST_AUTO_TEST_CASE(manifold_muon_agrees_with_the_host) {
  device_backend dev;
  host_backend host;
  polar::manifold_muon<> opt;
  const polar::index n = 40, p = 8;
  std::vector<float> w(std::size_t(n * p)), g(w.size());
  host.fill_random(polar::row_major_view(w.data(), n, p), polar::rng_key{3}, polar::distribution::normal);
  typename polar::stiefel<>::template workspace<host_backend, float> hws;
  opt.geometry().project(host, polar::row_major_view(w.data(), n, p), hws);
  host.fill_random(polar::row_major_view(g.data(), n, p), polar::rng_key{4}, polar::distribution::normal);
  ::thrust::device_vector<float> wd(w.begin(), w.end()), gd(g.begin(), g.end());
  auto sd = opt.init(dev, polar::make_view(wd, n, p));
  auto sh = opt.init(host, polar::row_major_view(w.data(), n, p));
  opt.step(dev, polar::make_view(wd, n, p), polar::as_const(polar::make_view(gd, n, p)), sd);
  opt.step(host, polar::row_major_view(w.data(), n, p), polar::row_major_view(static_cast<const float*>(g.data()), n, p), sh);
  std::vector<float> back(w.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(wd.begin(), wd.end(), back.begin());
  double worst = 0;
  for (std::size_t i = 0; i < back.size(); ++i) worst = std::fmax(worst, std::fabs(double(back[i]) - double(w[i])));
  BOOST_TEST(worst <= 1e-4);
  BOOST_TEST(sd.dual_iterations == sh.dual_iterations);
}

BOOST_AUTO_TEST_SUITE_END()
