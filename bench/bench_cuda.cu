// bench/bench_cuda.cu: the Thrust backend on the GPU (built by the `cuda`
// preset; needs a GPU to run).
//
//   build/cuda/bench/bench_cuda --benchmark_counters_tabular=true
//
// Device work is timed with CUDA events around the operation (manual time),
// after a warm-up. Counters: GFLOP/s for the products, GB/s for the
// memory-bound operations, and ratio_to_copy, their bandwidth over a
// device-to-device cudaMemcpy of the same size measured in the same run.
//
// The optimizer steps, float, on the device:
//   bm_adamw_step/r/c         an AdamW step (one for_each_element pass after
//                             the check of G); GB/s counts the seven arrays it
//                             reads and writes, ratio_to_copy is that rate over
//                             a device-to-device copy's
//   bm_md/<base>/r/c          ratio_to_base = an md_<base> step (row and
//                             column gains, flat sphere; for AdamW the fused
//                             two-kernel step, for Muon the generic
//                             sequence around Newton-Schulz) over the base
//                             direction's own step on the same matrix
//   bm_row_sphere/<dir>/r/c   ratio_to_euclidean = a Riemannian step on the
//                             row sphere (SGD, momentum, Adam: the fused row
//                             kernels, for_each_row) over the Euclidean step
//   bm_newton_schulz/<sched>[_tf32|_bf16|_fp16]/r/c  five Newton-Schulz
//                             steps of a float matrix (polar's
//                             orthogonalizer: float cuBLAS products; _tf32
//                             with allow_tf32; _bf16 and _fp16 iterate in
//                             16 bits on the tensor cores, ns_precision),
//                             for the shapes bench/torch_gpu.py times
//                             torch's bf16 on
//   bm_newton_schulz_stack/<sched>_bf16/64/1024/4096  the same on a stack of
//                             64 expert matrices, strided-batched products;
//                             in 16 bits, ratio_to_one_gemm = the iteration
//                             with its symmetric products in `blocks` row
//                             blocks (polar's choice) over the same with
//                             one GEMM each
//   bm_gram_newton_schulz/jordan5_fp16/count/r/c  the Gram form in float16
//                             (restart before step 2); ratio_to_standard =
//                             its time over the standard form's in float16,
//                             flops_ratio the same in flops
//   bm_deferred/<policy>/r/c  ratio_to_eager = 20 steps queued in a
//                             deferred_checks scope and checked once (no
//                             wait inside a step) over 20 eager steps (each
//                             waits for its check of G); ratio_graph = 20
//                             replays of the step captured in a CUDA graph
//                             over the same 20 eager steps
// each ratio the median over 21 rounds of one call of each, timed by events.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <polar/backend/thrust.hpp>
#include <polar/deferred.hpp>
#include <polar/gains/row_col_gains.hpp>
#include <polar/orthogonalize/gram_newton_schulz.hpp>
#include <polar/orthogonalize/newton_schulz.hpp>
#include <polar/geometry/hypersphere.hpp>
#include <polar/geometry/riemannian.hpp>

#include <algorithm>
#include <utility>
#include <vector>

