// Data-parallel training with the sharded optimizer (polar/dist/sharded_optimizer.hpp).
//
//   mpiexec -n 2 build/release/examples/polar_distributed            (ranks as processes)
//   build/release/examples/polar_distributed --ranks 3               (ranks as threads)
//
// Every rank holds the digits perceptron (64 -> width -> width -> 10) and
// the same optimizer settings: Muon for the hidden layers, AdamW for the
// head, one cosine schedule. At each step rank r computes the gradient of
// its own slice of the global batch (ranks x --batch images), and the
// sharded optimizer averages the gradients on each matrix's owner, steps
// it there, and sends the new weights to every rank. Every `--every` steps
// rank 0 prints the training loss (the mean over the ranks' batches), the
// optimizer's step time and the bytes this rank sent in the step; at the
// end the test accuracy, the state each rank holds, and whether every
// rank's weights are the same bits. --verify replays the run on rank 0 with
// one polar::optimizer stepping the average of the ranks' gradients and
// checks that its weights are the distributed run's, bit for bit.
// Prints "distributed: ok" when everything checked holds.
#include <Eigen/Core>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "digits.hpp"
#include "polar/backend/eigen.hpp"
#include "polar/core/threads.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/dist/communicator.hpp"
#include "polar/dist/sharded_optimizer.hpp"
#include "polar/optimizer.hpp"
#include "polar/schedule.hpp"
#if defined(POLAR_EXAMPLE_MPI)
#include "polar/dist/mpi.hpp"
#endif

namespace {

using examples::rmatrix;
using examples::split;
using examples::split_digits;
using eigen = polar::backend::eigen;

struct options {
  int ranks = 2;  // threads, when not under mpiexec
  int steps = 300, width = 256, batch = 32, every = 25;
  std::uint64_t seed = 2026;
  bool verify = false;
};

// Rank r's images at step s: its slice of the step's global batch, drawn
// from a generator every rank seeds alike.
void batch_of(const split& data, const options& o, int ranks, int r, int s, rmatrix& x, std::vector<int>& y) {
  std::mt19937_64 g(o.seed * 1000003ull + std::uint64_t(s));
  const std::size_t n = data.train_y.size();
  x.resize(o.batch, 64);
  y.assign(std::size_t(o.batch), 0);
  for (int k = 0; k < ranks * o.batch; ++k) {
    const std::size_t i = std::size_t(g() % n);
    if (k / o.batch != r) continue;
    x.row(k % o.batch) = data.train_x.row(polar::index(i));
    y[std::size_t(k % o.batch)] = data.train_y[i];
  }
}

// The groups: Muon for the hidden layers, AdamW for the head, one cosine.
template <class Opt>
void configure(Opt& opt, const examples::network& net, const options& o) {
  polar::adamw_direction head;
  head.lr = 3e-3;
  polar::muon_direction<> hidden;
  hidden.lr = 0.02;
  opt.add_group("head", head, polar::rule::name("w" + std::to_string(net.w.size() - 1)));
  opt.add_group("hidden", hidden);
  opt.group("head").lr_schedule = polar::schedule::cosine(o.steps);
  opt.group("hidden").lr_schedule = polar::schedule::cosine(o.steps);
}

std::uint64_t fnv(const examples::network& net) {
  std::uint64_t h = 1469598103934665603ull;
  for (const auto& w : net.w) {
    const auto* p = reinterpret_cast<const unsigned char*>(w.data());
    for (std::size_t k = 0; k < std::size_t(w.size()) * sizeof(float); ++k) h = (h ^ p[k]) * 1099511628211ull;
  }
  return h;
}

struct outcome {
  bool identical = true, verified = true;
};

// One rank's training, on any communicator.
template <class Comm>
outcome train(Comm& comm, const split& data, const options& o) {
  const int ranks = comm.size(), me = comm.rank();
  const polar::thread_limit one(1);
  eigen be;
  examples::network net = examples::make_network(o.width, 2, o.seed);
  polar::dist::sharded_optimizer<eigen, float, Comm> opt(be, comm);
  configure(opt, net, o);
  std::vector<rmatrix> grads(net.w.size()), acts;
  for (std::size_t l = 0; l < net.w.size(); ++l) {
    opt.add("w" + std::to_string(l), polar::make_view(net.w[l]));
    grads[l].resize(net.w[l].rows(), net.w[l].cols());
  }
  opt.shard();
  // The replay: one optimizer on the average of every rank's gradients.
  examples::network ref = net;
  eigen ref_be;
  polar::optimizer<eigen, float> ref_opt(ref_be);
  const bool replay = o.verify && me == 0;
  if (replay) {
    configure(ref_opt, ref, o);
    for (std::size_t l = 0; l < ref.w.size(); ++l) ref_opt.add("w" + std::to_string(l), polar::make_view(ref.w[l]));
  }
  if (me == 0) {
    std::printf("distributed: %d ranks, digits perceptron 64-%d-%d-10 (%zu parameters), %d images a rank a step\n",
                ranks, o.width, o.width, opt.parameter_bytes() / sizeof(float), o.batch);
    std::printf("  owners:");
    for (polar::index i = 0; i < opt.size(); ++i) std::printf(" %s->%d", opt.name(i).c_str(), opt.owner(i));
    std::printf("\n  %6s %10s %12s %14s %12s\n", "step", "loss", "step ms", "bytes sent", "2(N-1)/N P");
  }
  rmatrix x;
  std::vector<int> y;
  double step_seconds = 0;
  for (int s = 0; s < o.steps; ++s) {
    batch_of(data, o, ranks, me, s, x, y);
    double loss = examples::loss_and_grads(net, x, y.data(), &grads, acts);
    std::vector<polar::param_view<const float>> g;
    for (const auto& m : grads) g.push_back(polar::make_view(m));
    const auto sent = opt.counted().bytes_sent;
    const auto t0 = std::chrono::steady_clock::now();
    opt.step(g);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    step_seconds += dt;
    const auto bytes = opt.counted().bytes_sent - sent;
    if (replay) {
      std::vector<rmatrix> avg, gr;
      rmatrix xr;
      std::vector<int> yr;
      for (int r = 0; r < ranks; ++r) {
        batch_of(data, o, ranks, r, s, xr, yr);
        examples::loss_and_grads(ref, xr, yr.data(), &gr, acts);
        if (r == 0) {
          avg = gr;
        } else {
          for (std::size_t l = 0; l < avg.size(); ++l) avg[l] += gr[l];
        }
      }
      for (auto& a : avg)
        for (polar::index k = 0; k < a.size(); ++k) a.data()[k] = a.data()[k] / float(ranks);
      std::vector<polar::param_view<const float>> ga;
      for (const auto& m : avg) ga.push_back(polar::make_view(m));
      ref_opt.step(ga);
    }
    polar::dist::all_reduce_sum(comm, &loss, 1);
    if (me == 0 && (s % o.every == 0 || s + 1 == o.steps)) {
      const double p = double(opt.parameter_bytes()), n = ranks;
      std::printf("  %6d %10.4f %12.2f %14llu %12.0f\n", s, loss / ranks, 1e3 * dt, (unsigned long long)bytes,
                  2 * (n - 1) / n * p);
    }
  }
  outcome out;
  // Every rank's weights, as one hash each.
  const std::uint64_t mine = fnv(net);
  std::vector<std::uint64_t> all(static_cast<std::size_t>(ranks));
  std::vector<std::size_t> counts(static_cast<std::size_t>(ranks), sizeof mine);
  polar::dist::all_gather(comm, &mine, sizeof mine, all.data(), counts.data());
  for (auto h : all) out.identical = out.identical && h == mine;
  if (replay)
    for (std::size_t l = 0; l < net.w.size(); ++l)
      out.verified = out.verified && std::memcmp(net.w[l].data(), ref.w[l].data(), sizeof(float) * std::size_t(net.w[l].size())) == 0;
  double state = double(opt.state_bytes());
  std::vector<double> states(static_cast<std::size_t>(ranks));
  std::vector<std::size_t> dcounts(static_cast<std::size_t>(ranks), sizeof state);
  polar::dist::all_gather(comm, &state, sizeof state, states.data(), dcounts.data());
  if (me == 0) {
    std::printf("  test accuracy %.1f%%; optimizer step %.2f ms on average; state per rank:", 100 * examples::accuracy(net, data.test_x, data.test_y.data()),
                1e3 * step_seconds / o.steps);
    for (double b : states) std::printf(" %.0f KiB", b / 1024);
    std::printf("\n  every rank's weights the same bits: %s", out.identical ? "yes" : "NO");
    if (o.verify) std::printf("; one optimizer on the averaged gradients gives the same bits: %s", out.verified ? "yes" : "NO");
    std::printf("\n");
  }
  return out;
}

int number(const char* flag, const char* text, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (!end || *end || v < lo || v > hi)
    throw std::runtime_error(std::string(flag) + " takes an integer in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "], got '" + text + "'");
  return int(v);
}

}  // namespace

