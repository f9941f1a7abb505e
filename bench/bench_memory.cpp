// bench/bench_memory.cpp: bandwidth of the backends' memory-bound
// operations, as a ratio to a plain std::copy of the same size measured in
// the same run.
//
//   build/release/bench/bench_memory --benchmark_counters_tabular=true
//
// Counters: GB/s (bytes each operation must move: copy and scale read and
// write n elements, axpby reads 2n and writes n, dot reads 2n, norm and
// row_norms read n, fill_random writes n) and ratio_to_copy, that bandwidth
// over std::copy's on the same number of elements.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <polar/backend/eigen.hpp>
#include <polar/backend/thrust.hpp>
#include <vector>

namespace {

// 67 M elements, 256 MiB in float: well beyond any cache.
constexpr polar::index rows = 8192, cols = 8192;

/// GB/s of std::copy over n floats, measured once per process.
double copy_bandwidth() {
  static const double gbps = [] {
    std::vector<float> a(std::size_t(rows * cols), 1.0f), b(std::size_t(rows * cols));
    std::copy(a.begin(), a.end(), b.begin());  // touch the pages
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      std::copy(a.begin(), a.end(), b.begin());
      benchmark::DoNotOptimize(b.data());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, 2.0 * sizeof(float) * double(a.size()) / s * 1e-9);
    }
    return best;
  }();
  return gbps;
}

template <class B>
struct operands {
  B backend;
  typename B::template buffer<float> x, y;
  polar::matrix_view<float> vx, vy;
  operands() : x(backend.template allocate<float>(rows * cols)), y(backend.template allocate<float>(rows * cols)) {
    vx = polar::row_major_view(x.data(), rows, cols, -1, B::space);
    vy = polar::row_major_view(y.data(), rows, cols, -1, B::space);
    backend.fill_random(vx, polar::rng_key{1}, polar::distribution::normal);
    backend.fill_random(vy, polar::rng_key{2}, polar::distribution::normal);
  }
};

void report(benchmark::State& state, double bytes) {
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copy_GB/s"] = copy_bandwidth();
  // A rate counter divides by the measured time: bytes / (copy bytes per
  // second) per second is the bandwidth as a fraction of std::copy's.
  state.counters["ratio_to_copy"] =
      benchmark::Counter(bytes / (copy_bandwidth() * 1e9), benchmark::Counter::kIsIterationInvariantRate);
}

template <class B>
void bm_copy(benchmark::State& state) {
  operands<B> o;
  for (auto _ : state) o.backend.copy(o.vx, o.vy);
  report(state, 2.0 * 4 * rows * cols);
}
template <class B>
void bm_scale(benchmark::State& state) {
  operands<B> o;
  for (auto _ : state) o.backend.scale(1.0000001f, o.vy);
  report(state, 2.0 * 4 * rows * cols);
}
template <class B>
void bm_axpby(benchmark::State& state) {
  operands<B> o;
  for (auto _ : state) o.backend.axpby(0.5f, o.vx, 0.5f, o.vy);
  report(state, 3.0 * 4 * rows * cols);
}
template <class B>
void bm_dot(benchmark::State& state) {
  operands<B> o;
  for (auto _ : state) benchmark::DoNotOptimize(o.backend.dot(o.vx, o.vy));
  report(state, 2.0 * 4 * rows * cols);
}
template <class B>
void bm_norm(benchmark::State& state) {
  operands<B> o;
  for (auto _ : state) benchmark::DoNotOptimize(o.backend.norm(o.vx));
  report(state, 1.0 * 4 * rows * cols);
}
template <class B>
void bm_row_norms(benchmark::State& state) {
  operands<B> o;
  auto out = o.backend.template allocate<float>(rows);
  polar::vector_view<float> v(out.data(), rows, 1, B::space);
  for (auto _ : state) o.backend.row_norms(o.vx, v);
  report(state, 1.0 * 4 * rows * cols);
}
template <class B>
void bm_fill_normal(benchmark::State& state) {
  operands<B> o;
  for (auto _ : state) o.backend.fill_random(o.vy, polar::rng_key{3}, polar::distribution::normal);
  report(state, 1.0 * 4 * rows * cols);
}
template <class B>
void bm_fill_rademacher(benchmark::State& state) {
  operands<B> o;
  for (auto _ : state) o.backend.fill_random(o.vy, polar::rng_key{3}, polar::distribution::rademacher);
  report(state, 1.0 * 4 * rows * cols);
}

void bm_std_copy(benchmark::State& state) {
  std::vector<float> a(std::size_t(rows * cols), 1.0f), b(std::size_t(rows * cols));
  for (auto _ : state) {
    std::copy(a.begin(), a.end(), b.begin());
    benchmark::DoNotOptimize(b.data());
  }
  report(state, 2.0 * 4 * rows * cols);
}

using omp = polar::backend::thrust<polar::system::omp>;
using cpp = polar::backend::thrust<polar::system::cpp>;
using eig = polar::backend::eigen;

#define POLAR_MEMORY_BENCH(B)                                                            \
  BENCHMARK_TEMPLATE(bm_copy, B)->Unit(benchmark::kMillisecond)->UseRealTime();           \
  BENCHMARK_TEMPLATE(bm_scale, B)->Unit(benchmark::kMillisecond)->UseRealTime();          \
  BENCHMARK_TEMPLATE(bm_axpby, B)->Unit(benchmark::kMillisecond)->UseRealTime();          \
  BENCHMARK_TEMPLATE(bm_dot, B)->Unit(benchmark::kMillisecond)->UseRealTime();            \
  BENCHMARK_TEMPLATE(bm_norm, B)->Unit(benchmark::kMillisecond)->UseRealTime();           \
  BENCHMARK_TEMPLATE(bm_row_norms, B)->Unit(benchmark::kMillisecond)->UseRealTime();      \
  BENCHMARK_TEMPLATE(bm_fill_normal, B)->Unit(benchmark::kMillisecond)->UseRealTime();    \
  BENCHMARK_TEMPLATE(bm_fill_rademacher, B)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK(bm_std_copy)->Unit(benchmark::kMillisecond)->UseRealTime();
POLAR_MEMORY_BENCH(omp)
POLAR_MEMORY_BENCH(cpp)
POLAR_MEMORY_BENCH(eig)

}  // namespace

BENCHMARK_MAIN();