namespace {

using backend = polar::backend::thrust<polar::system::cuda>;

template <class F>
void time_device(benchmark::State& state, backend& b, F&& f) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  f();
  b.synchronize();
  for (auto _ : state) {
    cudaEventRecord(start);
    f();
    b.synchronize();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(double(ms) * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

constexpr polar::index mem_rows = 8192, mem_cols = 8192;

double memcpy_bandwidth() {
  static const double gbps = [] {
    ::thrust::device_vector<float> a(mem_rows * mem_cols, 1.0f), b(mem_rows * mem_cols);
    cudaMemcpy(b.data().get(), a.data().get(), a.size() * sizeof(float), cudaMemcpyDeviceToDevice);
    cudaEvent_t s, e;
    cudaEventCreate(&s);
    cudaEventCreate(&e);
    float best = 1e30f;
    for (int rep = 0; rep < 10; ++rep) {
      cudaEventRecord(s);
      cudaMemcpy(b.data().get(), a.data().get(), a.size() * sizeof(float), cudaMemcpyDeviceToDevice);
      cudaEventRecord(e);
      cudaEventSynchronize(e);
      float ms = 0;
      cudaEventElapsedTime(&ms, s, e);
      best = ms < best ? ms : best;
    }
    return 2.0 * sizeof(float) * double(a.size()) / (best * 1e-3) * 1e-9;
  }();
  return gbps;
}

template <class T>
void bm_gemm(benchmark::State& state) {
  const polar::index n = state.range(0);
  backend b;
  ::thrust::device_vector<T> a(n * n), c(n * n);
  const auto av = polar::make_view(a, n, n);
  const auto cv = polar::make_view(c, n, n);
  b.fill_random(av, polar::rng_key{1}, polar::distribution::normal);
  time_device(state, b, [&] { b.gemm(T(1), polar::op::n, av, polar::op::t, av, T(0), cv); });
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

template <class T>
void bm_syrk(benchmark::State& state) {
  const polar::index n = state.range(0), k = state.range(1);
  backend b;
  ::thrust::device_vector<T> a(n * k), c(n * n);
  const auto av = polar::make_view(a, n, k);
  const auto cv = polar::make_view(c, n, n);
  b.fill_random(av, polar::rng_key{1}, polar::distribution::normal);
  time_device(state, b, [&] { b.syrk(polar::uplo::lower, T(1), polar::op::n, av, T(0), cv); });
  state.counters["GFLOP/s"] = benchmark::Counter(1.0 * n * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void report(benchmark::State& state, double bytes) {
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copy_GB/s"] = memcpy_bandwidth();
  state.counters["ratio_to_copy"] =
      benchmark::Counter(bytes / (memcpy_bandwidth() * 1e9), benchmark::Counter::kIsIterationInvariantRate);
}

void bm_axpby(benchmark::State& state) {
  backend b;
  ::thrust::device_vector<float> x(mem_rows * mem_cols, 1.0f), y(mem_rows * mem_cols, 2.0f);
  const auto xv = polar::make_view(x, mem_rows, mem_cols);
  const auto yv = polar::make_view(y, mem_rows, mem_cols);
  time_device(state, b, [&] { b.axpby(0.5f, xv, 0.5f, yv); });
  report(state, 3.0 * 4 * mem_rows * mem_cols);
}
void bm_norm(benchmark::State& state) {
  backend b;
  ::thrust::device_vector<float> x(mem_rows * mem_cols, 1.0f);
  const auto xv = polar::make_view(x, mem_rows, mem_cols);
  time_device(state, b, [&] { benchmark::DoNotOptimize(b.norm(xv)); });
  report(state, 1.0 * 4 * mem_rows * mem_cols);
}
void bm_row_norms(benchmark::State& state) {
  backend b;
  ::thrust::device_vector<float> x(mem_rows * mem_cols, 1.0f), out(mem_rows);
  const auto xv = polar::make_view(x, mem_rows, mem_cols);
  polar::vector_view<float> ov(out.data().get(), mem_rows, 1, polar::memory_space::device);
  time_device(state, b, [&] { b.row_norms(xv, ov); });
  report(state, 1.0 * 4 * mem_rows * mem_cols);
}
void bm_fill_normal(benchmark::State& state) {
  backend b;
  ::thrust::device_vector<float> x(mem_rows * mem_cols);
  const auto xv = polar::make_view(x, mem_rows, mem_cols);
  time_device(state, b, [&] { b.fill_random(xv, polar::rng_key{3}, polar::distribution::normal); });
  report(state, 1.0 * 4 * mem_rows * mem_cols);
}

// Milliseconds of one call of f on the device, timed by events.
template <class F>
float device_ms(backend& b, F&& f) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start);
  f();
  b.synchronize();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

// Time of a over time of b: the median over `rounds` rounds of one call of
// each (after a warm-up call of each).
template <class A, class B>
double device_ratio(backend& be, A&& a, B&& b, int rounds = 21) {
  a();
  b();
  std::vector<double> r;
  for (int k = 0; k < rounds; ++k) {
    const double ta = device_ms(be, a);
    r.push_back(ta / device_ms(be, b));
  }
  std::nth_element(r.begin(), r.begin() + rounds / 2, r.end());
  return r[std::size_t(rounds / 2)];
}

// Times `step` as the benchmark and reports its time over `base`'s (the
// same run, device_ratio) as the counter `name`.
template <class Step, class Base>
void time_against(benchmark::State& state, backend& b, Step&& step, Base&& base, const char* name) {
  time_device(state, b, step);
  state.counters[name] = device_ratio(b, step, base);
}

void bm_adamw_step(benchmark::State& state) {
  const polar::index rows = state.range(0), cols = state.range(1);
  backend b;
  ::thrust::device_vector<float> w(rows * cols), g(rows * cols);
  b.fill_random(polar::make_view(w, rows, cols), polar::rng_key{1}, polar::distribution::normal);
  b.fill_random(polar::make_view(g, rows, cols), polar::rng_key{2}, polar::distribution::normal);
  polar::adamw_direction adamw;
  auto s = adamw.init(b, polar::make_view(w, rows, cols));
  const auto gv = polar::as_const(polar::make_view(g, rows, cols));
  time_device(state, b, [&] { adamw.step(b, polar::make_view(w, rows, cols), gv, s); });
  report(state, 7.0 * 4 * double(rows) * double(cols));
}

/// How a benchmark's Newton-Schulz multiplies.
enum class ns_mode { float32, tf32, bf16, fp16 };

polar::newton_schulz ns_in(const polar::ns_schedule& sch, ns_mode mode, backend& b) {
  b.allow_tf32(mode == ns_mode::tf32);
  polar::newton_schulz ns{sch};
  ns.precision = mode == ns_mode::bf16   ? polar::ns_precision::bfloat16
                 : mode == ns_mode::fp16 ? polar::ns_precision::float16
                                         : polar::ns_precision::native;
  return ns;
}

// A stack of `count` Gaussian float matrices on the device and room for
// its orthogonalization.
struct ns_operands {
  ::thrust::device_vector<float> gd, outd;
  polar::index count, rows, cols;
  ns_operands(backend& b, polar::index n, polar::index r, polar::index c)
      : gd(n * r * c), outd(n * r * c), count(n), rows(r), cols(c) {
    b.fill_random(polar::make_view(gd, count * rows, cols), polar::rng_key{3}, polar::distribution::normal);
  }
  polar::batch_view<float> g() { return stack(gd); }
  polar::batch_view<float> out() { return stack(outd); }
  polar::batch_view<float> stack(::thrust::device_vector<float>& v) {
    return polar::row_major_batch(::thrust::raw_pointer_cast(v.data()), count, rows, cols,
                                  polar::memory_space::device);
  }
};

// One orthogonalization of a stack of `count` float matrices, timed; in 16
// bits with the symmetric products in blocks (polar's choice), the counter
// ratio_to_one_gemm is its time over the same iteration's with them as
// one GEMM each (blocks = 1), so one run says which is faster.
template <class Orth>
void time_orthogonalizer(benchmark::State& state, backend& b, Orth orth, polar::index count, polar::index rows,
                         polar::index cols) {
  ns_operands x(b, count, rows, cols);
  const auto gv = polar::as_const(x.g());
  const auto ov = x.out();
  typename Orth::template workspace<backend, float> ws, ws1;
  const auto run = [&] { orth(b, gv, ov, ws); };
  if (orth.precision == polar::ns_precision::native) {
    time_device(state, b, run);
    return;
  }
  Orth one = orth;
  one.blocks = 1;
  time_against(state, b, run, [&] { one(b, gv, ov, ws1); }, "ratio_to_one_gemm");
  state.counters["blocks"] = double(polar::detail::symmetric_blocks(rows < cols ? rows : cols, orth.blocks));
}

void bm_newton_schulz(benchmark::State& state, const polar::ns_schedule& sch, ns_mode mode) {
  backend b;
  time_orthogonalizer(state, b, ns_in(sch, mode, b), 1, state.range(0), state.range(1));
}

void bm_newton_schulz_stack(benchmark::State& state, const polar::ns_schedule& sch, ns_mode mode) {
  backend b;
  time_orthogonalizer(state, b, ns_in(sch, mode, b), state.range(0), state.range(1), state.range(2));
}

// The Gram form in float16 with its restart before step 2 (Dao AI Lab's
// configuration); ratio_to_standard is its time over the standard form's
// in the same precision (polar's blocks in both), one matrix or a stack.
void bm_gram_newton_schulz(benchmark::State& state, const polar::ns_schedule& sch) {
  const polar::index count = state.range(0), rows = state.range(1), cols = state.range(2);
  backend b;
  polar::gram_newton_schulz gram{sch};
  gram.fallback = false;
  gram.precision = polar::ns_precision::float16;
  ns_operands x(b, count, rows, cols);
  const auto gv = polar::as_const(x.g());
  const auto ov = x.out();
  polar::gram_newton_schulz::workspace<backend, float> ws;
  polar::newton_schulz::workspace<backend, float> sws;
  const polar::newton_schulz standard = gram.standard();
  time_against(state, b, [&] { gram(b, gv, ov, ws); }, [&] { standard(b, gv, ov, sws); }, "ratio_to_standard");
  state.counters["flops_ratio"] = gram.gram_flops(rows, cols) / standard.flops(rows, cols);
}

void ns_shapes(benchmark::internal::Benchmark* bm) {
  for (auto [r, c] : {std::pair<int, int>{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}, {1024, 4096}, {4096, 4096}})
    bm->Args({r, c});
  bm->UseManualTime()->Unit(benchmark::kMillisecond);
}

template <class Direction>
void bm_md(benchmark::State& state, Direction base) {
  const polar::index rows = state.range(0), cols = state.range(1);
  backend b;
  ::thrust::device_vector<float> wm(rows * cols), wb(rows * cols), g(rows * cols);
  b.fill_random(polar::make_view(wm, rows, cols), polar::rng_key{1}, polar::distribution::normal);
  b.fill_random(polar::make_view(g, rows, cols), polar::rng_key{2}, polar::distribution::normal);
  wb = wm;
  base.weight_decay = 0;
  base.lr = 1e-4;
  polar::row_col_gains<Direction> md;
  md.direction = base;
  auto sm = md.init(b, polar::make_view(wm, rows, cols));
  auto sb = base.init(b, polar::make_view(wb, rows, cols));
  const auto gv = polar::as_const(polar::make_view(g, rows, cols));
  const auto md_step = [&] { md.step(b, polar::make_view(wm, rows, cols), gv, sm); };
  const auto base_step = [&] { base.step(b, polar::make_view(wb, rows, cols), gv, sb); };
  time_against(state, b, md_step, base_step, "ratio_to_base");
}

template <class Direction>
void bm_row_sphere(benchmark::State& state, Direction dir) {
  const polar::index rows = state.range(0), cols = state.range(1);
  backend b;
  polar::hypersphere sphere{polar::sphere_scope::rows};
  typename polar::hypersphere::template workspace<backend, float> ws;
  ::thrust::device_vector<float> wr(rows * cols), we, g(rows * cols);
  b.fill_random(polar::make_view(wr, rows, cols), polar::rng_key{5}, polar::distribution::normal);
  sphere.project(b, polar::make_view(wr, rows, cols), ws);
  b.fill_random(polar::make_view(g, rows, cols), polar::rng_key{6}, polar::distribution::normal);
  we = wr;
  dir.weight_decay = 0;
  dir.lr = 1e-4;
  polar::riemannian<Direction, polar::hypersphere> riem{dir, sphere};
  riem.check_point = false;
  auto sr = riem.init(b, polar::make_view(wr, rows, cols));
  auto se = dir.init(b, polar::make_view(we, rows, cols));
  const auto gv = polar::as_const(polar::make_view(g, rows, cols));
  const auto riemannian_step = [&] { riem.step(b, polar::make_view(wr, rows, cols), gv, sr); };
  const auto euclidean_step = [&] { dir.step(b, polar::make_view(we, rows, cols), gv, se); };
  time_against(state, b, riemannian_step, euclidean_step, "ratio_to_euclidean");
}

// 20 steps of opt on W, three ways on the same stream: eager (each step
// reads back its check of G), deferred (queued in a deferred_checks scope,
// checked once), and replays of the step captured in a CUDA graph.
template <class Opt>
void bm_deferred(benchmark::State& state, Opt opt, bool sphere) {
  constexpr int steps = 20;
  const polar::index rows = state.range(0), cols = state.range(1);
  backend b;
  ::thrust::device_vector<float> w(rows * cols), g(rows * cols);
  b.fill_random(polar::make_view(w, rows, cols), polar::rng_key{7}, polar::distribution::normal);
  b.fill_random(polar::make_view(g, rows, cols), polar::rng_key{8}, polar::distribution::normal, 1e-3f);
  if (sphere) {
    typename polar::hypersphere::template workspace<backend, float> ws;
    polar::hypersphere{polar::sphere_scope::rows}.project(b, polar::make_view(w, rows, cols), ws);
  }
  const auto wv = polar::make_view(w, rows, cols);
  const auto gv = polar::as_const(polar::make_view(g, rows, cols));
  auto s = opt.init(b, wv);
  polar::deferred_checks<backend> checks(b);
  checks.recycle = false;
  const auto eager = [&] {
    for (int k = 0; k < steps; ++k) opt.step(b, wv, gv, s);
  };
  const auto deferred = [&] {
    {
      auto scope = checks.scope();
      for (int k = 0; k < steps; ++k) opt.step(b, wv, gv, s);
    }
    checks.check();
  };
  {
    auto scope = checks.scope();
    opt.step(b, wv, gv, s);  // the arenas grow before the capture
  }
  checks.check();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaStreamBeginCapture(b.stream(), cudaStreamCaptureModeThreadLocal);
  {
    auto scope = checks.scope();
    opt.step(b, wv, gv, s);
  }
  const bool captured = cudaStreamEndCapture(b.stream(), &graph) == cudaSuccess &&
                        cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  const auto replays = [&] {
    for (int k = 0; k < steps; ++k) cudaGraphLaunch(exec, b.stream());
    checks.check();
  };
  time_device(state, b, deferred);
  state.counters["ratio_to_eager"] = device_ratio(b, deferred, eager, 11);
  state.counters["ratio_graph"] = captured ? device_ratio(b, replays, eager, 11) : -1.0;
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
}

polar::riemannian<polar::adamw_direction, polar::hypersphere> row_sphere_adam() {
  polar::riemannian<polar::adamw_direction, polar::hypersphere> o;
  o.direction.weight_decay = 0;
  o.geometry.scope = polar::sphere_scope::rows;
  o.check_point = false;
  return o;
}

}  // namespace

BENCHMARK_CAPTURE(bm_deferred, adamw, polar::adamw_direction{}, false)
    ->Args({1024, 4096})
    ->Args({768, 768})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_deferred, muon, polar::muon_direction<>{}, false)
    ->Args({1024, 4096})
    ->Args({768, 768})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_deferred, md_adamw, polar::md_adamw{}, false)
    ->Args({1024, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_deferred, row_sphere_adam, row_sphere_adam(), true)
    ->Args({1024, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bm_adamw_step)->Args({1024, 4096})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_newton_schulz, jordan5, polar::schedules::jordan5, ns_mode::float32)->Apply(ns_shapes);
BENCHMARK_CAPTURE(bm_newton_schulz, polar_express5, polar::schedules::polar_express5, ns_mode::float32)
    ->Apply(ns_shapes);
BENCHMARK_CAPTURE(bm_newton_schulz, jordan5_tf32, polar::schedules::jordan5, ns_mode::tf32)->Apply(ns_shapes);
BENCHMARK_CAPTURE(bm_newton_schulz, polar_express5_tf32, polar::schedules::polar_express5, ns_mode::tf32)
    ->Apply(ns_shapes);
BENCHMARK_CAPTURE(bm_newton_schulz, jordan5_bf16, polar::schedules::jordan5, ns_mode::bf16)->Apply(ns_shapes);
BENCHMARK_CAPTURE(bm_newton_schulz, polar_express5_bf16, polar::schedules::polar_express5, ns_mode::bf16)
    ->Apply(ns_shapes);
BENCHMARK_CAPTURE(bm_newton_schulz, polar_express5_fp16, polar::schedules::polar_express5, ns_mode::fp16)
    ->Apply(ns_shapes);
BENCHMARK_CAPTURE(bm_newton_schulz_stack, jordan5_bf16, polar::schedules::jordan5, ns_mode::bf16)
    ->Args({64, 1024, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_newton_schulz_stack, polar_express5_bf16, polar::schedules::polar_express5, ns_mode::bf16)
    ->Args({64, 1024, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_gram_newton_schulz, jordan5_fp16, polar::schedules::jordan5)
    ->Args({1, 1024, 4096})
    ->Args({1, 768, 3072})
    ->Args({64, 1024, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_md, adamw, polar::adamw_direction{})->Args({1024, 4096})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_md, muon, polar::muon_direction<>{})->Args({1024, 4096})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_row_sphere, sgd, polar::sgd_direction{})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_row_sphere, momentum, polar::momentum_direction{})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_row_sphere, adam, polar::adamw_direction{})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_row_sphere, muon, polar::muon_direction<>{})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_TEMPLATE(bm_gemm, float)->Arg(1024)->Arg(4096)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_gemm, double)->Arg(1024)->Arg(4096)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_syrk, float)->Args({1024, 4096})->Args({4096, 4096})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(bm_axpby)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(bm_norm)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(bm_row_norms)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(bm_fill_normal)->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
