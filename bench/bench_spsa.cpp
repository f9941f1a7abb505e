// bench/bench_spsa.cpp: SPSA's perturbation pass (regenerate z, add s z)
// against a plain axpy pass over the same memory and against a
// straightforward scalar loop over Random123's Philox4x32-10 with a
// Box-Muller transform, in the same process.
//
//   build/release/bench/bench_spsa --benchmark_counters_tabular=true
//
//   bm_perturb/<dist>/n   x += 1e-3 z on n floats (Eigen backend);
//                         items_per_second: elements per second;
//                         ratio_to_axpy = axpy pass time / this pass time
//                         (the throughput ratio; bar for rademacher: >= 0.5);
//                         ratio_to_scalar (normal only) = scalar Random123
//                         loop time / this pass time (bar: >= 4)
#include <Random123/philox.h>
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "bench_support.hpp"
#include <polar/backend/eigen.hpp>

namespace {

constexpr double two_pi = 6.283185307179586;

// The loop a user would write first: one Philox block per four elements,
// two Box-Muller pairs from it, with the C library's log, sin and cos.
void scalar_random123(std::vector<float>& x, std::uint64_t seed, float scale) {
  using philox = r123::Philox4x32_R<10>;
  philox gen;
  philox::key_type key = {{std::uint32_t(seed), std::uint32_t(seed >> 32)}};
  const std::size_t n = x.size();
  for (std::size_t b = 0; b * 4 < n; ++b) {
    philox::ctr_type ctr = {{std::uint32_t(b), std::uint32_t(b >> 32), 0, 0}};
    const philox::ctr_type r = gen(ctr, key);
    float z[4];
    for (int p = 0; p < 2; ++p) {
      const float u1 = (float(r.v[2 * p] >> 9) + 0.5f) * 0x1p-23f;
      const float u2 = (float(r.v[2 * p + 1] >> 9) + 0.5f) * 0x1p-23f;
      const float rad = std::sqrt(-2.0f * std::log(u1));
      z[2 * p] = rad * std::cos(float(two_pi) * u2);
      z[2 * p + 1] = rad * std::sin(float(two_pi) * u2);
    }
    for (std::size_t k = 0; k < 4 && b * 4 + k < n; ++k) x[b * 4 + k] += scale * z[k];
  }
}

void bm_perturb(benchmark::State& state, polar::distribution d) {
  const polar::index n = state.range(0);
  polar::backend::eigen be;
  std::vector<float> x(std::size_t(n), 0.01f), y(std::size_t(n), 0.02f);
  const auto xv = polar::row_major_view(x.data(), 1, n);
  const auto yv = polar::row_major_view(static_cast<const float*>(y.data()), 1, n);
  std::uint32_t step = 0;
  const auto perturb = [&] { be.add_random(xv, polar::rng_key{42, 0, step++, 0}, d, 1e-3f); };
  for (auto _ : state) perturb();
  state.SetItemsProcessed(state.iterations() * n);
  const auto axpy = [&] { be.axpby(1e-3f, yv, 1.0f, xv); };
  state.counters["ratio_to_axpy"] = polar_bench::interleaved_ratio(axpy, perturb, 5, 0.2);
  if (d == polar::distribution::normal) {
    std::uint64_t seed = 1;
    const auto scalar = [&] { scalar_random123(x, seed++, 1e-3f); };
    state.counters["ratio_to_scalar"] = polar_bench::interleaved_ratio(scalar, perturb, 3, 0.2);
  }
}

}  // namespace

BENCHMARK_CAPTURE(bm_perturb, rademacher, polar::distribution::rademacher)
    ->Arg(1 << 20)
    ->Arg(100000000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(bm_perturb, normal, polar::distribution::normal)
    ->Arg(1 << 20)
    ->Arg(100000000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
