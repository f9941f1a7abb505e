// The sharded optimizer between processes (polar/dist/sharded_optimizer.hpp
// over polar::dist::mpi_communicator). Run with mpiexec -n N, N = 1 to 4:
//
//   mpi_sharded steps   the model of tests/dist/sharded_model.hpp (Muon,
//                       AdamW, MD-AdamW and row-sphere Riemannian Adam
//                       groups) takes 3 steps with and without clipping;
//                       every rank's weights must be the bits of one
//                       polar::optimizer stepping the averaged gradient
//                       (computed here on each rank); 24 Muon matrices must
//                       move the design's bytes and split the state; a
//                       checkpoint saved by N ranks must resume on N - 1
//                       (a sub-communicator) bit-exactly; decentralized
//                       SPSA's transport must refuse a rank out of step.
//   mpi_sharded kill    rank 2 of 3 dies (SIGKILL) after sharding; ranks 0
//                       and 1 must each report transport_error within their
//                       2 s timeout instead of hanging.
//
// Prints "mpi_sharded: ok" (or "mpi_sharded kill: ok") on rank 0 when every
// rank passed; a failure prints what failed and exits non-zero.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dist/sharded_model.hpp"
#include "polar/backend/eigen.hpp"
#include "polar/core/threads.hpp"
#include "polar/dist/mpi.hpp"
#include "polar/dist/sharded_optimizer.hpp"

namespace {

using sharded_test::fmat;
using sharded_test::model;
using sharded_t = polar::dist::sharded_optimizer<polar::backend::eigen, float, polar::dist::mpi_communicator>;
using sharded_run = sharded_test::trained<sharded_t, polar::backend::eigen>;
using reference_run = sharded_test::trained<polar::optimizer<polar::backend::eigen, float>, polar::backend::eigen>;

int failures = 0;
void expect(bool ok, int rank, const std::string& what) {
  if (ok) return;
  ++failures;
  std::printf("mpi_sharded: rank %d: FAILED: %s\n", rank, what.c_str());
  std::fflush(stdout);
}

void steps(int rank, int size) {
  // Bits against one optimizer, with and without clipping.
  for (const double clip : {0.0, 2.0}) {
    reference_run reference(clip);
    auto& ref = reference.m;
    auto& one = reference.opt;
    for (int s = 0; s < 3; ++s) sharded_test::step_averaged(one, ref, s, size);
    polar::dist::mpi_communicator comm;
    sharded_run run(clip, comm);
    auto& m = run.m;
    run.opt.bucket_bytes = 4096;
    for (int s = 0; s < 3; ++s) sharded_test::step_own(run.opt, m, rank, s);
    for (std::size_t t = 0; t < m.w.size(); ++t)
      expect(sharded_test::same_bits(m.w[t], ref.w[t]), rank,
             "clip " + std::to_string(clip) + ": " + m.names[t] + " differs from one optimizer's step");
  }
  // Bytes and state for 24 Muon matrices.
  {
    sharded_test::muon_set set(rank);
    polar::backend::eigen be;
    polar::dist::mpi_communicator comm;
    sharded_t opt(be, comm);
    opt.bucket_bytes = 16 * 40 * 4 * 5;
    set.add_to(opt);
    opt.step(set.grads());
    const auto before = opt.counted();
    opt.step(set.grads());
    const auto after = opt.counted();
    const double expected = sharded_test::muon_set::step_bytes(size, double(opt.parameter_bytes()));
    expect(double(after.bytes_sent - before.bytes_sent) == expected, rank,
           "bytes sent in a step: " + std::to_string(after.bytes_sent - before.bytes_sent) + ", the design's " +
               std::to_string(expected));
    const std::size_t single = sharded_test::muon_set::single_state_bytes();
    expect(double(opt.state_bytes()) <= (1.0 / size + 0.05) * double(single), rank,
           "state " + std::to_string(opt.state_bytes()) + " bytes of " + std::to_string(single));
  }
  // A communicator of device memory needs a CUDA-aware MPI, and says so.
  {
    bool refused = false;
    try {
      const polar::dist::cuda_aware_mpi_communicator device_comm;
    } catch (const polar::unsupported_error&) {
      refused = true;
    }
    expect(refused == !polar::dist::cuda_aware_mpi_communicator::cuda_aware(), rank,
           "cuda_aware_mpi_communicator on an MPI that is not CUDA-aware must be refused, and only then");
  }
  // Decentralized SPSA's transport finds a rank out of step.
  {
    polar::dist::mpi_transport net;
    bool threw = false;
    try {
      net.exchange(rank == size - 1 ? 8u : 7u, std::uint32_t(rank), 3);
    } catch (const polar::transport_error& e) {
      threw = std::string(e.what()).find("out of step") != std::string::npos;
    }
    expect(threw == (size > 1), rank, "an exchange out of step was not refused");
    const auto records = net.exchange(9, std::uint32_t(rank), 5);
    expect(records.size() == std::size_t(size), rank, "an exchange in step lost records");
    expect(net.bytes_sent() == 4, rank, "2 bytes a step: sent " + std::to_string(net.bytes_sent()));
  }
  // A checkpoint of `size` ranks resumed on size - 1 of them (1 rank: on 1).
  {
    const std::string path = "mpi_sharded_ckpt_" + std::to_string(size);
    const int resume = size > 1 ? size - 1 : 1;
    reference_run reference(2.0);
    auto& ref = reference.m;
    auto& one = reference.opt;
    for (int s = 0; s < 4; ++s) sharded_test::step_averaged(one, ref, s, s < 2 ? size : resume);
    {
      polar::dist::mpi_communicator comm;
      sharded_run run(2.0, comm);
      for (int s = 0; s < 2; ++s) sharded_test::step_own(run.opt, run.m, rank, s);
      run.opt.save(path);
    }
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, rank < resume ? 0 : 1, rank, &sub);
    if (rank < resume) {
      polar::dist::mpi_communicator comm(sub);
      sharded_run run(2.0, comm);
      auto& m = run.m;
      run.opt.load(path);
      for (int s = 2; s < 4; ++s) sharded_test::step_own(run.opt, m, rank, s);
      for (std::size_t t = 0; t < m.w.size(); ++t)
        expect(sharded_test::same_bits(m.w[t], ref.w[t]), rank,
               "resumed on " + std::to_string(resume) + " ranks: " + m.names[t] + " differs");
    }
    MPI_Comm_free(&sub);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
      std::remove(path.c_str());
      for (int r = 0; r < size; ++r) std::remove(sharded_t::shard_path(path, r, size).c_str());
    }
  }
}

