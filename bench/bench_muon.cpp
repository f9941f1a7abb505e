// bench/bench_muon.cpp: Newton–Schulz orthogonalization (standard and Gram
// form, one matrix and stacks) against the GEMM rate and against a direct
// transcription of the reference algorithm, all measured in one run.
//
//   build/release/bench/bench_muon --benchmark_counters_tabular=true
//
// Counters:
//   GFLOP/s            dense-equivalent rate: steps (4 n^2 m + 2 n^3) / time
//   gemm_GFLOP/s       this process's GEMM rate on an n x m by m x n product
//   ratio_to_dense     time / (dense flop count / GEMM rate), the call and the
//                      GEMM timed in turns (over_gemm): the bar
//                      is at most 0.85 for Jordan NS5 at 1024 x 4096 fp32;
//                      for a stack, the dense count of all its matrices over
//                      the GEMM rate of one of them (bar 1.2 for 64 x
//                      128 x 512)
//   speedup_vs_direct  the direct transcription's time / this time (bar 1.3)
//   speedup_vs_loop    for a stack: one matrix at a time / the stacked call
//   accuracy/<schedule>  on a Gaussian 64 x 256 matrix and on one with
//                      singular values from 1 to 1e-4: the output's
//                      singular values (sv_lo, sv_hi) and its distance to
//                      the exact polar factor, |out - U V^T|_F / sqrt(64)
//                      (err_vs_polar), with the schedule's steps
//   bm_family/<form>   ratio_to_muon: a Muon step with NorMuon's, AdaMuon's or
//                      PolarGrad's transform, or optax's momentum, over a
//                      plain Muon step (1024 x 4096 float, same process)
//   bm_dion/n/m/r      ratio_to_muon: a Dion step at rank r over a Muon step
//   bm_step/n/m        one whole Muon step with optax's conventions, the
//                      time bench/peers.py compares optax's and torch's with
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <Eigen/Dense>
#include <cmath>
#include <type_traits>
#include <cstring>
#include <map>
#include <vector>
#include <polar/orthogonalize/gram_newton_schulz.hpp>
#include <polar/orthogonalize/newton_schulz.hpp>
#include <polar/direction/dion.hpp>
#include <polar/polar.hpp>

