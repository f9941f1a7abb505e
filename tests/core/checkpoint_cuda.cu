// Checkpoints of states in device memory (Thrust's CUDA system): MD-AdamW
// and Muon states saved on the device load into host states (Thrust's CPP
// system) and back, and a device run resumed from its checkpoint gives the
// bits of one that never stopped. Built by the `cuda` preset (nvcc); it needs
// a GPU to run, which CI does not have, so CI checks that it compiles.
#include <boost/test/unit_test.hpp>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/checkpoint.hpp"
#include "polar/direction/muon.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/nonfinite.hpp"

namespace {

using device_backend = polar::backend::thrust<polar::system::cuda>;
using host_backend = polar::backend::thrust<polar::system::cpp>;

template <class Opt>
void device_resume(const Opt& opt, polar::index rows, polar::index cols) {
  device_backend dev;
  host_backend host;
  std::vector<float> w(std::size_t(rows * cols)), g(w.size());
  host.fill_random(polar::row_major_view(w.data(), rows, cols), polar::rng_key{21}, polar::distribution::normal);
  ::thrust::device_vector<float> wa(w.begin(), w.end()), wb(w.begin(), w.end()), wc(w.begin(), w.end()), gd(w.size());
  const auto va = polar::make_view(wa, rows, cols), vb = polar::make_view(wb, rows, cols),
             vc = polar::make_view(wc, rows, cols);
  auto sa = opt.init(dev, va);
  auto sb = opt.init(dev, vb);
  const auto step = [&](const polar::matrix_view<float>& v, auto& s, int k) {
    host.fill_random(polar::row_major_view(g.data(), rows, cols), polar::rng_key{22, 0, std::uint32_t(k)},
                     polar::distribution::normal);
    cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
    ::thrust::copy(g.begin(), g.end(), gd.begin());
    opt.step(dev, v, polar::as_const(polar::make_view(gd, rows, cols)), s);
  };
  for (int k = 0; k < 8; ++k) step(va, sa, k);
  for (int k = 0; k < 4; ++k) step(vb, sb, k);
  polar::checkpoint ck;
  ck.put(dev, "w", polar::as_const(vb));
  ck.put_state(dev, "s", sb);
  const auto back = polar::checkpoint::parse(ck.serialize());
  // The device state loads into a host state of the same shape.
  std::vector<float> wh(w);
  auto sh = opt.init(host, polar::row_major_view(wh.data(), rows, cols));
  back.get_state(host, "s", sh);
  back.get(host, "w", polar::row_major_view(wh.data(), rows, cols));
  polar::checkpoint from_device, from_host;
  from_device.put_state(dev, "s", sb);
  from_host.put_state(host, "s", sh);
  BOOST_TEST((from_device.serialize() == from_host.serialize()));
  // And into a fresh device state, which goes on like the unbroken run.
  auto sc = opt.init(dev, vc);
  back.get(dev, "w", vc);
  back.get_state(dev, "s", sc);
  for (int k = 4; k < 8; ++k) step(vc, sc, k);
  std::vector<float> ra(w.size()), rc(w.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(wa.begin(), wa.end(), ra.begin());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(wc.begin(), wc.end(), rc.begin());
  BOOST_TEST((ra == rc));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(checkpoint_cuda)

BOOST_AUTO_TEST_CASE(device_states_resume_bit_exactly) {
  device_resume(polar::md_adamw{}, 48, 32);
  device_resume(polar::muon_direction<>{}, 64, 96);
  polar::nonfinite_guard<polar::adamw_direction> guarded;
  guarded.policy = polar::nonfinite_policy::zero;
  device_resume(guarded, 16, 24);
}

BOOST_AUTO_TEST_SUITE_END()
