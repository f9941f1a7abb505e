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
//   bm_step_memory/<mode> one SPSA step (estimate, two-sided, and the SGD
//                         step) on 10^7 floats in ten tensors: peak_ratio =
//                         (parameters + the most heap the step held at
//                         once) / parameters (bar, in place: <= 1.01);
//                         counted by this program's operator new
//   bm_restore_drift/<T>  in-place restore on 2^20 weights of scale 0.02,
//                         eps = 1e-3, two-sided (+eps z, -2 eps z, +eps z):
//                         changed_1 = fraction of weights not bit-identical
//                         after one step; rms_1, rms_100 = rms of the drift
//                         after 1 and 100 steps; rms_rel_100 = rms_100 over
//                         the weights' rms
#include <Random123/philox.h>
#include <benchmark/benchmark.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "bench_support.hpp"
#include <polar/backend/eigen.hpp>
#include <polar/estimator/spsa.hpp>

// Heap accounting for bm_step_memory: this program's operator new and
// delete count every byte (polar's buffers use the aligned form).
#include "../examples/heap_count.hpp"

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

void bm_step_memory(benchmark::State& state, polar::spsa_restore mode) {
  polar::backend::eigen be;
  std::vector<std::vector<float>> tensors(10, std::vector<float>(1000000, 0.01f));
  polar::spsa_params<float> p;
  for (auto& t : tensors) p.add(polar::row_major_view(t.data(), 1000, 1000));
  const double param_bytes = double(p.size()) * sizeof(float);
  polar::spsa est;
  est.restore = mode;
  est.samples = 2;
  polar::spsa::workspace<polar::backend::eigen, float> ws;
  const auto loss = [&] {
    double s = 0;
    for (const auto& t : tensors)
      for (float x : t) s += double(x) * x;
    return s;
  };
  long long most = 0;
  std::uint32_t step = 0;
  for (auto _ : state) {
    heap_count::reset_peak();
    const long long start = heap_count::live();
    const auto g = est.estimate(be, p, loss, step++, ws);
    polar::spsa_sgd_step(be, p, g, 1e-3);
    most = std::max(most, heap_count::peak() - start);
  }
  // The exact mode's copy is allocated at its first step and kept in ws.
  const double kept = [&] {
    double k = 0;
    for (const auto& b : ws.copy) k += double(b.size()) * sizeof(float);
    return k;
  }();
  state.counters["extra_bytes"] = double(most);
  state.counters["peak_ratio"] = (param_bytes + std::max(double(most), kept)) / param_bytes;
}

template <class T>
void bm_restore_drift(benchmark::State& state) {
  const polar::index n = 1 << 20;
  polar::backend::eigen be;
  std::vector<float> f(static_cast<std::size_t>(n));
  be.fill_random(polar::row_major_view(f.data(), 1, n), polar::rng_key{5}, polar::distribution::normal, 0.02f);
  std::vector<T> w0(f.begin(), f.end()), w;
  const auto wv = [&] { return polar::row_major_view(w.data(), 1, n); };
  const T eps = T(1e-3f);
  double changed_1 = 0, rms_1 = 0, rms_100 = 0, scale = 0;
  const auto drift = [&] {
    double s = 0;
    for (std::size_t i = 0; i < w.size(); ++i) s += std::pow(double(float(w[i])) - double(float(w0[i])), 2);
    return std::sqrt(s / double(n));
  };
  for (auto _ : state) {
    w = w0;
    for (std::uint32_t k = 0; k < 100; ++k) {
      const polar::rng_key key{9, 0, k, 0};
      be.add_random(wv(), key, polar::distribution::normal, eps);
      be.add_random(wv(), key, polar::distribution::normal, T(-2 * float(eps)));
      be.add_random(wv(), key, polar::distribution::normal, eps);
      if (k == 0) {
        std::size_t c = 0;
        for (std::size_t i = 0; i < w.size(); ++i) c += float(w[i]) != float(w0[i]);
        changed_1 = double(c) / double(n);
        rms_1 = drift();
      }
    }
    rms_100 = drift();
  }
  for (const T& x : w0) scale += double(float(x)) * double(float(x));
  state.counters["changed_1"] = changed_1;
  state.counters["rms_1"] = rms_1;
  state.counters["rms_100"] = rms_100;
  state.counters["rms_rel_100"] = rms_100 / std::sqrt(scale / double(n));
}

}  // namespace

BENCHMARK_CAPTURE(bm_step_memory, in_place, polar::spsa_restore::in_place)->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_step_memory, exact, polar::spsa_restore::exact)->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_restore_drift, float)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_restore_drift, Eigen::half)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_restore_drift, Eigen::bfloat16)->Iterations(1)->Unit(benchmark::kMillisecond);

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
