// bench/bench_backend.cpp: the backend's product rates, the yardstick of
// every later performance figure (each is reported as a ratio to the GEMM
// rate measured in the same run).
//
//   build/release/bench/bench_backend --benchmark_counters_tabular=true
//
// Counters: GFLOP/s (2 n^3 for the square GEMM, 2 n^2 k for the full
// A A^T, n^2 k for one triangle of it) and, for syrk, ratio_to_gemm: its
// time over the time of a GEMM computing the full A A^T, both measured in the
// same benchmark (one triangle holds half the flops, so 0.5 is ideal).
//
// bm_all_finite/<backend>/<type>/r/c: the check of G that every step makes
// first. bytes_per_second; ratio_to_isfinite, its time over a count of
// std::isfinite on every element (widened to double, eight accumulators:
// polar's check before 2026-11-24), and share_of_adamw, its time over an
// AdamW step on the same matrix; each the median of 201 pairs of calls.
//
// bm_adamw_bandwidth/<backend>/r/c: an AdamW step on r x c floats (one
// pass over W, G and both moments after the check of G, through
// for_each_element). The step reads W, G, m, v and writes W, m, v.
// stream_fraction = the time of a loop with the same traffic and no
// arithmetic (w += g, m += g, v += g on arrays of the same size, an OpenMP
// loop written here) over the step's: 1.0 is a step at the speed of memory;
// the check of G reads an eighth array, so about 0.875 is the most the step
// can reach. copy_fraction = the time of the backend's copy of 3.5 arrays
// (the same number of bytes read and written, the GPU bar's yardstick) over
// the step's; on the host a copy also reads the lines it writes, so it is
// slower than the step's traffic. Medians of pairs of calls.
//
// bm_small_op/<backend>/n: one axpby of n floats (sizes under the host
// loops' threading threshold of 32768), ratio_to_loop = its time over the
// same loop written out in the benchmark, the median of seven interleaved
// rounds: the fixed cost of a small operation.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>
#include <polar/polar.hpp>
#if defined(POLAR_BENCH_THRUST)
#include <polar/backend/thrust.hpp>
#endif

