// bench/bench_load.cpp: a step's time on cores that other busy processes
// share, over its time on a quiet machine, measured in one run.
//
//   build/release/bench/bench_load --benchmark_counters_tabular=true [--busy=N]
//
// For each step below, the benchmark times the step alone (quiet, on
// polar::threads() threads: OMP_NUM_THREADS or POLAR_NUM_THREADS, the
// cores by default); then it starts N busy processes (2 by default; each
// spins, ends itself after a minute at most, and is killed by the benchmark
// when the case ends) and times the step again, on the same threads and on
// one thread (polar::thread_limit). Five rounds each start the busy
// processes afresh; in each round every condition takes at least 3 calls
// and as many as fit in 0.4 s, and each figure is over all rounds' calls.
//
// The busy processes are this program started again (posix_spawn of
// /proc/self/exe with --busy-child), not fork()ed copies of it: fork marks
// every page of the benchmark copy-on-write, and the first step after it
// then faults on each page it writes (50-90 ms for AdamW at 1024 x 4096,
// once per round), which the quiet and one-thread figures never pay.
//
// Counters:
//
//   quiet_ms            the step alone
//   load_ms             the step beside N busy processes
//   load_1thread_ms     the same on one thread
//   load_over_quiet     load_ms / quiet_ms: the bar is <= 2.5 with N = 2 on a
//                       2-core machine, where each thread's fair share of a
//                       core is half and 2 is the fair figure
//   load_over_1thread   load_ms / load_1thread_ms (bar <= 1: threads never
//                       lose to one thread under load)
//   mean_load_over_quiet, mean_load_over_1thread
//                       the same with the mean call in place of the median:
//                       the time per step a training loop sees. A call
//                       shorter than the scheduler's tick either misses
//                       every preemption or waits a whole tick, so its
//                       median lands near one cluster or the other from
//                       run to run (docs/threads.md)
//   threads             polar::threads() for the quiet and load_ms figures
//
// Cases: Muon (momentum and Newton-Schulz, muon_direction's defaults) at
// 1024 x 4096 and 256 x 1024, AdamW and MD-AdamW at 1024 x 4096, in float,
// on the Eigen backend and on Thrust's OpenMP system.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <Eigen/Dense>
#include <polar/backend/eigen.hpp>
#include <polar/direction/adamw.hpp>
#include <polar/direction/muon.hpp>
#include <polar/gains/row_col_gains.hpp>
#if defined(POLAR_BENCH_THRUST)
#include <polar/backend/thrust.hpp>
#endif

namespace {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

int busy_processes = 2;

/// What a busy process runs: spin until killed, or for `limit` seconds.
[[noreturn]] void spin(unsigned limit) {
  alarm(limit);
  volatile unsigned long x = 0;
  for (;;) x = x + 1;
}

/// N processes that spin until the object ends (each also ends itself after
/// a minute, so none outlives a benchmark that dies). Each is this program
/// started with --busy-child (see the top of the file for why not fork()).
class busy_load {
 public:
  explicit busy_load(int n) {
    char self[] = "/proc/self/exe";
    char flag[] = "--busy-child";
    char* args[] = {self, flag, nullptr};
    for (int i = 0; i < n; ++i) {
      pid_t pid = 0;
      const int e = posix_spawn(&pid, self, nullptr, nullptr, args, environ);
      if (e != 0) {
        std::fprintf(stderr, "bench_load: could not start a busy process (posix_spawn of %s: %s)\n", self,
                     std::strerror(e));
        std::exit(1);
      }
      pids_.push_back(pid);
    }
    // Let the scheduler spread them before anything is timed.
    usleep(100000);
  }
  ~busy_load() {
    for (const pid_t p : pids_) kill(p, SIGKILL);
    for (const pid_t p : pids_) waitpid(p, nullptr, 0);
  }
  busy_load(const busy_load&) = delete;
  busy_load& operator=(const busy_load&) = delete;

