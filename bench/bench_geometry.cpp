// bench/bench_geometry.cpp: the geometry primitives and the Riemannian step,
// each as a ratio to a baseline measured in the same process.
//
//   build/release/bench/bench_geometry --benchmark_counters_tabular=true
//
// Benchmarks and counters:
//   bm_stiefel/<op>/n/p      one retraction (qr, polar, cayley, exponential)
//                            or tangent projection (euclidean, canonical) of
//                            an n x p point, float, on the Eigen backend;
//                            gemms = its time in units of one n x p by p x p
//                            GEMM of this process (the O(n p^2) unit all of
//                            them cost a small multiple of)
//   bm_cayley_vs_dense/n/p   speedup = the dense n x n Cayley solve's time
//                            over the low-rank 2p x 2p one (bar: >= 10 at
//                            n = 4096, p = 256)
//   bm_qr_retraction/n/p     ratio_to_qr = the QR retraction's time over the
//                            backend's QR of the same matrix alone (bar:
//                            <= 2 at n = 4096, p = 256)
//   bm_row_sphere/<dir>/r/c  ratio_to_euclidean = a Riemannian step on the
//                            row sphere over the Euclidean step of the same
//                            direction (bar: <= 1.3), the median of seven
//                            interleaved rounds
//   bm_manifold_muon/n/p     ratio_to_muon = a manifold Muon step (Newton–
//                            Schulz msign by turbo4, warm start, dual_lr 0.2,
//                            tolerance 1e-3) over a Muon step of the same
//                            n x p float matrix, on a sequence of noisy
//                            gradients (bar: <= 3); its_per_step = the
//                            ascent's mean iterations; violation =
//                            |W^T W - I|_F after the steps; residual = the
//                            last ascent's |H|_F / p; at 1024 x 256 the SVD
//                            form's violation and residual on the same
//                            sequence beside it (svd_violation, svd_residual)
//
// Each also runs on the Thrust host systems, named with the suffix _omp or
// _cpp (bm_stiefel_omp/qr/4096/256, ...), at the sizes of the bars; their
// baselines (the GEMM, the QR, the Euclidean step) run on the same backend,
// and the dense Cayley solve is Eigen's on every backend.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <Eigen/Dense>
#include <chrono>
#include <polar/backend/eigen.hpp>
#include <polar/direction/muon.hpp>
#include <polar/geometry/hypersphere.hpp>
#include <polar/geometry/manifold_muon.hpp>
#include <polar/geometry/riemannian.hpp>
#include <polar/geometry/stiefel.hpp>
#if defined(POLAR_BENCH_THRUST)
#include <polar/backend/thrust.hpp>
#endif

