// bench/bench_optimizer.cpp: what the model-level optimizer holds and what
// a step costs, on the tensors of a small GPT (polar/optimizer.hpp).
//
//   build/release/bench/bench_optimizer --benchmark_counters_tabular=true
//
// The model: token embedding 256 x d, 4 blocks of (qkv 3d x d, proj d x d,
// fc 4d x d, fc2 d x 4d, two norm gains of d), a final norm and a head
// 256 x d; d = 256 (3.3 M parameters in float). Every heap byte is counted
// (operator new is replaced, examples/heap_count.hpp). Counters, measured in
// the same process:
//
//   state_over_params   heap the optimizer holds after its first step, less
//                       its shared scratch and the AdamW group's moments,
//                       over the bytes of the parameters its matrix group
//                       steps (Muon: the momentum, bar <= 1.05; MD-AdamW: D
//                       and Adam's two moments, 3; Riemannian Adam on the
//                       row sphere: the first moment and a second moment
//                       per row, 1 + 1/cols); the embeddings, head and
//                       gains are in one AdamW group (adamw_over_params, 2)
//   scratch_over_need   the shared scratch over what the largest matrix needs
//                       (Muon with Newton-Schulz: the input and output, two
//                       iterates, two Gram matrices: bar <= 1; Muon only)
//   allocs_per_step     operator new calls per step after the first (bar: 0)
//   ms per step         the benchmark's own time
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <polar/polar.hpp>

#include "heap_count.hpp"

namespace {

using B = polar::backend::eigen;
using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct gpt {
  std::vector<std::string> names;
  std::vector<mat> w, g;
  explicit gpt(polar::index d) {
    B be;
    const auto add = [&](std::string name, polar::index r, polar::index c) {
      names.push_back(std::move(name));
      w.emplace_back(r, c);
      g.emplace_back(r, c);
      be.fill_random(polar::make_view(w.back()), polar::rng_key{std::uint64_t(w.size())}, polar::distribution::normal,
                     0.02f);
      be.fill_random(polar::make_view(g.back()), polar::rng_key{std::uint64_t(1000 + g.size())},
                     polar::distribution::normal, 1e-3f);
    };
    add("wte", 256, d);
    for (int l = 0; l < 4; ++l) {
      const std::string p = "blocks." + std::to_string(l) + ".";
      add(p + "attn.qkv", 3 * d, d);
      add(p + "attn.proj", d, d);
      add(p + "mlp.fc", 4 * d, d);
      add(p + "mlp.fc2", d, 4 * d);
      add(p + "ln1", 1, d);
      add(p + "ln2", 1, d);
    }
    add("ln_f", 1, d);
    add("lm_head", 256, d);
  }
  bool hidden(std::size_t i) const { return names[i].rfind("blocks.", 0) == 0 && w[i].rows() > 1; }
};

// Muon (or another matrix policy) on the blocks' matrices, AdamW on the rest.
template <class Policy, class Prepare>
void bm_model_step(benchmark::State& state, Policy policy, double per_matrix_need, Prepare prepare) {
  B be;
  gpt m(256);
  for (std::size_t i = 0; i < m.w.size(); ++i)
    if (m.hidden(i)) prepare(be, m.w[i]);
  std::vector<polar::param_view<const float>> grads;
  for (auto& g : m.g) grads.emplace_back(polar::make_view(static_cast<const mat&>(g)));
  const long long before = heap_count::live();
  auto opt = std::make_unique<polar::optimizer<B, float>>(be);
  opt->add_group("hidden", policy, polar::rule::name("blocks.*") && polar::rule::matrices());
  opt->add_group("rest", polar::adamw_direction{});
  double hidden_bytes = 0, rest_bytes = 0, need = 0;
  for (std::size_t i = 0; i < m.w.size(); ++i) {
    opt->add(m.names[i], polar::make_view(m.w[i]));
    const double bytes = double(sizeof(float)) * double(m.w[i].size());
    (m.hidden(i) ? hidden_bytes : rest_bytes) += bytes;
    if (m.hidden(i) && per_matrix_need > 0) {
      const double r = double(m.w[i].rows()), c = double(m.w[i].cols()), k = r < c ? r : c;
      need = std::max(need, sizeof(float) * (per_matrix_need * r * c + 2 * k * k + 1));
    }
  }
  opt->step(grads);
  const double held = double(heap_count::live() - before);
  const double scratch = double(opt->scratch_bytes());
  const double adamw_state = 2 * rest_bytes;  // AdamW's moments on the rest
  // Allocations of three more steps, counted outside the benchmark's loop
  // (whose start and end allocate on their own).
  const long long calls = heap_count::allocations();
  for (int k = 0; k < 3; ++k) opt->step(grads);
  const double allocs = double(heap_count::allocations() - calls) / 3;
  for (auto _ : state) opt->step(grads);
  state.counters["state_over_params"] = (held - scratch - adamw_state) / hidden_bytes;
  state.counters["adamw_over_params"] = adamw_state / rest_bytes;
  state.counters["scratch_MiB"] = scratch / (1 << 20);
  if (need > 0) state.counters["scratch_over_need"] = scratch / need;
  state.counters["allocs_per_step"] = allocs;
  state.counters["params_MiB"] = (hidden_bytes + rest_bytes) / (1 << 20);
}

const auto as_is = [](B&, mat&) {};

void bm_muon(benchmark::State& state) { bm_model_step(state, polar::muon_direction<>{}, 4, as_is); }
void bm_md_adamw(benchmark::State& state) { bm_model_step(state, polar::md_adamw{}, 0, as_is); }
void bm_riemannian_adam_rows(benchmark::State& state) {
  polar::riemannian_adam<polar::hypersphere> p;
  p.geometry.scope = polar::sphere_scope::rows;
  bm_model_step(state, p, 0, [&](B& be, mat& w) {
    polar::hypersphere::workspace<B, float> ws;
    p.geometry.project(be, polar::make_view(w), ws);
  });
}

BENCHMARK(bm_muon)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_md_adamw)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_riemannian_adam_rows)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
