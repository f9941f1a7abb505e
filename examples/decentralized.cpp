// examples/decentralized.cpp: several machines fine-tune one model with
// SPSA, each sending one byte per step.
//
// The digits perceptron (64 -> --width -> 10, data/digits.csv.gz: the first
// 1400 images to train on, the other 397 to test) is first trained briefly
// with backprop (--pretrain steps of SGD). From there, four ways to
// fine-tune it for --steps steps, each step on --machines mini-batches of
// --batch images (one per machine, drawn from the seed, the step and the
// machine):
//
//   1-byte log     decentralized SPSA: each machine estimates the projected
//                  gradient on its own batch along its own z and publishes
//                  one byte (polar::byte_code::logarithmic(3.6e-4,
//                  --steps-per-nat)); every machine applies every byte;
//   1-byte linear  the same with polar::byte_code::linear(--linear-scale);
//   fp SPSA        the same estimates, applied in full precision (the bytes'
//                  cost in loss is the gap to this one);
//   backprop SGD   plain SGD on the union of the machines' batches.
//
// Under mpiexec (when built with MPI), each process is one machine and the
// bytes travel by MPI_Allgather:
//
//   mpiexec -n 4 build/release/examples/polar_decentralized
//
// otherwise the machines are simulated in this process through the loopback
// transport (--machines N). Either way it prints the training loss over the
// steps, the final loss and test accuracy of each, the bytes each machine
// sent, and whether the machines' replicas ended bit-identical.
//
//   polar_decentralized [--quick] [--machines N] [--steps N] [--every N]
//                       [--batch N] [--width N] [--pretrain N] [--lr X]
//                       [--eps X] [--sgd-lr X] [--linear-scale X]
//                       [--steps-per-nat N] [--seed N] [--csv FILE] [--data FILE]
#include <polar/polar.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(POLAR_EXAMPLE_MPI)
#include <polar/dist/mpi.hpp>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "digits.hpp"

namespace {

using examples::digits;
using examples::network;
using examples::rmatrix;

constexpr int n_train = 1400;

struct options {
  int machines = 4;
  int steps = 4000;
  int every = 500;
  int batch = 32;
  int width = 32;
  int pretrain = 40;
  double lr = 1e-2;
  double eps = 1e-3;
  double sgd_lr = 0.1;
  double linear_scale = 4.0;
  int steps_per_nat = 8;
  std::uint64_t seed = 2026;
  bool quick = false;
  std::string csv;
  std::string data = examples::default_digits_path();
};

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "polar_decentralized: %s\n", why);
  std::fprintf(why ? stderr : stdout,
               "usage: polar_decentralized [--quick] [--machines N] [--steps N] [--every N] [--batch N]\n"
               "                           [--width N] [--pretrain N] [--lr X] [--eps X] [--sgd-lr X]\n"
               "                           [--linear-scale X] [--steps-per-nat N] [--seed N] [--csv FILE]\n"
               "                           [--data FILE]\n"
               "Fine-tunes the digits perceptron with SPSA on several machines exchanging one byte each\n"
               "per step, against full-precision SPSA and backprop SGD. Under mpiexec each process is a\n"
               "machine; otherwise --machines machines are simulated in this process.\n");
  std::exit(why ? 2 : 0);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage((a + " needs a value").c_str());
      return argv[++i];
    };
    const auto number = [&](double lo, double hi) {
      const std::string v = value();
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end || !(x >= lo && x <= hi))
        usage((a + " takes a number from " + std::to_string(lo) + " to " + std::to_string(hi) + ", not " + v).c_str());
      return x;
    };
    if (a == "--help" || a == "-h") usage(nullptr);
    else if (a == "--quick") o.quick = true;
    else if (a == "--machines") o.machines = int(number(1, 1024));
    else if (a == "--steps") o.steps = int(number(1, 1e8));
    else if (a == "--every") o.every = int(number(1, 1e8));
    else if (a == "--batch") o.batch = int(number(1, n_train));
    else if (a == "--width") o.width = int(number(1, 4096));
    else if (a == "--pretrain") o.pretrain = int(number(0, 1e6));
    else if (a == "--lr") o.lr = number(0, 1e3);
    else if (a == "--eps") o.eps = number(1e-12, 1);
    else if (a == "--sgd-lr") o.sgd_lr = number(0, 1e3);
    else if (a == "--linear-scale") o.linear_scale = number(1e-12, 1e12);
    else if (a == "--steps-per-nat") o.steps_per_nat = int(number(1, 64));
    else if (a == "--seed") o.seed = std::uint64_t(number(0, 9e15));
    else if (a == "--csv") o.csv = value();
    else if (a == "--data") o.data = value();
    else usage(("unknown option " + a).c_str());
  }
  if (o.quick) {
    o.steps = 400;
    o.every = 100;
  }
  return o;
}

