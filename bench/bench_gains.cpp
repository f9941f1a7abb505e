// bench/bench_gains.cpp: the step of magnitude-direction decoupling against
// the step of its base direction on the same matrix, in the same process.
//
//   build/release/bench/bench_gains --benchmark_counters_tabular=true
//
//   bm_md/<base>/r/c        ratio_to_base = an md_<base> step (row and column
//                           gains, flat sphere, the defaults) over the base
//                           direction's own step on the same r x c float
//                           matrix (bar: <= 1.15 at 1024 x 4096): for AdamW
//                           the median over 201 pairs of calls, for Muon of
//                           seven interleaved rounds
//   bm_md_omp/<base>/r/c    the same on thrust<omp>
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <Eigen/Dense>
#include <polar/backend/eigen.hpp>
#include <polar/gains/row_col_gains.hpp>
#if defined(POLAR_BENCH_THRUST)
#include <polar/backend/thrust.hpp>
#endif

namespace {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class B, class Direction>
void md_on(benchmark::State& state, Direction base) {
  const polar::index rows = state.range(0), cols = state.range(1);
  polar::backend::eigen setup;
  B be;
  fmat w(rows, cols), g(rows, cols);
  setup.fill_random(polar::make_view(w), polar::rng_key{1}, polar::distribution::normal);
  setup.fill_random(polar::make_view(g), polar::rng_key{2}, polar::distribution::normal);
  w *= 0.02f;
  g *= 1e-3f;
  base.weight_decay = 0;
  polar::row_col_gains<Direction> md;
  md.direction = base;
  fmat wm = w, wb = w;
  auto sm = md.init(be, polar::make_view(wm));
  auto sb = base.init(be, polar::make_view(wb));
  const polar::matrix_view<const float> gv = polar::make_view(static_cast<const fmat&>(g));
  const auto md_step = [&] { md.step(be, polar::make_view(wm), gv, sm); };
  const auto base_step = [&] { base.step(be, polar::make_view(wb), gv, sb); };
  for (auto _ : state) md_step();
  // AdamW's step takes milliseconds: pair the calls; Muon's, a second at
  // the bar's size: seven interleaved rounds.
  state.counters["ratio_to_base"] = std::is_same_v<Direction, polar::adamw_direction>
                                        ? polar_bench::paired_ratio(md_step, base_step, 201)
                                        : polar_bench::interleaved_ratio(md_step, base_step, 7, 0.3);
}

void bm_md(benchmark::State& s, polar::adamw_direction d) { md_on<polar::backend::eigen>(s, d); }
void bm_md(benchmark::State& s, polar::muon_direction<> d) { md_on<polar::backend::eigen>(s, d); }
#if defined(POLAR_BENCH_THRUST)
using omp_be = polar::backend::thrust<polar::system::omp>;
void bm_md_omp(benchmark::State& s, polar::adamw_direction d) { md_on<omp_be>(s, d); }
void bm_md_omp(benchmark::State& s, polar::muon_direction<> d) { md_on<omp_be>(s, d); }
#endif

}  // namespace

BENCHMARK_CAPTURE(bm_md, adamw, polar::adamw_direction{})->Args({256, 256})->Args({1024, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_md, muon, polar::muon_direction<>{})->Args({256, 256})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->Iterations(2);
#if defined(POLAR_BENCH_THRUST)
BENCHMARK_CAPTURE(bm_md_omp, adamw, polar::adamw_direction{})->Args({256, 256})->Args({1024, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_md_omp, muon, polar::muon_direction<>{})->Args({256, 256})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->Iterations(2);
#endif

BENCHMARK_MAIN();