namespace {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// seconds() with this file's shorter default budget.
template <class F>
double seconds(F&& f, double budget = 0.2) {
  return polar_bench::seconds(f, budget);
}

fmat random(polar::backend::eigen& be, polar::index r, polar::index c, std::uint64_t seed) {
  fmat m(r, c);
  be.fill_random(polar::make_view(m), polar::rng_key{seed}, polar::distribution::normal);
  return m;
}
polar::matrix_view<const float> cv(const fmat& m) { return polar::make_view(m); }

/// A point of the n x p Stiefel manifold and a tangent step of norm 0.1.
struct stiefel_case {
  fmat x, u;
  stiefel_case(polar::backend::eigen& be, polar::index n, polar::index p) {
    polar::stiefel<> st;
    typename polar::stiefel<>::template workspace<polar::backend::eigen, float> ws;
    x = random(be, n, p, 1);
    st.project(be, polar::make_view(x), ws);
    const fmat r = random(be, n, p, 2);
    u.resize(n, p);
    st.project_tangent(be, cv(x), cv(r), polar::make_view(u), ws);
    u *= 0.1f / u.norm();
  }
};

template <class B>
double gemm_seconds(B& be, polar::index n, polar::index p) {
  polar::backend::eigen setup;
  const fmat a = random(setup, n, p, 3), b = random(setup, p, p, 4);
  fmat c(n, p);
  return seconds([&] { be.gemm(1.0f, polar::op::n, cv(a), polar::op::n, cv(b), 0.0f, polar::make_view(c)); });
}

enum class stiefel_op { qr, polar, cayley, exponential, project_euclidean, project_canonical };

template <class B>
void stiefel_on(benchmark::State& state, stiefel_op which) {
  const polar::index n = state.range(0), p = state.range(1);
  polar::backend::eigen setup;
  stiefel_case c(setup, n, p);
  B be;
  polar::stiefel<> st;
  if (which == stiefel_op::polar) st.retraction = polar::stiefel_retraction::polar;
  if (which == stiefel_op::cayley) st.retraction = polar::stiefel_retraction::cayley;
  if (which == stiefel_op::exponential) st.retraction = polar::stiefel_retraction::exponential;
  if (which == stiefel_op::project_canonical) st.metric = polar::stiefel_metric::canonical;
  typename polar::stiefel<>::template workspace<B, float> ws;
  fmat y = c.x, out(n, p);
  const bool project = which == stiefel_op::project_euclidean || which == stiefel_op::project_canonical;
  const auto op = [&] {
    if (project) {
      st.project_tangent(be, cv(c.x), cv(c.u), polar::make_view(out), ws);
    } else {
      y = c.x;  // retract from the same point every time
      st.retract(be, polar::make_view(y), cv(c.u), ws);
    }
  };
  for (auto _ : state) {
    op();
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(out.data());
  }
  const double t = seconds(op), g = gemm_seconds(be, n, p);
  state.counters["gemms"] = t / g;
}

template <class B>
void cayley_vs_dense_on(benchmark::State& state) {
  const polar::index n = state.range(0), p = state.range(1);
  polar::backend::eigen setup;
  stiefel_case c(setup, n, p);
  B be;
  polar::stiefel<> st{polar::stiefel_metric::canonical, polar::stiefel_retraction::cayley};
  typename polar::stiefel<>::template workspace<B, float> ws;
  fmat y = c.x;
  const auto low_rank = [&] {
    y = c.x;
    st.retract(be, polar::make_view(y), cv(c.u), ws);
  };
  fmat dense_y;
  const auto dense = [&] {
    const fmat P = fmat::Identity(n, n) - 0.5f * c.x * c.x.transpose();
    const fmat A = P * c.u * c.x.transpose() - c.x * c.u.transpose() * P.transpose();
    const fmat I = fmat::Identity(n, n);
    dense_y = (I - 0.5f * A).partialPivLu().solve((I + 0.5f * A) * c.x);
  };
  for (auto _ : state) low_rank();
  const double tl = seconds(low_rank), td = seconds(dense, 0.5);
  state.counters["low_rank_ms"] = tl * 1e3;
  state.counters["dense_ms"] = td * 1e3;
  state.counters["speedup"] = td / tl;
  state.counters["max_diff"] = double((dense_y - y).cwiseAbs().maxCoeff());
}

template <class B>
void qr_retraction_on(benchmark::State& state) {
  const polar::index n = state.range(0), p = state.range(1);
  polar::backend::eigen setup;
  stiefel_case c(setup, n, p);
  B be;
  polar::stiefel<> st;
  typename polar::stiefel<>::template workspace<B, float> ws;
  fmat y = c.x, q(n, p), r(p, p);
  const fmat s = c.x + c.u;
  const auto retraction = [&] {
    y = c.x;
    st.retract(be, polar::make_view(y), cv(c.u), ws);
  };
  const auto qr_alone = [&] { be.qr(cv(s), polar::make_view(q), polar::make_view(r)); };
  for (auto _ : state) retraction();
  state.counters["ratio_to_qr"] = seconds(retraction) / seconds(qr_alone);
}

template <class B, class Direction>
void row_sphere_on(benchmark::State& state, Direction dir) {
  const polar::index rows = state.range(0), cols = state.range(1);
  polar::backend::eigen setup;
  B be;
  polar::hypersphere sphere{polar::sphere_scope::rows};
  typename polar::hypersphere::template workspace<B, float> ws;
  fmat w = random(setup, rows, cols, 5);
  sphere.project(be, polar::make_view(w), ws);
  const fmat g = random(setup, rows, cols, 6);
  dir.weight_decay = 0;
  dir.lr = 1e-4;
  polar::riemannian<Direction, polar::hypersphere> riem{dir, sphere};
  riem.check_point = false;
  fmat wr = w, we = w;
  auto sr = riem.init(be, polar::make_view(wr));
  auto se = dir.init(be, polar::make_view(we));
  const auto riemannian_step = [&] { riem.step(be, polar::make_view(wr), cv(g), sr); };
  const auto euclidean_step = [&] { dir.step(be, polar::make_view(we), cv(g), se); };
  for (auto _ : state) riemannian_step();
  state.counters["ratio_to_euclidean"] = polar_bench::interleaved_ratio(riemannian_step, euclidean_step);
}

using eigen_be = polar::backend::eigen;
void bm_stiefel(benchmark::State& s, stiefel_op w) { stiefel_on<eigen_be>(s, w); }
void bm_cayley_vs_dense(benchmark::State& s) { cayley_vs_dense_on<eigen_be>(s); }
void bm_qr_retraction(benchmark::State& s) { qr_retraction_on<eigen_be>(s); }
template <class Direction>
void bm_row_sphere(benchmark::State& s, Direction d) { row_sphere_on<eigen_be>(s, d); }

#if defined(POLAR_BENCH_THRUST)
using omp_be = polar::backend::thrust<polar::system::omp>;
using cpp_be = polar::backend::thrust<polar::system::cpp>;
void bm_stiefel_omp(benchmark::State& s, stiefel_op w) { stiefel_on<omp_be>(s, w); }
void bm_stiefel_cpp(benchmark::State& s, stiefel_op w) { stiefel_on<cpp_be>(s, w); }
void bm_cayley_vs_dense_omp(benchmark::State& s) { cayley_vs_dense_on<omp_be>(s); }
void bm_cayley_vs_dense_cpp(benchmark::State& s) { cayley_vs_dense_on<cpp_be>(s); }
void bm_qr_retraction_omp(benchmark::State& s) { qr_retraction_on<omp_be>(s); }
void bm_qr_retraction_cpp(benchmark::State& s) { qr_retraction_on<cpp_be>(s); }
template <class Direction>
void bm_row_sphere_omp(benchmark::State& s, Direction d) { row_sphere_on<omp_be>(s, d); }
template <class Direction>
void bm_row_sphere_cpp(benchmark::State& s, Direction d) { row_sphere_on<cpp_be>(s, d); }
#endif

void stiefel_sizes(benchmark::internal::Benchmark* b) {
  for (long n : {256, 1024, 4096})
    for (long p : {16, 64, 256, 512})
      if (p <= n / 2) b->Args({n, p});
  b->Unit(benchmark::kMillisecond)->Iterations(3);
}
// The Thrust host systems at the smallest size (for the smoke test) and at
// the bars' size.
void thrust_stiefel_sizes(benchmark::internal::Benchmark* b) {
  b->Args({256, 16})->Args({4096, 256})->Unit(benchmark::kMillisecond)->Iterations(3);
}

}  // namespace