// The images of machine m's batch at step s: uniform over the training
// images, from a generator seeded by (seed, s, m) (raw 64-bit draws, the
// same in every process).
std::vector<int> batch_of(const options& o, std::uint32_t s, std::uint32_t m) {
  std::mt19937_64 g(o.seed ^ (std::uint64_t(s) << 20) ^ (std::uint64_t(m) << 52) ^ 0x9E3779B97F4A7C15ull);
  std::vector<int> idx(std::size_t(o.batch));
  for (auto& i : idx) i = int(g() % n_train);
  return idx;
}

struct workspace {
  rmatrix x;
  std::vector<int> y;
  std::vector<rmatrix> acts, grads;
};

double batch_loss(const network& net, const digits& d, const std::vector<int>& idx, workspace& w, bool grads) {
  w.x.resize(Eigen::Index(idx.size()), 64);
  w.y.resize(idx.size());
  for (std::size_t b = 0; b < idx.size(); ++b) {
    w.x.row(Eigen::Index(b)) = d.x.row(idx[b]);
    w.y[b] = d.labels[std::size_t(idx[b])];
  }
  return examples::loss_and_grads(net, w.x, w.y.data(), grads ? &w.grads : nullptr, w.acts);
}

struct evaluation {
  double loss, accuracy;
};

// Mean cross-entropy over the training images, accuracy over the test ones.
evaluation evaluate(const network& net, const digits& d) {
  std::vector<rmatrix> acts;
  const rmatrix train = d.x.topRows(n_train), test = d.x.bottomRows(d.x.rows() - n_train);
  const double loss = examples::loss_and_grads(net, train, d.labels.data(), nullptr, acts);
  return {loss, examples::accuracy(net, test, d.labels.data() + n_train)};
}

std::size_t parameters(const network& net) {
  std::size_t n = 0;
  for (const auto& w : net.w) n += std::size_t(w.size());
  return n;
}

polar::spsa_params<float> params_of(network& net) {
  polar::spsa_params<float> p;
  for (auto& w : net.w) p.add(polar::make_view(w));
  return p;
}

bool same_bits(const network& a, const network& b) {
  for (std::size_t l = 0; l < a.w.size(); ++l)
    if (std::memcmp(a.w[l].data(), b.w[l].data(), sizeof(float) * std::size_t(a.w[l].size())) != 0) return false;
  return true;
}

std::uint32_t checksum(const network& net) {
  std::vector<std::uint8_t> bytes;
  for (const auto& w : net.w) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(w.data());
    bytes.insert(bytes.end(), p, p + sizeof(float) * std::size_t(w.size()));
  }
  return polar::detail::crc32(bytes.data(), bytes.size());
}

// One fine-tuning run's record.
struct curve {
  std::string name;
  std::vector<double> loss;  // training loss at step 0, every, 2 every, ...
  evaluation final{};
  double seconds = 0;
  std::uint64_t bytes_per_machine = 0;  // sent by each machine over the run
  std::string identical = "-";          // whether the replicas ended bit-identical
};

