// The sharded optimizer over NCCL on one GPU (polar/dist/nccl.hpp): a
// communicator of one rank runs every code path of the device form
// (packing with the backend's copies, the average with its maps, NCCL's
// all-gather and group calls, the host-staged exchanges) and must give the
// bits of one polar::optimizer. Run build/cuda/tests/polar_nccl_tests on a
// machine with a GPU (scripts/gpu does); CI only compiles it. Prints
// "nccl_sharded: ok".
#include <cuda_runtime.h>
#include <nccl.h>
#include <thrust/device_vector.h>
#include <thrust/fill.h>
#include <thrust/host_vector.h>
#include <thrust/sequence.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/dist/nccl.hpp"
#include "polar/dist/sharded_optimizer.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/optimizer.hpp"

namespace {

using backend = polar::backend::thrust<polar::system::cuda>;
using dvec = ::thrust::device_vector<float>;

int failures = 0;
void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++failures;
  std::printf("nccl_sharded: FAILED: %s\n", what.c_str());
}

struct shape {
  const char* name;
  polar::index rows, cols;
};
const shape shapes[] = {{"embed", 40, 24}, {"w1", 48, 64}, {"w2", 64, 48}, {"w3", 32, 96}, {"md", 24, 32}, {"bias", 1, 48}};

struct model {
  std::vector<dvec> w;
  explicit model(backend& be) {
    std::uint32_t k = 0;
    for (const auto& s : shapes) {
      w.emplace_back(std::size_t(s.rows * s.cols));
      be.fill_random(polar::make_view(w.back(), s.rows, s.cols), polar::rng_key{5, k++}, polar::distribution::normal, 0.2f);
    }
  }
};

template <class Opt>
void configure(Opt& opt) {
  opt.add_group("md", polar::md_adamw{}, polar::rule::names({"md"}));
  opt.add_group("hidden", polar::muon_direction<>{}, polar::rule::matrices() && !polar::rule::name("embed"));
  opt.add_group("rest", polar::adamw_direction{});
  opt.clip_norm = 1.0;
}
template <class Opt>
void add_all(Opt& opt, model& m) {
  for (std::size_t t = 0; t < m.w.size(); ++t) opt.add(shapes[t].name, polar::make_view(m.w[t], shapes[t].rows, shapes[t].cols));
}
std::vector<polar::param_view<const float>> views(std::vector<dvec>& g) {
  std::vector<polar::param_view<const float>> v;
  for (std::size_t t = 0; t < g.size(); ++t) v.push_back(polar::make_view(g[t], shapes[t].rows, shapes[t].cols));
  return v;
}

void collectives(polar::dist::nccl_communicator& c) {
  dvec a(8), b(8);
  ::thrust::sequence(a.begin(), a.end(), 1.0f);
  const std::size_t bytes = 8 * sizeof(float);
  auto q = c.start_all_to_all(::thrust::raw_pointer_cast(a.data()), &bytes, ::thrust::raw_pointer_cast(b.data()), &bytes);
  c.wait(q);
  expect(::thrust::host_vector<float>(b) == ::thrust::host_vector<float>(a), "all_to_all on one rank copies");
  ::thrust::fill(b.begin(), b.end(), 0.0f);
  q = c.start_all_gather(::thrust::raw_pointer_cast(a.data()), bytes, ::thrust::raw_pointer_cast(b.data()), &bytes);
  c.wait(q);
  expect(::thrust::host_vector<float>(b) == ::thrust::host_vector<float>(a), "all_gather on one rank copies");
  c.broadcast(::thrust::raw_pointer_cast(a.data()), bytes, 0);
  c.barrier();
  double x[2] = {1.5, -2}, y[2] = {};
  const std::size_t hb = sizeof x;
  c.host_all_gather(x, hb, y, &hb);
  expect(y[0] == 1.5 && y[1] == -2, "host_all_gather on one rank copies");
  expect(c.counted().bytes_sent == 0 && c.counted().collectives == 5, "one rank sends nothing to others");
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 1) {
    std::printf("nccl_sharded: no GPU\n");
    return 1;
  }
  try {
    backend be;
    ncclComm_t comm;
    int dev = 0;
    if (ncclCommInitAll(&comm, 1, &dev) != ncclSuccess) throw std::runtime_error("ncclCommInitAll failed");
    polar::dist::nccl_communicator c(comm, be.stream());
    collectives(c);

    model ref(be), got(be);
    polar::optimizer<backend, float> one(be);
    configure(one);
    add_all(one, ref);
    polar::dist::sharded_optimizer<backend, float, polar::dist::nccl_communicator> opt(be, c);
    configure(opt);
    add_all(opt, got);
    for (int s = 0; s < 3; ++s) {
      std::vector<dvec> g;
      std::uint32_t k = 0;
      for (const auto& sh : shapes) {
        g.emplace_back(std::size_t(sh.rows * sh.cols));
        be.fill_random(polar::make_view(g.back(), sh.rows, sh.cols), polar::rng_key{9, k++, std::uint32_t(s)},
                       polar::distribution::normal, 1.0f);
      }
      one.step(views(g));
      opt.step(views(g));
    }
    be.synchronize();
    for (std::size_t t = 0; t < ref.w.size(); ++t) {
      const ::thrust::host_vector<float> a(ref.w[t]), b(got.w[t]);
      expect(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0,
             std::string(shapes[t].name) + ": the sharded step differs from one optimizer's");
    }
    expect(opt.state_bytes() == one.state_bytes(), "one rank holds every state");
    ncclCommDestroy(comm);
  } catch (const std::exception& e) {
    expect(false, std::string("threw: ") + e.what());
  }
  if (failures == 0) std::printf("nccl_sharded: ok (one GPU: collectives, and 3 sharded steps = one optimizer's bits)\n");
  return failures == 0 ? 0 : 1;
}