 private:
  std::vector<pid_t> pids_;
};

/// Appends the seconds of each call of f to `to`: at least `min_calls`
/// calls and as many as fit in `budget` seconds.
template <class F>
void time_calls(F& f, std::vector<double>& to, int min_calls, double budget) {
  const auto start = std::chrono::steady_clock::now();
  for (int k = 0; k < min_calls ||
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < budget;
       ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    to.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
}

double median(std::vector<double> t) {
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

double mean(const std::vector<double>& t) {
  double s = 0;
  for (const double x : t) s += x;
  return s / double(t.size());
}

/// Times `step` quiet, under load, and under load on one thread, in
/// `rounds` rounds that each start the busy processes afresh (so one
/// unlucky placement of them by the scheduler weighs one round), and
/// reports the median call of each condition over all rounds.
template <class F>
void under_load(benchmark::State& state, F&& step) {
  constexpr int rounds = 5;
  constexpr double budget = 0.4;
  std::vector<double> quiet, load, load1;
  for (auto _ : state) {
    step();
    for (int r = 0; r < rounds; ++r) {
      time_calls(step, quiet, 3, budget);
      const busy_load busy(busy_processes);
      time_calls(step, load, 3, budget);
      const polar::thread_limit one(1);
      time_calls(step, load1, 3, budget);
    }
    state.SetIterationTime(median(quiet));
  }
  const double q = median(quiet), l = median(load), l1 = median(load1);
  state.counters["quiet_ms"] = q * 1e3;
  state.counters["load_ms"] = l * 1e3;
  state.counters["load_1thread_ms"] = l1 * 1e3;
  state.counters["load_over_quiet"] = l / q;
  state.counters["load_over_1thread"] = l / l1;
  state.counters["mean_load_over_quiet"] = mean(load) / mean(quiet);
  state.counters["mean_load_over_1thread"] = mean(load) / mean(load1);
  state.counters["threads"] = polar::threads();
}

/// A float matrix of small Gaussian weights and one of gradients.
struct problem {
  fmat w, g;
  problem(polar::index rows, polar::index cols) : w(rows, cols), g(rows, cols) {
    polar::backend::eigen setup;
    setup.fill_random(polar::make_view(w), polar::rng_key{1}, polar::distribution::normal, 0.02f);
    setup.fill_random(polar::make_view(g), polar::rng_key{2}, polar::distribution::normal, 1e-3f);
  }
  polar::matrix_view<const float> grad() const { return polar::make_view(g); }
};

template <class B, class Direction>
void direction_under_load(benchmark::State& state, Direction d) {
  problem p(state.range(0), state.range(1));
  B be;
  auto s = d.init(be, polar::make_view(p.w));
  under_load(state, [&] { d.step(be, polar::make_view(p.w), p.grad(), s); });
}

using eigen_be = polar::backend::eigen;
void bm_load(benchmark::State& s, polar::muon_direction<> d) { direction_under_load<eigen_be>(s, d); }
void bm_load(benchmark::State& s, polar::adamw_direction d) { direction_under_load<eigen_be>(s, d); }
void bm_load(benchmark::State& s, polar::row_col_gains<polar::adamw_direction> d) {
  direction_under_load<eigen_be>(s, d);
}
#if defined(POLAR_BENCH_THRUST)
using omp_be = polar::backend::thrust<polar::system::omp>;
void bm_load_omp(benchmark::State& s, polar::muon_direction<> d) { direction_under_load<omp_be>(s, d); }
void bm_load_omp(benchmark::State& s, polar::adamw_direction d) { direction_under_load<omp_be>(s, d); }
void bm_load_omp(benchmark::State& s, polar::row_col_gains<polar::adamw_direction> d) {
  direction_under_load<omp_be>(s, d);
}
#endif

}  // namespace

#define POLAR_LOAD_CASES(bm)                                                                         \
  BENCHMARK_CAPTURE(bm, muon, polar::muon_direction<>{})                                             \
      ->Args({1024, 4096})->Args({256, 1024})->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond); \
  BENCHMARK_CAPTURE(bm, adamw, polar::adamw_direction{})                                             \
      ->Args({1024, 4096})->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);            \
  BENCHMARK_CAPTURE(bm, md_adamw, polar::row_col_gains<polar::adamw_direction>{})                    \
      ->Args({1024, 4096})->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond)

POLAR_LOAD_CASES(bm_load);
#if defined(POLAR_BENCH_THRUST)
POLAR_LOAD_CASES(bm_load_omp);
#endif

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--busy-child") == 0) spin(60);
  // --busy=N: the number of busy processes (taken out before Google
  // Benchmark reads the rest).
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strncmp(argv[i], "--busy=", 7) == 0) {
      busy_processes = std::max(0, std::atoi(argv[i] + 7));
      continue;
    }
    rest.push_back(argv[i]);
  }
  int n = int(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