polar::shared_spsa settings(const options& o, const polar::byte_code& code) {
  polar::shared_spsa c;
  c.seed = o.seed;
  c.epsilon = o.eps;
  c.lr = o.lr;
  c.code = code;
  return c;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Decentralized SPSA with every machine simulated here, through the loopback.
curve run_loopback(const options& o, const digits& d, const network& start, const polar::byte_code& code,
                   const char* name) {
  curve c{name, {evaluate(start, d).loss}};
  const auto cfg = settings(o, code);
  const auto M = std::size_t(o.machines);
  std::vector<network> nets(M, start);
  std::vector<polar::spsa_params<float>> ps;
  std::vector<polar::decentralized_spsa<polar::backend::eigen, float>> rs;
  polar::dist::loopback hub;
  rs.reserve(M);
  for (std::size_t m = 0; m < M; ++m) {
    ps.push_back(params_of(nets[m]));
    rs.emplace_back(cfg, std::uint32_t(m), 0, false);
    hub.schedule(std::uint32_t(m), 0);
  }
  polar::backend::eigen be;
  workspace w;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint32_t s = 0; s < std::uint32_t(o.steps); ++s) {
    for (std::uint32_t m = 0; m < M; ++m) {
      const auto idx = batch_of(o, s, m);
      hub.publish(s, m, rs[m].propose(be, ps[m], [&] { return batch_loss(nets[m], d, idx, w, false); }));
    }
    for (std::uint32_t m = 0; m < M; ++m) rs[m].apply(be, ps[m], hub.collect(s, m));
    if ((s + 1) % std::uint32_t(o.every) == 0) c.loss.push_back(evaluate(nets[0], d).loss);
  }
  c.seconds = seconds_since(t0);
  c.final = evaluate(nets[0], d);
  c.bytes_per_machine = rs[0].stats().proposed;
  bool same = true;
  for (std::size_t m = 1; m < M; ++m) same = same && same_bits(nets[m], nets[0]);
  c.identical = same ? "yes" : "NO";
  return c;
}

#if defined(POLAR_EXAMPLE_MPI)
// Decentralized SPSA with this process as one machine.
curve run_mpi(const options& o, const digits& d, const network& start, const polar::byte_code& code, const char* name,
              polar::dist::mpi_transport& net) {
  curve c{name, {evaluate(start, d).loss}};
  network mine = start;
  auto p = params_of(mine);
  polar::decentralized_spsa<polar::backend::eigen, float> r(settings(o, code), net.machine(), 0, false);
  polar::backend::eigen be;
  workspace w;
  const std::uint64_t sent_before = net.bytes_sent();
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint32_t s = 0; s < std::uint32_t(o.steps); ++s) {
    const auto idx = batch_of(o, s, net.machine());
    r.step(be, p, net, [&] { return batch_loss(mine, d, idx, w, false); });
    if ((s + 1) % std::uint32_t(o.every) == 0 && net.machine() == 0) c.loss.push_back(evaluate(mine, d).loss);
  }
  c.seconds = seconds_since(t0);
  c.final = evaluate(mine, d);
  c.bytes_per_machine = net.bytes_sent() - sent_before;
  // Every rank's checksum of its weights against the others'.
  const std::uint32_t mine_crc = checksum(mine);
  std::vector<std::uint32_t> all(std::size_t(net.size()));
  MPI_Allgather(&mine_crc, 1, MPI_UINT32_T, all.data(), 1, MPI_UINT32_T, MPI_COMM_WORLD);
  bool same = true;
  for (auto v : all) same = same && v == mine_crc;
  c.identical = same ? "yes" : "NO";
  return c;
}
#endif