namespace {

template <class T>
using rmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

using polar_bench::seconds;

/// The reference product of the NS counters: C = X X^T for a Gaussian n x m
/// X, on the Eigen backend.
template <class T>
struct gram_gemm {
  rmat<T> x, c;
  polar::backend::eigen be;
  gram_gemm(polar::index n, polar::index m) : x(n, m), c(n, n) {
    be.fill_random(polar::make_view(x), polar::rng_key{1}, polar::distribution::normal);
  }
  void operator()() {
    const auto xv = polar::make_view(static_cast<const rmat<T>&>(x));
    be.gemm(T(1), polar::op::n, xv, polar::op::t, xv, T(0), polar::make_view(c));
  }
};

/// GEMM rate (flop/s) of this process on X X^T for an n x m X.
template <class T>
double gemm_rate(polar::index n, polar::index m) {
  static std::map<std::pair<polar::index, polar::index>, double> cache;
  const auto key = std::make_pair(n, m);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  gram_gemm<T> gemm(n, m);
  return cache[key] = 2.0 * double(n) * double(n) * double(m) / seconds(gemm);
}

/// The time of f over the time of gemm_rate's product, the two timed in
/// turns (interleaved_ratio), so a drift in the machine's speed moves both:
/// a ratio against the GEMM that does not depend on the moment one rate was
/// measured.
template <class T, class F>
double over_gemm(F&& f, polar::index n, polar::index m) {
  gram_gemm<T> gemm(n, m);
  return polar_bench::interleaved_ratio(f, gemm, 5, 0.1);
}

/// The reference algorithm transcribed directly into Eigen: every product a
/// fresh temporary, three general products per step.
template <class T>
void direct_ns5(const rmat<T>& g, rmat<T>& out) {
  const T a = T(3.4445), b = T(-4.7750), c = T(2.0315);
  rmat<T> x = g / (g.norm() + T(1e-7));
  for (int k = 0; k < 5; ++k) {
    const rmat<T> A = x * x.transpose();
    const rmat<T> B = b * A + c * A * A;
    x = a * x + B * x;
  }
  out = x;
}

template <class T, class Orth = polar::newton_schulz>
void bm_newton_schulz(benchmark::State& state, const polar::ns_schedule& sch) {
  const polar::index n = state.range(0), m = state.range(1);
  rmat<T> g(n, m), out(n, m);
  polar::backend::eigen be;
  be.fill_random(polar::make_view(g), polar::rng_key{2}, polar::distribution::normal);
  const Orth ns{sch};
  typename Orth::template workspace<polar::backend::eigen, T> ws;
  const auto gv = polar::make_view(static_cast<const rmat<T>&>(g));
  for (auto _ : state) {
    ns(be, gv, polar::make_view(out), ws);
    benchmark::DoNotOptimize(out.data());
  }
  const double nn = double(n), mm = double(m), steps = ns.steps();
  const double dense = steps * (4 * nn * nn * mm + 2 * nn * nn * nn);
  state.counters["GFLOP/s"] = benchmark::Counter(dense * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const double rate = gemm_rate<T>(n, m);
  state.counters["gemm_GFLOP/s"] = rate * 1e-9;
  // time / (dense / rate) = (time / GEMM time) * (GEMM flops / dense), the
  // two times taken in turns.
  const double gemm_flops = 2 * nn * nn * mm;
  state.counters["ratio_to_dense"] =
      over_gemm<T>([&] { ns(be, gv, polar::make_view(out), ws); }, n, m) * gemm_flops / dense;
  state.counters["flops_vs_dense"] = ns.flops(n, m) / dense;
  if (std::strcmp(sch.name, polar::schedules::jordan5.name) == 0) {
    const double direct = seconds([&] { direct_ns5(g, out); });
    state.counters["speedup_vs_direct"] =
        benchmark::Counter(direct, benchmark::Counter::kIsIterationInvariantRate);
  }
}

/// A stack of `count` matrices of n x m in one call, against the GEMM bound
/// of the whole stack and against one call per matrix.
template <class T, class Orth = polar::newton_schulz>
void bm_stack(benchmark::State& state) {
  const polar::index count = state.range(0), n = state.range(1), m = state.range(2);
  std::vector<T> g(std::size_t(count * n * m)), out(g.size());
  polar::backend::eigen be;
  const auto gb = polar::row_major_batch(g.data(), count, n, m);
  const auto ob = polar::row_major_batch(out.data(), count, n, m);
  be.fill_random(polar::stacked(gb), polar::rng_key{3}, polar::distribution::normal);
  const Orth ns{};
  typename Orth::template workspace<polar::backend::eigen, T> ws;
  for (auto _ : state) {
    ns(be, polar::as_const(gb), ob, ws);
    benchmark::DoNotOptimize(out.data());
  }
  const double nn = double(n < m ? n : m), mm = double(n < m ? m : n), steps = ns.steps();
  const double dense = double(count) * steps * (4 * nn * nn * mm + 2 * nn * nn * nn);
  state.counters["GFLOP/s"] = benchmark::Counter(dense * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const double rate = gemm_rate<T>(polar::index(nn), polar::index(mm));
  state.counters["gemm_GFLOP/s"] = rate * 1e-9;
  state.counters["ratio_to_dense"] =
      benchmark::Counter(dense / rate, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  typename Orth::template workspace<polar::backend::eigen, T> one;
  const double loop = seconds([&] {
    for (polar::index k = 0; k < count; ++k) ns(be, polar::as_const(gb[k]), ob[k], one);
  });
  state.counters["speedup_vs_loop"] = benchmark::Counter(loop, benchmark::Counter::kIsIterationInvariantRate);
}

/// The accuracy of a schedule as counters: the singular values of its
/// result on a 64 x 256 Gaussian matrix (lowest and highest) and the lowest
/// on a 64 x 256 matrix with singular values log-spaced from 1 to 1e-4.
/// The time is that of the small orthogonalization itself.
template <class Orth>
void bm_accuracy(benchmark::State& state, const polar::ns_schedule& sch) {
  using T = float;
  const polar::index n = 64, m = 256;
  polar::backend::eigen be;
  rmat<T> gauss(n, m), out(n, m);
  be.fill_random(polar::make_view(gauss), polar::rng_key{4}, polar::distribution::normal);
  rmat<double> a(n, n), b(m, n);
  be.fill_random(polar::make_view(a), polar::rng_key{5}, polar::distribution::normal);
  be.fill_random(polar::make_view(b), polar::rng_key{6}, polar::distribution::normal);
  const rmat<double> u = Eigen::HouseholderQR<rmat<double>>(a).householderQ();
  const rmat<double> v = Eigen::HouseholderQR<rmat<double>>(b).householderQ() * rmat<double>::Identity(m, n);
  Eigen::VectorXd s(n);
  for (polar::index i = 0; i < n; ++i) s(i) = std::pow(1e-4, double(i) / double(n - 1));
  const rmat<T> ill = (u * s.asDiagonal() * v.transpose()).template cast<T>();
  Orth orth{sch};
  if constexpr (std::is_same_v<Orth, polar::gram_newton_schulz>) orth.fallback = false;
  typename Orth::template workspace<polar::backend::eigen, T> ws;
  const auto sv = [&](const rmat<T>& g) {
    orth(be, polar::make_view(g), polar::make_view(out), ws);
    return Eigen::JacobiSVD<rmat<double>>(out.template cast<double>()).singularValues();
  };
  const auto sg = sv(gauss), si = sv(ill);
  // The distance to the exact polar factor U V^T of the input, RMS over the
  // singular directions: |out - U V^T|_F / sqrt(n).
  const auto err = [&](const rmat<T>& g) {
    orth(be, polar::make_view(g), polar::make_view(out), ws);
    Eigen::JacobiSVD<rmat<double>> svd(g.template cast<double>(), Eigen::ComputeThinU | Eigen::ComputeThinV);
    const rmat<double> exact = svd.matrixU() * svd.matrixV().transpose();
    return (out.template cast<double>() - exact).norm() / std::sqrt(double(n));
  };
  const double eg = err(gauss), ei = err(ill);
  for (auto _ : state) {
    orth(be, polar::make_view(static_cast<const rmat<T>&>(gauss)), polar::make_view(out), ws);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["sv_lo"] = sg.minCoeff();
  state.counters["sv_hi"] = sg.maxCoeff();
  state.counters["sv_lo_cond1e4"] = si.minCoeff();
  state.counters["sv_hi_cond1e4"] = si.maxCoeff();
  state.counters["err_vs_polar"] = eg;
  state.counters["err_vs_polar_cond1e4"] = ei;
  state.counters["steps"] = orth.steps();
}

/// One part of a Newton–Schulz step alone, at n x m in float, to see where
/// a step's time goes: 0 X X^T by syrk, 1 X X^T by GEMM, 2 A A by syrk,
/// 3 A A by GEMM, 4 B X by GEMM, 5 symmetrize, 6 axpby on n x n. Counter
/// ratio_to_gemm: the part's time over the X X^T GEMM's (part 1, the
/// reference of ratio_to_dense), call by call in turns (paired_ratio), so
/// the machine's drift moves both. A step's dense count is 2.25 X X^T GEMMs
/// at 1024 x 4096, so part 4 over 2.25 is B X's share of ratio_to_dense.
void bm_parts(benchmark::State& state) {
  using T = float;
  const polar::index part = state.range(0), n = state.range(1), m = state.range(2);
  rmat<T> x(n, m), y(n, m), a(n, n), b(n, n);
  polar::backend::eigen be;
  be.fill_random(polar::make_view(x), polar::rng_key{8}, polar::distribution::normal, T(1e-3));
  be.fill_random(polar::make_view(a), polar::rng_key{9}, polar::distribution::normal, T(1e-3));
  const auto X = polar::make_view(static_cast<const rmat<T>&>(x));
  const auto A = polar::make_view(static_cast<const rmat<T>&>(a));
  const auto Am = polar::make_view(a), B = polar::make_view(b), Y = polar::make_view(y);
  const auto run = [&] {
    switch (part) {
      case 0: be.syrk(polar::uplo::lower, T(1), polar::op::n, X, T(0), Am); break;
      case 1: be.gemm(T(1), polar::op::n, X, polar::op::t, X, T(0), Am); break;
      case 2: be.syrk(polar::uplo::lower, T(1), polar::op::n, A, T(0), B); break;
      case 3: be.gemm(T(1), polar::op::n, A, polar::op::t, A, T(0), B); break;
      case 4: be.gemm(T(1), polar::op::n, A, polar::op::n, X, T(0), Y); break;
      case 5: be.symmetrize(polar::uplo::lower, Am); break;
      default: be.axpby(T(0.5), A, T(1), B); break;
    }
    benchmark::DoNotOptimize(b.data());
    benchmark::DoNotOptimize(y.data());
  };
  for (auto _ : state) run();
  gram_gemm<T> gemm(n, m);
  state.counters["ratio_to_gemm"] = polar_bench::paired_ratio(run, gemm, 31);
}

template <class T>
void bm_direct(benchmark::State& state) {
  const polar::index n = state.range(0), m = state.range(1);
  rmat<T> g(n, m), out(n, m);
  polar::backend::eigen().fill_random(polar::make_view(g), polar::rng_key{2}, polar::distribution::normal);
  for (auto _ : state) {
    direct_ns5(g, out);
    benchmark::DoNotOptimize(out.data());
  }
  const double nn = double(n), mm = double(m);
  const double dense = 5 * (4 * nn * nn * mm + 2 * nn * nn * nn);
  state.counters["GFLOP/s"] = benchmark::Counter(dense * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ratio_to_dense"] = benchmark::Counter(
      dense / gemm_rate<T>(n, m), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

template <class T>
void bm_svd_polar(benchmark::State& state) {
  const polar::index n = state.range(0), m = state.range(1);
  rmat<T> g(n, m), out(n, m);
  polar::backend::eigen be;
  be.fill_random(polar::make_view(g), polar::rng_key{2}, polar::distribution::normal);
  for (auto _ : state) {
    polar::svd_polar{}(be, polar::make_view(static_cast<const rmat<T>&>(g)), polar::make_view(out));
    benchmark::DoNotOptimize(out.data());
  }
}

/// A step of direction d over a plain Muon step on the same n x m float
/// matrix: the median of interleaved rounds.
template <class Direction>
double ratio_to_muon(Direction d, polar::index n, polar::index m) {
  using T = float;
  polar::backend::eigen be;
  rmat<T> w(n, m), w2(n, m), g(n, m);
  be.fill_random(polar::make_view(w), polar::rng_key{7}, polar::distribution::normal);
  be.fill_random(polar::make_view(g), polar::rng_key{8}, polar::distribution::normal);
  w2 = w;
  d.lr = 1e-4;
  polar::muon_direction<> plain;
  plain.lr = 1e-4;
  const auto gv = polar::make_view(static_cast<const rmat<T>&>(g));
  auto s = d.init(be, polar::as_const(polar::make_view(w)));
  auto sp = plain.init(be, polar::as_const(polar::make_view(w2)));
  const auto step = [&] { d.step(be, polar::make_view(w), gv, s); };
  const auto base = [&] { plain.step(be, polar::make_view(w2), gv, sp); };
  return polar_bench::interleaved_ratio(step, base, 5, 0.3);
}

/// A Muon step with a transform after the orthogonalizer (NorMuon, AdaMuon,
/// PolarGrad, or optax's bias-corrected momentum) over a plain Muon step.
template <class Direction>
void bm_family(benchmark::State& state, Direction d) {
  double ratio = 0;
  for (auto _ : state) ratio = ratio_to_muon(d, state.range(0), state.range(1));
  state.counters["ratio_to_muon"] = ratio;
}

/// A Dion step at rank r over a plain Muon step (Dion's cost grows with r,
/// Muon's does not).
void bm_dion(benchmark::State& state) {
  polar::dion_direction d;
  d.rank = state.range(2);
  double ratio = 0;
  for (auto _ : state) ratio = ratio_to_muon(d, state.range(0), state.range(1));
  state.counters["ratio_to_muon"] = ratio;
  state.counters["rank"] = double(d.rank_for(state.range(0), state.range(1)));
}

/// One whole Muon step (momentum, Newton-Schulz, update) in float, with
/// optax's conventions (bias-corrected Nesterov momentum, Jordan's five
/// steps): the step that bench/peers.py times optax's and torch's Muon
/// against.
void bm_step(benchmark::State& state) {
  const polar::index n = state.range(0), m = state.range(1);
  rmat<float> w(n, m), g(n, m);
  polar::backend::eigen be;
  be.fill_random(polar::make_view(w), polar::rng_key{5}, polar::distribution::normal, 0.02f);
  be.fill_random(polar::make_view(g), polar::rng_key{6}, polar::distribution::normal, 1e-3f);
  polar::muon_direction<> d;
  d.bias_correction = true;
  d.lr = 1e-4;
  auto s = d.init(be, polar::as_const(polar::make_view(w)));
  const auto gv = polar::make_view(static_cast<const rmat<float>&>(g));
  for (auto _ : state) d.step(be, polar::make_view(w), gv, s);
  state.counters["threads"] = polar::threads();
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int n : {256, 512, 1024, 2048, 4096}) b->Args({n, n});
  for (int n : {256, 512, 1024}) b->Args({n, 4 * n});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void wide(benchmark::internal::Benchmark* b) {
  for (int n : {256, 512, 1024}) b->Args({n, 4 * n});
  b->Args({1024, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

void jordan5_float(benchmark::State& s) { bm_newton_schulz<float>(s, polar::schedules::jordan5); }
void jordan5_double(benchmark::State& s) { bm_newton_schulz<double>(s, polar::schedules::jordan5); }
void polar_express5_float(benchmark::State& s) { bm_newton_schulz<float>(s, polar::schedules::polar_express5); }
void polar_express8_float(benchmark::State& s) { bm_newton_schulz<float>(s, polar::schedules::polar_express8); }
void you5_float(benchmark::State& s) { bm_newton_schulz<float>(s, polar::schedules::you5); }
void cans5_float(benchmark::State& s) { bm_newton_schulz<float>(s, polar::schedules::cans5); }
void cubic_float(benchmark::State& s) { bm_newton_schulz<float>(s, polar::schedules::cubic); }
void turbo4_float(benchmark::State& s) { bm_newton_schulz<float>(s, polar::schedules::turbo4); }
void gram_jordan5_float(benchmark::State& s) {
  bm_newton_schulz<float, polar::gram_newton_schulz>(s, polar::schedules::jordan5);
}
void gram_jordan5_double(benchmark::State& s) {
  bm_newton_schulz<double, polar::gram_newton_schulz>(s, polar::schedules::jordan5);
}
void accuracy(benchmark::State& s, const polar::ns_schedule* sch) { bm_accuracy<polar::newton_schulz>(s, *sch); }
void accuracy_gram(benchmark::State& s, const polar::ns_schedule* sch) {
  bm_accuracy<polar::gram_newton_schulz>(s, *sch);
}
BENCHMARK_CAPTURE(accuracy, jordan5, &polar::schedules::jordan5);
BENCHMARK_CAPTURE(accuracy, you5, &polar::schedules::you5);
BENCHMARK_CAPTURE(accuracy, polar_express5, &polar::schedules::polar_express5);
BENCHMARK_CAPTURE(accuracy, polar_express8, &polar::schedules::polar_express8);
BENCHMARK_CAPTURE(accuracy, cans5, &polar::schedules::cans5);
BENCHMARK_CAPTURE(accuracy, cubic, &polar::schedules::cubic);
BENCHMARK_CAPTURE(accuracy, turbo4, &polar::schedules::turbo4);
BENCHMARK_CAPTURE(accuracy_gram, jordan5, &polar::schedules::jordan5);
BENCHMARK_CAPTURE(accuracy_gram, polar_express8, &polar::schedules::polar_express8);
BENCHMARK(bm_parts)->ArgsProduct({{0, 1, 2, 3, 4, 5, 6}, {1024}, {4096}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(jordan5_float)->Apply(shapes);
BENCHMARK(gram_jordan5_float)->Apply(wide);
BENCHMARK(gram_jordan5_double)->Apply(wide);
BENCHMARK(jordan5_double)->Apply(shapes);
BENCHMARK(polar_express5_float)->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(polar_express8_float)->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(you5_float)->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(cans5_float)->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(cubic_float)->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(turbo4_float)->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_stack, float)->Args({64, 128, 512})->Args({16, 256, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_stack, double)->Args({64, 128, 512})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_stack, float, polar::gram_newton_schulz)->Args({64, 128, 512})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_direct, float)->Args({1024, 4096})->Args({512, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_svd_polar, float)->Args({256, 1024})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(bm_svd_polar, double)->Args({256, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_CAPTURE(bm_family, normuon, polar::muon_direction<polar::newton_schulz, void, polar::normuon>{})
    ->Args({1024, 4096})->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK_CAPTURE(bm_family, adamuon, polar::muon_direction<polar::newton_schulz, void, polar::adamuon>{})
    ->Args({1024, 4096})->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK_CAPTURE(bm_family, polargrad, polar::muon_direction<polar::newton_schulz, void, polar::polargrad>{})
    ->Args({1024, 4096})->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK_CAPTURE(bm_family, optax_momentum, [] {
  polar::muon_direction<> d;
  d.bias_correction = true;
  return d;
}())->Args({1024, 4096})->Unit(benchmark::kMillisecond)->Iterations(1);

BENCHMARK(bm_step)->Args({256, 1024})->Args({512, 2048})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK(bm_dion)->Args({1024, 4096, 1024})->Args({1024, 4096, 256})->Args({1024, 4096, 64})->Unit(benchmark::kMillisecond)->Iterations(1);

BENCHMARK_MAIN();