/// Steps a point of the n x p Stiefel manifold `steps` times with
/// manifold Muon on gradients g0 + noise_k; returns the seconds of the
/// steps after the first, and leaves the last state's figures in `its`
/// (mean iterations), `residual` and `violation`.
template <class MM>
double manifold_steps(const MM& mm, polar::index n, polar::index p, int steps, double& its, double& residual,
                      double& violation) {
  polar::backend::eigen be;
  fmat w = random(be, n, p, 1), g0 = random(be, n, p, 2), g(n, p);
  polar::svd_polar{}(be, cv(fmat(w)), polar::make_view(w));
  auto s = mm.init(be, cv(w));
  double t = 0;
  its = 0;
  for (int k = 0; k < steps; ++k) {
    g = g0 + 0.5f * random(be, n, p, std::uint64_t(100 + k));
    const auto t0 = std::chrono::steady_clock::now();
    mm.step(be, polar::make_view(w), cv(g), s);
    if (k > 0) t += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    its += s.dual_iterations;
  }
  its /= steps;
  residual = s.dual_residual;
  violation = (w.transpose().cast<double>() * w.cast<double>() - Eigen::MatrixXd::Identity(p, p)).norm();
  return t / (steps - 1);
}

/// Manifold Muon's fast form over Muon, same shape, same process.
void bm_manifold_muon(benchmark::State& state) {
  const polar::index n = state.range(0), p = state.range(1);
  const int steps = n >= 4096 ? 10 : 40;
  polar::manifold_muon<polar::newton_schulz> mm;
  mm.orthogonalizer.schedule = polar::schedules::turbo4;  // AOL: four steps instead of five
  mm.dual_lr = 0.2;
  mm.tolerance = 1e-3;
  polar::backend::eigen be;
  fmat mw = random(be, n, p, 3);
  const fmat mg = random(be, n, p, 4);
  polar::muon_direction<> muon;
  auto ms = muon.init(be, cv(mw));
  double its = 0, residual = 0, violation = 0, ratio = 0;
  for (auto _ : state) {
    const double tm = manifold_steps(mm, n, p, steps, its, residual, violation);
    const double tu = seconds([&] { muon.step(be, polar::make_view(mw), cv(mg), ms); }, n >= 4096 ? 2.0 : 0.5);
    ratio = tm / tu;
    state.SetIterationTime(tm);
  }
  state.counters["ratio_to_muon"] = ratio;
  state.counters["its_per_step"] = its;
  state.counters["residual"] = residual;
  state.counters["violation"] = violation;
  if (n <= 1024) {
    polar::manifold_muon<> exact;
    exact.dual_lr = 0.2;
    exact.tolerance = 1e-3;
    double sits = 0, sres = 0, sviol = 0;
    manifold_steps(exact, n, p, 6, sits, sres, sviol);
    state.counters["svd_violation"] = sviol;
    state.counters["svd_residual"] = sres;
  }
}