// The same estimates as the decentralized run, applied in full precision.
curve run_fp_spsa(const options& o, const digits& d, const network& start) {
  curve c{"fp SPSA", {evaluate(start, d).loss}};
  network net = start;
  auto p = params_of(net);
  polar::backend::eigen be;
  workspace w;
  std::vector<polar::spsa::workspace<polar::backend::eigen, float>> ws(std::size_t(o.machines));
  std::vector<polar::spsa_gradient> g(std::size_t(o.machines));
  double sum_sq = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint32_t s = 0; s < std::uint32_t(o.steps); ++s) {
    for (std::uint32_t m = 0; m < std::uint32_t(o.machines); ++m) {
      const auto est = settings(o, polar::byte_code::logarithmic()).estimator(m);
      const auto idx = batch_of(o, s, m);
      g[m] = est.estimate(be, p, [&] { return batch_loss(net, d, idx, w, false); }, s, ws[m]);
      sum_sq += g[m].projected[0] * g[m].projected[0];
    }
    for (std::uint32_t m = 0; m < std::uint32_t(o.machines); ++m)
      polar::spsa_sgd_step(be, p, g[m], o.lr / o.machines);
    if ((s + 1) % std::uint32_t(o.every) == 0) c.loss.push_back(evaluate(net, d).loss);
  }
  c.seconds = seconds_since(t0);
  c.final = evaluate(net, d);
  c.bytes_per_machine = std::uint64_t(o.steps) * 8;  // a double each
  std::printf("fp SPSA: rms of the projected gradients %.3g (the linear code's scale is %.3g)\n",
              std::sqrt(sum_sq / (double(o.steps) * o.machines)), o.linear_scale);
  return c;
}

// Backprop SGD on the union of the machines' batches.
curve run_sgd(const options& o, const digits& d, const network& start) {
  curve c{"backprop SGD", {evaluate(start, d).loss}};
  network net = start;
  workspace w;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint32_t s = 0; s < std::uint32_t(o.steps); ++s) {
    std::vector<int> idx;
    for (std::uint32_t m = 0; m < std::uint32_t(o.machines); ++m) {
      const auto b = batch_of(o, s, m);
      idx.insert(idx.end(), b.begin(), b.end());
    }
    batch_loss(net, d, idx, w, true);
    for (std::size_t l = 0; l < net.w.size(); ++l) net.w[l] -= float(o.sgd_lr) * w.grads[l];
    if ((s + 1) % std::uint32_t(o.every) == 0) c.loss.push_back(evaluate(net, d).loss);
  }
  c.seconds = seconds_since(t0);
  c.final = evaluate(net, d);
  return c;
}

network pretrained(const options& o, const digits& d) {
  network net = examples::make_network(o.width, 1, o.seed);
  options p = o;
  p.machines = 1;
  p.batch = 64;
  workspace w;
  for (int s = 0; s < o.pretrain; ++s) {
    batch_loss(net, d, batch_of(p, std::uint32_t(s), 0xFFFF), w, true);
    for (std::size_t l = 0; l < net.w.size(); ++l) net.w[l] -= 0.2f * w.grads[l];
  }
  return net;
}

