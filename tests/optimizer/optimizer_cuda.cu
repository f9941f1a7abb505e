// The model-level optimizer on Thrust's CUDA system: one optimizer with
// Muon, MD-AdamW, Riemannian Adam on the row sphere and AdamW groups over
// device tensors, with a cosine schedule and global clipping, steps each
// tensor bit for bit as its bare policy does on the device (same backend,
// same sequence), and its checkpoint resumes bit-exactly. Built by the
// `cuda` preset (nvcc); it needs a GPU to run, which CI does not have, so
// CI checks that it compiles.
#include <boost/test/unit_test.hpp>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/optimizer.hpp"

namespace {

using device_backend = polar::backend::thrust<polar::system::cuda>;
using dvec = ::thrust::device_vector<float>;

dvec random_device(device_backend& be, polar::index rows, polar::index cols, std::uint32_t seed) {
  dvec v(std::size_t(rows * cols));
  be.fill_random(polar::make_view(v, rows, cols), polar::rng_key{seed}, polar::distribution::normal, 0.5f);
  return v;
}

std::vector<float> host_copy(const dvec& v) {
  std::vector<float> h(v.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(v.begin(), v.end(), h.begin());
  return h;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(optimizer_cuda)

BOOST_AUTO_TEST_CASE(groups_match_their_bare_policies_on_the_device) {
  device_backend be;
  const polar::index d = 64;
  dvec hidden = random_device(be, 2 * d, d, 1), embed = random_device(be, 40, d, 2);
  dvec sphere(std::size_t(d * d), 0.125f), bias = random_device(be, 1, d, 4);
  dvec hidden0 = hidden, embed0 = embed, sphere0 = sphere, bias0 = bias;

  polar::optimizer<device_backend, float> opt(be);
  opt.add_group("embed", polar::md_adamw{}, polar::rule::name("embed"));
  polar::riemannian_adam<polar::hypersphere> ra;
  ra.geometry.scope = polar::sphere_scope::rows;
  ra.geometry.radius = 1.0;  // each row of 64 entries of 1/8 has norm 1
  opt.add_group("sphere", ra, polar::rule::name("sphere"));
  opt.add_group("hidden", polar::muon_direction<>{}, polar::rule::matrices());
  opt.add_group("rest", polar::adamw_direction{});
  opt.group("hidden").lr_schedule = polar::schedule::cosine(10, 0.1, 2);
  opt.add("embed", polar::make_view(embed, 40, d));
  opt.add("sphere", polar::make_view(sphere, d, d));
  opt.add("hidden", polar::make_view(hidden, 2 * d, d));
  opt.add("bias", polar::make_view(bias, 1, d));

  const polar::md_adamw md{};
  polar::muon_direction<> mu{};
  const auto s_cos = polar::schedule::cosine(10, 0.1, 2);
  auto se = md.init(be, polar::as_const(polar::make_view(embed0, 40, d)));
  auto ss = ra.init(be, polar::as_const(polar::make_view(sphere0, d, d)));
  auto sh = mu.init(be, polar::as_const(polar::make_view(hidden0, 2 * d, d)));
  auto sb = polar::adamw_direction{}.init(be, polar::as_const(polar::make_view(bias0, 1, d)));
  for (int k = 0; k < 4; ++k) {
    const dvec ge = random_device(be, 40, d, 100 + k), gs = random_device(be, d, d, 200 + k);
    const dvec gh = random_device(be, 2 * d, d, 300 + k), gb = random_device(be, 1, d, 400 + k);
    opt.step({polar::make_view(ge, 40, d), polar::make_view(gs, d, d), polar::make_view(gh, 2 * d, d),
              polar::make_view(gb, 1, d)});
    md.step(be, polar::make_view(embed0, 40, d), polar::make_view(ge, 40, d), se);
    ra.step(be, polar::make_view(sphere0, d, d), polar::make_view(gs, d, d), ss);
    mu.lr = 0.02 * s_cos(k);
    mu.step(be, polar::make_view(hidden0, 2 * d, d), polar::make_view(gh, 2 * d, d), sh);
    polar::adamw_direction{}.step(be, polar::make_view(bias0, 1, d), polar::make_view(gb, 1, d), sb);
  }
  BOOST_TEST(host_copy(embed) == host_copy(embed0));
  BOOST_TEST(host_copy(sphere) == host_copy(sphere0));
  BOOST_TEST(host_copy(hidden) == host_copy(hidden0));
  BOOST_TEST(host_copy(bias) == host_copy(bias0));
  BOOST_TEST(opt.scratch_bytes() > 0u);

  // Clipping and a checkpoint round trip on the device.
  opt.clip_norm = 0.5;
  const dvec ge = random_device(be, 40, d, 900), gs = random_device(be, d, d, 901);
  const dvec gh = random_device(be, 2 * d, d, 902), gb = random_device(be, 1, d, 903);
  polar::checkpoint ck;
  opt.save(ck);
  const auto grads = std::vector<polar::param_view<const float>>{
      polar::make_view(ge, 40, d), polar::make_view(gs, d, d), polar::make_view(gh, 2 * d, d),
      polar::make_view(gb, 1, d)};
  opt.step(grads);
  const auto after = host_copy(hidden);
  opt.load(ck);
  opt.step(grads);
  BOOST_TEST(host_copy(hidden) == after);
  BOOST_TEST(opt.last_norm() > 0.5);
}

BOOST_AUTO_TEST_SUITE_END()