namespace {

template <class T>
struct operands {
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> a, b, c;
  operands(polar::index m, polar::index k, polar::index n) : a(m, k), b(k, n), c(m, n) {
    polar::backend::eigen be;
    be.fill_random(polar::make_view(a), polar::rng_key{1}, polar::distribution::normal);
    be.fill_random(polar::make_view(b), polar::rng_key{2}, polar::distribution::normal);
    c.setZero();
  }
};

// C (n x n) = A A^T with A n x k, as a full GEMM.
template <class B, class T>
void bm_gemm_aat(benchmark::State& state) {
  const polar::index n = state.range(0), k = state.range(1);
  operands<T> o(n, k, n);
  B be;
  const auto a = polar::make_view(static_cast<const decltype(o.a)&>(o.a));
  for (auto _ : state) {
    be.gemm(T(1), polar::op::n, a, polar::op::t, a, T(0), polar::make_view(o.c));
    benchmark::DoNotOptimize(o.c.data());
  }
  const double flops = 2.0 * double(n) * double(n) * double(k);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["n"] = double(n);
  state.counters["k"] = double(k);
}

// C = A B with A m x k and B k x n: the general product rate.
template <class B, class T>
void bm_gemm(benchmark::State& state) {
  const polar::index n = state.range(0);
  operands<T> o(n, n, n);
  B be;
  for (auto _ : state) {
    be.gemm(T(1), polar::op::n, polar::make_view(o.a), polar::op::n, polar::make_view(o.b), T(0),
            polar::make_view(o.c));
    benchmark::DoNotOptimize(o.c.data());
  }
  const double flops = 2.0 * double(n) * double(n) * double(n);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Lower triangle of C = A A^T: n^2 k useful flops (half of the GEMM's).
template <class B, class T>
void bm_syrk(benchmark::State& state) {
  const polar::index n = state.range(0), k = state.range(1);
  operands<T> o(n, k, n);
  B be;
  for (auto _ : state) {
    be.syrk(polar::uplo::lower, T(1), polar::op::n, polar::make_view(o.a), T(0), polar::make_view(o.c));
    benchmark::DoNotOptimize(o.c.data());
  }
  const double flops = double(n) * double(n) * double(k);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  // The same product as a full GEMM, timed here so the ratio comes from one run.
  auto t0 = std::chrono::steady_clock::now();
  int reps = 0;
  do {
    be.gemm(T(1), polar::op::n, polar::make_view(o.a), polar::op::t, polar::make_view(o.a), T(0),
            polar::make_view(o.c));
    ++reps;
  } while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(200));
  const double gemm_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  auto t1 = std::chrono::steady_clock::now();
  int sreps = 0;
  do {
    be.syrk(polar::uplo::lower, T(1), polar::op::n, polar::make_view(o.a), T(0), polar::make_view(o.c));
    ++sreps;
  } while (std::chrono::steady_clock::now() - t1 < std::chrono::milliseconds(200));
  const double syrk_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() / sreps;
  state.counters["ratio_to_gemm"] = syrk_s / gemm_s;
}

// Whether x holds no NaN and no infinity, as polar checked it before the
// bit test of detail::contiguous_finite: the baseline of bm_all_finite.
template <class T>
bool isfinite_count(const T* x, polar::index n) {
  constexpr polar::index chunk = 8192;
  double bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad)
  for (polar::index lo = 0; lo < n; lo += chunk)
    bad += polar::detail::contiguous_sum(x + lo, x + lo, std::min(chunk, n - lo),
                                         [](T a, T) { return std::isfinite(double(a)) ? 0.0 : 1.0; });
  return bad == 0;
}

template <class B, class T>
void bm_all_finite(benchmark::State& state) {
  const polar::index rows = state.range(0), cols = state.range(1);
  operands<T> o(rows, cols, 1);
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> w = o.a * T(0.02);
  B be;
  const auto g = polar::make_view(static_cast<const decltype(o.a)&>(o.a));
  for (auto _ : state) benchmark::DoNotOptimize(be.all_finite(g));
  state.SetBytesProcessed(std::int64_t(state.iterations()) * rows * cols * std::int64_t(sizeof(T)));
  bool ok = true;
  const auto check = [&] { ok = ok && be.all_finite(g); };
  const auto count = [&] { ok = ok && isfinite_count(o.a.data(), rows * cols); };
  polar::adamw_direction adamw;
  auto s = adamw.init(be, polar::make_view(w));
  const auto step = [&] { adamw.step(be, polar::make_view(w), g, s); };
  state.counters["ratio_to_isfinite"] = polar_bench::paired_ratio(check, count);
  state.counters["share_of_adamw"] = polar_bench::paired_ratio(check, step);
  if (!ok) state.SkipWithError("a finite matrix was reported non-finite");
}

template <class B>
void bm_adamw_bandwidth(benchmark::State& state) {
  const polar::index rows = state.range(0), cols = state.range(1), n = rows * cols;
  operands<float> o(rows, cols, 1);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> w = o.a * 0.02f;
  B be;
  const auto g = polar::make_view(static_cast<const decltype(o.a)&>(o.a));
  polar::adamw_direction adamw;
  auto s = adamw.init(be, polar::make_view(w));
  const auto step = [&] { adamw.step(be, polar::make_view(w), g, s); };
  // Copy 3.5 arrays: from the first half of src into dst, through the
  // backend's own copy (threaded as its steps are).
  const polar::index half = 7 * n / 2;
  std::vector<float> src(std::size_t(half), 1.0f), dst(std::size_t(half), 0.0f);
  const auto copy = [&] {
    be.copy(polar::row_major_view(static_cast<const float*>(src.data()), 1, half),
            polar::row_major_view(dst.data(), 1, half));
  };
  std::vector<float> sw(std::size_t(n), 1.0f), sm(sw), sv(sw), sg(sw);
  const auto stream = [&] {
    float *pw = sw.data(), *pm = sm.data(), *pv = sv.data();
    const float* pg = sg.data();
#pragma omp parallel for simd schedule(static) num_threads(polar::threads())
    for (polar::index k = 0; k < n; ++k) {
      pw[k] += pg[k];
      pm[k] += pg[k];
      pv[k] += pg[k];
    }
    benchmark::ClobberMemory();
  };
  for (auto _ : state) step();
  state.SetBytesProcessed(std::int64_t(state.iterations()) * 7 * n * std::int64_t(sizeof(float)));
  state.counters["copy_fraction"] = polar_bench::paired_ratio(copy, step);
  state.counters["stream_fraction"] = polar_bench::paired_ratio(stream, step);
}

// One axpby y <- a x + b y of n floats through the backend, against the
// same loop written out here: what a call of a small elementwise operation
// costs beyond its arithmetic (the argument checks, and for the host loops
// whether they enter the OpenMP runtime at all).
template <class B>
void bm_small_op(benchmark::State& state) {
  const polar::index n = state.range(0);
  Eigen::Matrix<float, Eigen::Dynamic, 1> x(n), y(n), z(n);
  polar::backend::eigen setup;
  setup.fill_random(polar::make_view(x), polar::rng_key{1}, polar::distribution::normal);
  setup.fill_random(polar::make_view(y), polar::rng_key{2}, polar::distribution::normal);
  z = y;
  B be;
  const auto xv = polar::make_view(static_cast<const decltype(x)&>(x));
  const auto op = [&] { be.axpby(0.5f, xv, 0.25f, polar::make_view(y)); };
  const auto loop = [&] {
    const float* xp = x.data();
    float* zp = z.data();
    for (polar::index i = 0; i < n; ++i) zp[i] = 0.5f * xp[i] + 0.25f * zp[i];
    benchmark::ClobberMemory();
  };
  for (auto _ : state) op();
  state.counters["ratio_to_loop"] = polar_bench::interleaved_ratio(op, loop, 7, 0.02);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int n : {256, 512, 1024, 2048}) b->Args({n, n});
  b->Args({1024, 4096});  // the Muon shape: X X^T for a 1024 x 4096 X
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

using eigen = polar::backend::eigen;
BENCHMARK_TEMPLATE(bm_gemm, eigen, float)->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_gemm, eigen, double)->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_gemm_aat, eigen, float)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_syrk, eigen, float)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_gemm_aat, eigen, double)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_syrk, eigen, double)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_all_finite, eigen, float)->Args({256, 256})->Args({1024, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_all_finite, eigen, double)->Args({1024, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_adamw_bandwidth, eigen)->Args({1024, 4096})->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_small_op, eigen)->Arg(256)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);

#if defined(POLAR_BENCH_THRUST)
// The Thrust host systems run their products through the same Eigen kernels;
// these confirm the wrapping costs nothing.
using thrust_omp = polar::backend::thrust<polar::system::omp>;
using thrust_cpp = polar::backend::thrust<polar::system::cpp>;
BENCHMARK_TEMPLATE(bm_gemm, thrust_omp, float)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_syrk, thrust_omp, float)->Args({256, 256})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_gemm, thrust_cpp, float)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_syrk, thrust_cpp, float)->Args({256, 256})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_all_finite, thrust_omp, float)->Args({1024, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_all_finite, thrust_cpp, float)->Args({1024, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_adamw_bandwidth, thrust_omp)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_small_op, thrust_omp)->Arg(256)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_small_op, thrust_cpp)->Arg(256)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
#endif

BENCHMARK_MAIN();
