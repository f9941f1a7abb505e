// Decentralized SPSA between processes: run with mpiexec -n 4. Each rank is
// one machine training the same 127 parameters on its own shard (a
// quadratic around its own target), one byte per rank per step through
// MPI_Allgather, for 1000 steps:
//   ranks 0 and 2 train throughout;
//   rank 3 sits out until step 300, then receives rank 0's byte log,
//   replays it from the initial weights (the checkpoint every rank can make
//   from the seed) and trains;
//   rank 1 leaves after step 599, sits out, and at step 800 catches up from
//   its own weights of step 600 with the log it receives.
// At the end every rank's weights and byte log must equal rank 0's bit for
// bit, and replaying rank 0's log from the initial weights must give them
// too. Prints "mpi_replicas: ok" on rank 0; exits non-zero on any rank's
// failure.
#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "polar/dist/mpi.hpp"
#include "polar/estimator/decentralized.hpp"

namespace {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct model {
  fmat w{12, 10}, b{1, 7};
  polar::spsa_params<float> p;
  model() {
    polar::backend::eigen be;
    be.fill_random(polar::make_view(w), polar::rng_key{99}, polar::distribution::normal, 0.5f);
    be.fill_random(polar::make_view(b), polar::rng_key{99, 1}, polar::distribution::normal, 0.5f);
    p.add(polar::make_view(w));
    p.add(polar::make_view(b));
  }
  model(const model&) = delete;
  std::vector<float> flat() const {
    std::vector<float> v(w.data(), w.data() + w.size());
    v.insert(v.end(), b.data(), b.data() + b.size());
    return v;
  }
  double loss(int shard) const {
    double s = 0;
    const auto v = flat();
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double a = std::sin(0.3 * double(i)) + 0.05 * std::sin(1.1 * double(i) + 1.7 * shard);
      const double h = 0.5 + 1.5 * double((i * 37) % 127) / 127;
      s += 0.5 * h * (double(v[i]) - a) * (double(v[i]) - a);
    }
    return s;
  }
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  std::string why;
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  try {
    if (size != 4) throw std::runtime_error("run with 4 ranks, not " + std::to_string(size));
    polar::shared_spsa cfg;
    cfg.seed = 2026;
    cfg.lr = 4e-3;
    polar::dist::mpi_transport net;
    polar::backend::eigen be;
    model m;
    const std::vector<float> initial = m.flat();
    const double start = m.loss(0);
    polar::decentralized_spsa<polar::backend::eigen, float> r(cfg, net.machine());
    const auto loss = [&] { return m.loss(rank); };
    const auto training = [&](std::uint32_t s) {
      if (rank == 3) return s >= 300;
      if (rank == 1) return s < 600 || s >= 800;
      return true;
    };
    for (std::uint32_t s = 0; s < 1000; ++s) {
      if (s == 300 || s == 800) {  // rank 0 sends its log; the joining rank catches up
        auto bytes = net.broadcast(rank == 0 ? r.log().serialize() : std::vector<std::uint8_t>{}, 0);
        if ((s == 300 && rank == 3) || (s == 800 && rank == 1)) r.catch_up(be, m.p, polar::byte_log::parse(bytes));
      }
      if (training(s))
        r.step(be, m.p, net, loss);
      else
        net.exchange(s, net.machine(), polar::byte_code::absent);  // sits out: neither sends nor applies
    }
    // Every rank's weights and log against rank 0's.
    std::vector<float> w = m.flat(), w0 = w;
    MPI_Bcast(w0.data(), int(w0.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
    if (std::memcmp(w.data(), w0.data(), w.size() * sizeof(float)) != 0) why += "weights differ from rank 0's; ";
    const auto mine = r.log().serialize();
    const auto zero = net.broadcast(mine, 0);
    if (mine != zero) why += "byte log differs from rank 0's; ";
    if (r.step() != 1000) why += "ended at step " + std::to_string(r.step()) + "; ";
    if (rank == 0) {
      model fresh;
      if (fresh.flat() != initial) why += "the initial weights are not reproducible; ";
      polar::replay(be, fresh.p, polar::byte_log::parse(mine));
      if (fresh.flat() != w) why += "the log does not replay to the weights; ";
      std::printf("mpi_replicas: loss %.4g -> %.4g, %llu bytes sent and %llu received per rank, log %zu bytes\n",
                  start, m.loss(0), (unsigned long long)net.bytes_sent(), (unsigned long long)net.bytes_received(),
                  mine.size());
      if (!(m.loss(0) < 0.02 * start)) why += "the loss did not fall below 2% of its start; ";
    }
  } catch (const std::exception& e) {
    why += e.what();
  }
  if (!why.empty()) {
    std::fprintf(stderr, "mpi_replicas: rank %d: %s\n", rank, why.c_str());
    failed = 1;
  }
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && !any) std::printf("mpi_replicas: ok (4 ranks, 1000 steps, replicas and logs bit-identical)\n");
  MPI_Finalize();
  return any;
}