void report(const options& o, const std::vector<curve>& runs, bool mpi) {
  std::printf("\ntraining loss (cross-entropy over the %d training images):\n\n  %8s", n_train, "step");
  for (const auto& r : runs) std::printf("  %14s", r.name.c_str());
  std::printf("\n");
  for (std::size_t k = 0; k < runs[0].loss.size(); ++k) {
    std::printf("  %8zu", k * std::size_t(o.every));
    for (const auto& r : runs) std::printf("  %14.4f", k < r.loss.size() ? r.loss[k] : NAN);
    std::printf("\n");
  }
  std::printf("\n  %-14s %10s %10s %12s %16s %10s\n", "run", "loss", "test acc", "ms / step", "bytes / machine",
              "identical");
  for (const auto& r : runs)
    std::printf("  %-14s %10.4f %9.1f%% %12.3f %16llu %10s\n", r.name.c_str(), r.final.loss, 100 * r.final.accuracy,
                1e3 * r.seconds / o.steps, (unsigned long long)r.bytes_per_machine, r.identical.c_str());
  std::printf("\n%d machines (%s), %d steps of batches of %d each; each machine sent one byte per step: %llu bytes "
              "in all per run, %d per step\n",
              o.machines, mpi ? "MPI processes" : "simulated by the loopback", o.steps, o.batch,
              (unsigned long long)(std::uint64_t(o.steps) * std::uint64_t(o.machines)), o.machines);
  if (!o.csv.empty()) {
    FILE* f = std::fopen(o.csv.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "polar_decentralized: cannot write %s\n", o.csv.c_str());
      return;
    }
    std::fprintf(f, "step");
    for (const auto& r : runs) std::fprintf(f, ",%s", r.name.c_str());
    std::fprintf(f, "\n");
    for (std::size_t k = 0; k < runs[0].loss.size(); ++k) {
      std::fprintf(f, "%zu", k * std::size_t(o.every));
      for (const auto& r : runs) std::fprintf(f, ",%.6g", k < r.loss.size() ? r.loss[k] : NAN);
      std::fprintf(f, "\n");
    }
    std::fclose(f);
    std::printf("wrote %s\n", o.csv.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  options o = parse(argc, argv);
#if defined(POLAR_EXAMPLE_MPI)
  MPI_Init(&argc, &argv);
  int ranks = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
#else
  const int ranks = 1, rank = 0;
#endif
  int rc = 0;
  try {
    const bool mpi = ranks > 1;
    if (mpi) {
      o.machines = ranks;
#if defined(_OPENMP)
      omp_set_num_threads(1);  // several processes share the cores
#endif
    }
    const digits d = examples::load_digits(o.data);
    const network start = pretrained(o, d);
    if (rank == 0)
      std::printf("decentralized SPSA on the digits: %d machines, width %d (%zu parameters), pretrained by %d "
                  "backprop steps to loss %.4f\n",
                  o.machines, o.width, parameters(start), o.pretrain,
                  evaluate(start, d).loss);
    std::vector<curve> runs;
#if defined(POLAR_EXAMPLE_MPI)
    if (mpi) {
      polar::dist::mpi_transport net;
      runs.push_back(run_mpi(o, d, start, polar::byte_code::logarithmic(3.6e-4, o.steps_per_nat), "1-byte log", net));
      runs.push_back(run_mpi(o, d, start, polar::byte_code::linear(o.linear_scale), "1-byte linear", net));
    }
#endif
    if (!mpi) {
      runs.push_back(run_loopback(o, d, start, polar::byte_code::logarithmic(3.6e-4, o.steps_per_nat), "1-byte log"));
      runs.push_back(run_loopback(o, d, start, polar::byte_code::linear(o.linear_scale), "1-byte linear"));
    }
    if (rank == 0) {
      runs.push_back(run_fp_spsa(o, d, start));
      runs.push_back(run_sgd(o, d, start));
      report(o, runs, mpi);
      bool ok = true;
      for (const auto& r : runs) ok = ok && std::isfinite(r.final.loss) && r.identical != "NO";
      // Fine-tuning must have lowered the loss with the bytes, too.
      ok = ok && runs[0].final.loss < runs[0].loss[0] && runs[1].final.loss < runs[1].loss[0];
      std::printf(ok ? "decentralized: ok\n" : "decentralized: FAILED\n");
      rc = ok ? 0 : 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "polar_decentralized: %s\n", e.what());
    rc = 1;
#if defined(POLAR_EXAMPLE_MPI)
    if (ranks > 1) MPI_Abort(MPI_COMM_WORLD, 1);  // the other ranks may wait in a collective
#endif
  }
#if defined(POLAR_EXAMPLE_MPI)
  MPI_Finalize();
#endif
  return rc;
}
