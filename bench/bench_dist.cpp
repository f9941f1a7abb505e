// The sharded optimizer's step between MPI processes, against one process
// stepping the same matrices, in one run:
//
//   mpiexec -n 2 build/release/bench/bench_dist --benchmark_counters_tabular=true
//
// Every rank runs 1 polar thread. Rank 0 first steps the whole set alone
// (one_rank: the other ranks wait, asleep, in a barrier); then all ranks
// step it sharded, with each bucket's all-gather overlapping the next
// bucket's steps and without. Counters (rank 0's):
//   speedup           one_rank's step time over this step time
//   bytes_per_step    bytes this rank sent in a step
//   bytes_over_design those bytes over 2 (N - 1) / N P (P: the parameter bytes)
//   state_fraction    this rank's optimizer state over one process's
// The set: --matrices=24 --rows=512 --cols=2048 (Muon, float); --steps=3
// iterations of each benchmark (every rank must run the same number).
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "polar/core/threads.hpp"
#include "polar/direction/muon.hpp"
#include "polar/dist/mpi.hpp"
#include "polar/dist/sharded_optimizer.hpp"
#include "polar/optimizer.hpp"

namespace {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using sharded_t = polar::dist::sharded_optimizer<polar::backend::eigen, float, polar::dist::mpi_communicator>;

int matrices = 24, rows = 512, cols = 2048, steps = 3;
double one_rank_seconds = 0;  // rank 0's step time alone
std::size_t one_rank_state = 0;

struct set {
  std::vector<fmat> w, g;
  explicit set(int rank) {
    polar::backend::eigen be;
    for (int k = 0; k < matrices; ++k) {
      w.emplace_back(rows, cols);
      g.emplace_back(rows, cols);
      be.fill_random(polar::make_view(w.back()), polar::rng_key{7, std::uint32_t(k)}, polar::distribution::normal, 0.02f);
      be.fill_random(polar::make_view(g.back()), polar::rng_key{9, std::uint32_t(k), std::uint32_t(rank)},
                     polar::distribution::normal, 1.0f);
    }
  }
  std::vector<polar::param_view<const float>> grads() {
    std::vector<polar::param_view<const float>> v;
    for (auto& x : g) v.push_back(polar::make_view(x));
    return v;
  }
};

void bm_one_rank(benchmark::State& state) {
  set s(0);
  polar::backend::eigen be;
  polar::optimizer<polar::backend::eigen, float> opt(be);
  opt.add_group("muon", polar::muon_direction<>{});
  for (int k = 0; k < matrices; ++k) opt.add("w" + std::to_string(k), polar::make_view(s.w[std::size_t(k)]));
  const auto g = s.grads();
  opt.step(g);  // the states' first use
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    opt.step(g);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(dt);
    total += dt;
  }
  one_rank_seconds = total / double(state.iterations());
  one_rank_state = opt.state_bytes();
}

void bm_sharded(benchmark::State& state, bool overlap) {
  polar::dist::mpi_communicator comm;
  comm.barrier();  // rank 0 may still be stepping alone
  set s(comm.rank());
  polar::backend::eigen be;
  sharded_t opt(be, comm);
  opt.overlap = overlap;
  opt.add_group("muon", polar::muon_direction<>{});
  for (int k = 0; k < matrices; ++k) opt.add("w" + std::to_string(k), polar::make_view(s.w[std::size_t(k)]));
  const auto g = s.grads();
  opt.step(g);
  double total = 0;
  std::uint64_t sent = 0;
  for (auto _ : state) {
    const auto before = opt.counted().bytes_sent;
    const auto t0 = std::chrono::steady_clock::now();
    opt.step(g);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(dt);
    total += dt;
    sent = opt.counted().bytes_sent - before;
  }
  const double per = total / double(state.iterations()), n = comm.size();
  state.counters["ranks"] = n;
  if (one_rank_seconds > 0) state.counters["speedup"] = one_rank_seconds / per;
  state.counters["bytes_per_step"] = double(sent);
  if (n > 1) state.counters["bytes_over_design"] = double(sent) / (2 * (n - 1) / n * double(opt.parameter_bytes()));
  const double single = double(std::size_t(matrices) * std::size_t(rows) * std::size_t(cols) * sizeof(float));
  state.counters["state_fraction"] = double(opt.state_bytes()) / (one_rank_state ? double(one_rank_state) : single);
}

// Ranks other than 0 report nothing.
class silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

bool take(const char* arg, const char* name, int& v) {
  const std::size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  v = std::atoi(arg + n + 1);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (take(argv[i], "--matrices", matrices) || take(argv[i], "--rows", rows) || take(argv[i], "--cols", cols) ||
        take(argv[i], "--steps", steps))
      continue;
    if (rank != 0 && std::strncmp(argv[i], "--benchmark_out", 15) == 0) continue;  // rank 0 writes the file
    argv[kept++] = argv[i];
  }
  argc = kept;
  polar::set_threads(1);
  benchmark::Initialize(&argc, argv);
  const std::string shape = std::to_string(matrices) + "x" + std::to_string(rows) + "x" + std::to_string(cols);
  if (rank == 0)
    benchmark::RegisterBenchmark(("one_rank/" + shape).c_str(), bm_one_rank)
        ->Iterations(steps)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("sharded_overlap/" + shape).c_str(), bm_sharded, true)
      ->Iterations(steps)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("sharded_no_overlap/" + shape).c_str(), bm_sharded, false)
      ->Iterations(steps)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  if (rank == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    silent quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}