BENCHMARK_CAPTURE(bm_stiefel, qr, stiefel_op::qr)->Apply(stiefel_sizes);
BENCHMARK_CAPTURE(bm_stiefel, polar, stiefel_op::polar)->Apply(stiefel_sizes);
BENCHMARK_CAPTURE(bm_stiefel, cayley, stiefel_op::cayley)->Apply(stiefel_sizes);
BENCHMARK_CAPTURE(bm_stiefel, exponential, stiefel_op::exponential)->Apply(stiefel_sizes);
BENCHMARK_CAPTURE(bm_stiefel, project_euclidean, stiefel_op::project_euclidean)->Apply(stiefel_sizes);
BENCHMARK_CAPTURE(bm_stiefel, project_canonical, stiefel_op::project_canonical)->Apply(stiefel_sizes);
BENCHMARK(bm_cayley_vs_dense)->Args({1024, 64})->Args({4096, 256})->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(bm_qr_retraction)->Args({1024, 64})->Args({4096, 256})->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(bm_row_sphere, sgd, polar::sgd_direction{})->Args({2048, 2048})->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_row_sphere, momentum, polar::momentum_direction{})->Args({2048, 2048})->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_row_sphere, adam, polar::adamw_direction{})->Args({2048, 2048})->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_row_sphere, muon, polar::muon_direction<>{})->Args({1024, 1024})->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(bm_manifold_muon)->Args({1024, 256})->Args({4096, 1024})->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(1);

#if defined(POLAR_BENCH_THRUST)
#define POLAR_GEOMETRY_ON_THRUST(SYS)                                                                           \
  BENCHMARK_CAPTURE(bm_stiefel_##SYS, qr, stiefel_op::qr)->Apply(thrust_stiefel_sizes);                        \
  BENCHMARK_CAPTURE(bm_stiefel_##SYS, polar, stiefel_op::polar)->Apply(thrust_stiefel_sizes);                  \
  BENCHMARK_CAPTURE(bm_stiefel_##SYS, cayley, stiefel_op::cayley)->Apply(thrust_stiefel_sizes);                \
  BENCHMARK_CAPTURE(bm_stiefel_##SYS, exponential, stiefel_op::exponential)->Apply(thrust_stiefel_sizes);      \
  BENCHMARK_CAPTURE(bm_stiefel_##SYS, project_euclidean, stiefel_op::project_euclidean)                        \
      ->Apply(thrust_stiefel_sizes);                                                                            \
  BENCHMARK_CAPTURE(bm_stiefel_##SYS, project_canonical, stiefel_op::project_canonical)                        \
      ->Apply(thrust_stiefel_sizes);                                                                            \
  BENCHMARK(bm_cayley_vs_dense_##SYS)->Args({4096, 256})->Unit(benchmark::kMillisecond)->Iterations(2);        \
  BENCHMARK(bm_qr_retraction_##SYS)->Args({4096, 256})->Unit(benchmark::kMillisecond)->Iterations(3);          \
  BENCHMARK_CAPTURE(bm_row_sphere_##SYS, sgd, polar::sgd_direction{})->Args({4096, 4096})->Unit(benchmark::kMillisecond); \
  BENCHMARK_CAPTURE(bm_row_sphere_##SYS, momentum, polar::momentum_direction{})                                \
      ->Args({4096, 4096})                                                                                      \
      ->Unit(benchmark::kMillisecond);                                                                          \
  BENCHMARK_CAPTURE(bm_row_sphere_##SYS, adam, polar::adamw_direction{})->Args({4096, 4096})->Unit(benchmark::kMillisecond)
POLAR_GEOMETRY_ON_THRUST(omp);
POLAR_GEOMETRY_ON_THRUST(cpp);
#endif

BENCHMARK_MAIN();
