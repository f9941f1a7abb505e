// bench/bench_gpt.cpp: one training step of the GPT example (examples/gpt)
// at its default size (4 blocks of width 128, 4 heads, batch 16 x 128
// characters) with AdamW and with Muon through polar::optimizer, on the
// Eigen backend with OpenMP's threads.
//
// Counters:
//   mfu              the model's flops per step (gpt::flops_per_token: 6 per
//                    parameter in a product and token, plus attention) over
//                    the step time, over the GEMM rate of the MLP's product
//                    measured in the same process: the bar is 0.30
//   optimizer_share  the optimizer's step over the whole training step
//                    (forward, backward, step): the bar for Muon is 0.25
//   tokens_per_s     characters trained on per second
//
// The tokens are drawn at random (the speed does not depend on them).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "gpt/data.hpp"
#include "gpt/recipes.hpp"

namespace {

using backend = polar::backend::eigen;
using clock_type = std::chrono::steady_clock;

void bm_gpt_step(benchmark::State& state, const char* optimizer) {
  polar::use_openmp_threads(true);  // as polar_gpt does: the model's loops are OpenMP's
  backend be;
  gpt::config c;
  c.vocab = 84;  // Shakespeare's characters
  const int B = 16, T = c.context;
  gpt::model<backend, float> m(be, c, 1);
  gpt::recipe r;
  r.optimizer = optimizer;
  r.lr = r.optimizer == "adamw" ? 3e-3 : 0.02;
  r.steps = 1000000;
  auto opt = gpt::make_optimizer(be, m, r);
  std::vector<polar::param_view<const float>> grads;
  for (std::size_t k = 0; k < m.tensors().size(); ++k) grads.push_back(m.gradient(k));
  std::vector<int> x(std::size_t(B) * std::size_t(T)), y(x.size());
  std::uint64_t s = 7;
  for (std::size_t i = 0; i < x.size(); ++i) {
    s = gpt::mix(s);
    x[i] = int(s % std::uint64_t(c.vocab));
    y[i] = int((s >> 32) % std::uint64_t(c.vocab));
  }
  const double rate = gpt::gemm_rate(be, polar::index(B) * T, c.width, 0.2);
  // One step untimed: the optimizer's states and scratch are made on the first.
  m.forward(x.data(), y.data(), B, T);
  m.backward();
  opt->step(grads);
  double model_s = 0, opt_s = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    benchmark::DoNotOptimize(m.forward(x.data(), y.data(), B, T));
    m.backward();
    const auto t1 = clock_type::now();
    opt->step(grads);
    const auto t2 = clock_type::now();
    model_s += std::chrono::duration<double>(t1 - t0).count();
    opt_s += std::chrono::duration<double>(t2 - t1).count();
  }
  const double steps = double(state.iterations()), total = model_s + opt_s;
  const double flops = gpt::flops_per_token(c, T) * B * T;
  state.counters["mfu"] = flops * steps / total / rate;
  state.counters["optimizer_share"] = opt_s / total;
  state.counters["tokens_per_s"] = double(B) * T * steps / total;
  state.counters["gemm_gflops"] = rate * 1e-9;
  state.counters["threads"] = be.threads();
}

void adamw(benchmark::State& s) { bm_gpt_step(s, "adamw"); }
void muon(benchmark::State& s) { bm_gpt_step(s, "muon"); }

}  // namespace

BENCHMARK(adamw)->Name("gpt_step/adamw")->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK(muon)->Name("gpt_step/muon")->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

BENCHMARK_MAIN();