int main(int argc, char** argv) {
  bool mpi = false;
#if defined(POLAR_EXAMPLE_MPI)
  // Under mpiexec the ranks are processes.
  mpi = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE");
  if (mpi) MPI_Init(&argc, &argv);
#endif
  int rc = 0;
  try {
    options o;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      const auto value = [&] {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--ranks") o.ranks = number("--ranks", value(), 1, 64);
      else if (a == "--steps") o.steps = number("--steps", value(), 1, 1000000);
      else if (a == "--width") o.width = number("--width", value(), 1, 8192);
      else if (a == "--batch") o.batch = number("--batch", value(), 1, 1500);
      else if (a == "--every") o.every = number("--every", value(), 1, 1000000);
      else if (a == "--verify") o.verify = true;
      else if (a == "--quick") o.steps = 60, o.width = 64, o.every = 20;
      else throw std::runtime_error("unknown option " + a + " (--ranks --steps --width --batch --every --verify --quick)");
    }
    const split data = split_digits(examples::load_digits(examples::default_digits_path()));
    outcome out;
    bool report = true;
    if (mpi) {
#if defined(POLAR_EXAMPLE_MPI)
      polar::dist::mpi_communicator comm;
      out = train(comm, data, o);
      report = comm.rank() == 0;
#endif
    } else {
      polar::dist::local_group group(o.ranks);
      std::vector<outcome> outs(static_cast<std::size_t>(o.ranks));
      std::vector<std::string> errors(static_cast<std::size_t>(o.ranks));
      std::vector<std::thread> threads;
      for (int r = 0; r < o.ranks; ++r)
        threads.emplace_back([&, r] {
          try {
            auto comm = group.rank(r);
            outs[std::size_t(r)] = train(comm, data, o);
          } catch (const std::exception& e) {
            errors[std::size_t(r)] = e.what();
          }
        });
      for (auto& t : threads) t.join();
      for (const auto& e : errors)
        if (!e.empty()) throw std::runtime_error(e);
      out = outs[0];
    }
    const bool ok = out.identical && out.verified;
    if (report) std::printf(ok ? "distributed: ok\n" : "distributed: FAILED\n");
    rc = ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "distributed: %s\n", e.what());
    rc = 1;
  }
#if defined(POLAR_EXAMPLE_MPI)
  if (mpi) MPI_Finalize();
#endif
  return rc;
}