void kill_one(int rank, int size) {
  if (size != 3) {
    expect(false, rank, "the kill test runs on 3 ranks");
    return;
  }
  polar::dist::mpi_communicator comm;
  sharded_run run(0.0, comm);
  auto& m = run.m;
  auto& opt = run.opt;
  opt.shard();
  comm.timeout = std::chrono::seconds(2);  // after shard(), which a loaded machine may slow
  if (rank == 2) std::raise(SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  try {
    for (int s = 0; s < 3; ++s) sharded_test::step_own(opt, m, rank, s);
    expect(false, rank, "steps went on without rank 2");
  } catch (const polar::transport_error& e) {
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("mpi_sharded kill: rank %d: transport_error after %.0f ms: %s\n", rank, ms, e.what());
    expect(ms < 10000, rank, "the error came after " + std::to_string(ms) + " ms");
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const polar::thread_limit one(1);
  const std::string mode = argc > 1 ? argv[1] : "steps";
  try {
    if (mode == "kill") {
      kill_one(rank, size);
      // Rank 2 is gone: MPI cannot finish cleanly, so each survivor reports
      // and leaves without MPI_Finalize.
      std::printf("mpi_sharded kill: rank %d: %s\n", rank, failures ? "failed" : "ok");
      std::fflush(stdout);
      std::_Exit(failures ? 1 : 0);
    }
    steps(rank, size);
  } catch (const std::exception& e) {
    expect(false, rank, std::string("threw: ") + e.what());
  }
  int any = failures, total = 0;
  MPI_Allreduce(&any, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0 && total == 0)
    std::printf("mpi_sharded: ok (%d ranks: bits of one optimizer, the design's bytes, state split, resumed on %d)\n",
                size, size > 1 ? size - 1 : 1);
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}
