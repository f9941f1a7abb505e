// examples/width_transfer.cpp: does the best learning rate carry over from
// a narrow network to a wide one?
//
// A perceptron with `depth` hidden layers of `width` ReLU units and no biases
// (64 -> width [-> width ...] -> 10) learns the digits (data/digits.csv.gz,
// all 1797 images) by cross-entropy, in mini-batches. Each seed gives one
// start and one batch order, the same for every optimizer and learning rate;
// every cell of the table is the geometric mean of the final losses over
// --seeds seeds.
// Every matrix is in one group of a polar::optimizer, with
//
//   AdamW     betas 0.9/0.999, weight decay 0.1, linear warmup over the first
//             10% of the steps (the usual recipe);
//   Muon      polar::muon_direction<> as it comes (Nesterov 0.95, five
//             Newton-Schulz steps, scale sqrt(max(1, rows/cols)));
//   MD-AdamW  polar::md_adamw: AdamW on D, Adam on the gains;
//   MD-Muon   polar::md_muon: Muon on D (scale sqrt(max(rows/cols,
//             cols/rows))), Adam on the gains;
//
// the last three with neither weight decay nor warmup. Every run's learning
// rate follows a cosine from its peak to 0. The peak is swept over powers of
// two; for MD it is D's learning rate, the gains' is --gain-lr for all runs.
// The program prints the final training loss (the mean cross-entropy over
// all images after the last step) for every optimizer, width and learning
// rate, and for each optimizer where the best learning rate lies at each
// width and how far it moves (in factors of two) from the narrowest to the
// widest network. It writes the table as CSV and a plot as SVG.
//
//   polar_width_transfer [--quick] [--depth N] [--steps N] [--batch N]
//                        [--widths 64,128,...] [--gain-lr X] [--seeds N]
//                        [--seed N] [--csv FILE] [--svg FILE] [--data FILE]
//
// The runs are independent and spread over the OpenMP threads
// (OMP_NUM_THREADS), each run single-threaded, so the results do not depend
// on the number of threads.
#include <polar/polar.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "digits.hpp"

namespace {

using examples::digits;
using examples::loss_and_grads;
using examples::make_network;
using examples::network;
using examples::rmatrix;

constexpr double pi = 3.14159265358979323846;
constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();

struct options {
  std::vector<int> widths{64, 128, 256, 512, 1024};
  int depth = 1;
  int steps = 100;
  int batch = 128;
  int seeds = 3;
  double gain_lr = 1e-2;
  std::uint64_t seed = 2026;
  bool quick = false;
  std::string data = examples::default_digits_path();
  std::string csv = "width_transfer.csv";
  std::string svg = "width_transfer.svg";
};

// The four optimizers and their grids of peak learning rates, 2^lo .. 2^hi.
struct optimizer_spec {
  const char* name;
  int lo, hi;
};
constexpr optimizer_spec optimizers[] = {
    {"AdamW", -12, -1},
    {"Muon", -9, 2},
    {"MD-AdamW", -12, -1},
    {"MD-Muon", -9, 2},
};
constexpr int n_optimizers = 4;

// ---- one run -------------------------------------------------------------

// The learning-rate factor at step t of n: a cosine from 1 to 0, after a
// linear warmup over the first `warmup` steps.
double schedule(int t, int n, int warmup) {
  const double cosine = 0.5 * (1 + std::cos(pi * t / n));
  return t < warmup ? cosine * double(t + 1) / warmup : cosine;
}

// Trains a fresh network with opt (its learning rates at their peaks; the
// schedule scales all of them) and returns the final training loss, NaN
// where the run diverged.
template <class Opt>
double train(const digits& data, const options& o, std::uint64_t seed, int width, const Opt& opt, int warmup) {
  polar::backend::eigen be;
  network net = make_network(width, o.depth, seed);
  polar::optimizer<polar::backend::eigen, float> model(be);
  const int steps = o.steps;
  model.add_group("layers", opt).lr_schedule = polar::schedule(
      [steps, warmup](long t) { return schedule(int(t), steps, warmup); }, "cosine with a warmup ramp");
  for (std::size_t l = 0; l < net.w.size(); ++l) model.add("w" + std::to_string(l), polar::make_view(net.w[l]));
  std::vector<polar::param_view<const float>> grad_views;

  const Eigen::Index n = data.x.rows();
  std::vector<int> order(std::size_t(n), 0);
  for (Eigen::Index i = 0; i < n; ++i) order[std::size_t(i)] = int(i);
  std::mt19937_64 shuffle(seed);
  std::size_t next = order.size();  // reshuffle at the first step
  rmatrix xb(o.batch, 64);
  std::vector<int> yb(std::size_t(o.batch));
  std::vector<rmatrix> grads, acts;
  try {
    for (int t = 0; t < o.steps; ++t) {
      for (int b = 0; b < o.batch; ++b) {
        if (next == order.size()) {
          std::shuffle(order.begin(), order.end(), shuffle);
          next = 0;
        }
        const int k = order[next++];
        xb.row(b) = data.x.row(k);
        yb[std::size_t(b)] = data.labels[std::size_t(k)];
      }
      const double loss = loss_and_grads(net, xb, yb.data(), &grads, acts);
      if (!std::isfinite(loss) || loss > 1e3) return nan_value;
      if (grad_views.empty())  // the gradients' buffers exist from the first backward pass on
        for (const auto& g : grads) grad_views.emplace_back(polar::make_view(g));
      model.step(grad_views);
    }
  } catch (const polar::error&) {  // a diverged run: non-finite gradients, a zero row of D
    return nan_value;
  }
  const double final_loss = loss_and_grads(net, data.x, data.labels.data(), nullptr, acts);
  return std::isfinite(final_loss) ? final_loss : nan_value;
}

double run(const digits& data, const options& o, std::uint64_t seed, int which, int width, double lr) {
  switch (which) {
    case 0: {
      polar::adamw_direction opt;
      opt.weight_decay = 0.1;
      opt.lr = lr;
      return train(data, o, seed, width, opt, std::max(1, o.steps / 10));
    }
    case 1: {
      polar::muon_direction<> opt;
      opt.lr = lr;
      return train(data, o, seed, width, opt, 0);
    }
    case 2: {
      polar::md_adamw opt;
      opt.direction.lr = lr;
      opt.gain_direction.lr = o.gain_lr;
      return train(data, o, seed, width, opt, 0);
    }
    default: {
      polar::md_muon opt;
      opt.direction.lr = lr;
      opt.gain_direction.lr = o.gain_lr;
      return train(data, o, seed, width, opt, 0);
    }
  }
}

// ---- the report ----------------------------------------------------------

struct results {
  std::vector<int> widths;
  // loss[opt][width][k], k over the optimizer's grid
  std::vector<std::vector<std::vector<double>>> loss;
  int lo(int opt) const { return optimizers[opt].lo; }
  int grid(int opt) const { return optimizers[opt].hi - optimizers[opt].lo + 1; }
  // The grid index of the lowest loss; -1 if every run diverged.
  int best(int opt, std::size_t wi) const {
    int k_best = -1;
    for (int k = 0; k < grid(opt); ++k) {
      const double v = loss[std::size_t(opt)][wi][std::size_t(k)];
      if (std::isfinite(v) && (k_best < 0 || v < loss[std::size_t(opt)][wi][std::size_t(k_best)])) k_best = k;
    }
    return k_best;
  }
};

void print_table(const results& r) {
  for (int o = 0; o < n_optimizers; ++o) {
    std::printf("\n%s: final training loss (rows: width; columns: log2 of the peak learning rate)\n",
                optimizers[o].name);
    std::printf("%6s", "width");
    for (int k = 0; k < r.grid(o); ++k) std::printf(" %6d", r.lo(o) + k);
    std::printf("   best\n");
    for (std::size_t wi = 0; wi < r.widths.size(); ++wi) {
      std::printf("%6d", r.widths[wi]);
      const int b = r.best(o, wi);
      for (int k = 0; k < r.grid(o); ++k) {
        const double v = r.loss[std::size_t(o)][wi][std::size_t(k)];
        if (std::isfinite(v))
          std::printf(" %6.3g", v);
        else
          std::printf(" %6s", "div");
      }
      if (b >= 0)
        std::printf("   2^%d%s\n", r.lo(o) + b, b == 0 || b == r.grid(o) - 1 ? " (grid edge)" : "");
      else
        std::printf("   none\n");
    }
  }
}

// The best learning rate's log2, between grid points: the vertex of the
// parabola through the log-losses at the best grid point and its two
// neighbours (within half a grid step of it); the grid point itself at the
// grid's edge or next to a diverged run. NaN if every run diverged.
double best_log2(const results& r, int opt, std::size_t wi) {
  const int b = r.best(opt, wi);
  if (b < 0) return nan_value;
  const auto& l = r.loss[std::size_t(opt)][wi];
  if (b == 0 || b == r.grid(opt) - 1) return r.lo(opt) + b;
  const double y0 = std::log(l[std::size_t(b - 1)]), y1 = std::log(l[std::size_t(b)]),
               y2 = std::log(l[std::size_t(b + 1)]);
  const double curve = y0 - 2 * y1 + y2;
  if (!std::isfinite(curve) || !(curve > 0)) return r.lo(opt) + b;
  return r.lo(opt) + b + std::clamp(0.5 * (y0 - y2) / curve, -0.5, 0.5);
}

// How far each optimizer's best learning rate moves across widths, in
// factors of two: from the narrowest to the widest, and the whole range.
void print_shift(const results& r) {
  std::printf(
      "\nbest learning rate across widths: log2, interpolated between grid points\n"
      "(shift = widest - narrowest; spread = largest - smallest; in factors of two)\n");
  std::printf("%-9s", "optimizer");
  for (int w : r.widths) std::printf(" %6d", w);
  std::printf("  %6s  %6s\n", "shift", "spread");
  for (int o = 0; o < n_optimizers; ++o) {
    std::printf("%-9s", optimizers[o].name);
    double mn = 1e9, mx = -1e9, first = 0, last = 0;
    bool all = true;
    for (std::size_t wi = 0; wi < r.widths.size(); ++wi) {
      const double e = best_log2(r, o, wi);
      if (!std::isfinite(e)) {
        all = false;
        std::printf(" %6s", "-");
        continue;
      }
      std::printf(" %6.2f", e);
      mn = std::min(mn, e);
      mx = std::max(mx, e);
      if (wi == 0) first = e;
      last = e;
    }
    if (all)
      std::printf("  %+6.2f  %6.2f\n", last - first, mx - mn);
    else
      std::printf("  %6s  %6s\n", "-", "-");
  }
}

void write_csv(const results& r, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  std::fprintf(f, "optimizer,width,log2_lr,lr,final_loss\n");
  for (int o = 0; o < n_optimizers; ++o)
    for (std::size_t wi = 0; wi < r.widths.size(); ++wi)
      for (int k = 0; k < r.grid(o); ++k) {
        const double v = r.loss[std::size_t(o)][wi][std::size_t(k)];
        std::fprintf(f, "%s,%d,%d,%.9g,", optimizers[o].name, r.widths[wi], r.lo(o) + k, std::ldexp(1.0, r.lo(o) + k));
        if (std::isfinite(v))
          std::fprintf(f, "%.6f\n", v);
        else
          std::fprintf(f, "nan\n");
      }
  std::fclose(f);
}

// Four panels, one per optimizer: final loss (log scale) against log2 of the
// learning rate, one line per width, the best point of each marked.
void write_svg(const results& r, const std::string& path) {
  const int pw = 420, ph = 300, ml = 55, mr = 15, mt = 30, mb = 40;
  const int width = 2 * pw, height = 2 * ph + 30;
  double ymin = 1e300, ymax = 0;
  for (const auto& a : r.loss)
    for (const auto& b : a)
      for (double v : b)
        if (std::isfinite(v)) ymin = std::min(ymin, v), ymax = std::max(ymax, v);
  if (!(ymin < ymax)) ymin = 1e-3, ymax = 10;
  const double ly0 = std::floor(std::log10(std::max(ymin, 1e-6))), ly1 = std::ceil(std::log10(ymax));
  static const char* colors[] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"};
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (int o = 0; o < n_optimizers; ++o) {
    const int x0 = (o % 2) * pw, y0 = (o / 2) * ph;
    const double ax0 = x0 + ml, ax1 = x0 + pw - mr, ay0 = y0 + mt, ay1 = y0 + ph - mb;
    const auto px = [&](double e) { return ax0 + (e - r.lo(o)) / std::max(1, r.grid(o) - 1) * (ax1 - ax0); };
    const auto py = [&](double v) { return ay1 - (std::log10(v) - ly0) / (ly1 - ly0) * (ay1 - ay0); };
    s << "<text x=\"" << (ax0 + ax1) / 2 << "\" y=\"" << y0 + 18 << "\" text-anchor=\"middle\" font-size=\"13\">"
      << optimizers[o].name << "</text>\n";
    s << "<rect x=\"" << ax0 << "\" y=\"" << ay0 << "\" width=\"" << ax1 - ax0 << "\" height=\"" << ay1 - ay0
      << "\" fill=\"none\" stroke=\"#888\"/>\n";
    for (double d = ly0; d <= ly1 + 1e-9; d += 1) {
      s << "<line x1=\"" << ax0 << "\" x2=\"" << ax1 << "\" y1=\"" << py(std::pow(10, d)) << "\" y2=\""
        << py(std::pow(10, d)) << "\" stroke=\"#ddd\"/>\n";
      s << "<text x=\"" << ax0 - 4 << "\" y=\"" << py(std::pow(10, d)) + 4 << "\" text-anchor=\"end\">1e" << int(d)
        << "</text>\n";
    }
    for (int k = 0; k < r.grid(o); k += 2)
      s << "<text x=\"" << px(r.lo(o) + k) << "\" y=\"" << ay1 + 14 << "\" text-anchor=\"middle\">" << r.lo(o) + k
        << "</text>\n";
    s << "<text x=\"" << (ax0 + ax1) / 2 << "\" y=\"" << ay1 + 30
      << "\" text-anchor=\"middle\">log2 peak learning rate</text>\n";
    for (std::size_t wi = 0; wi < r.widths.size(); ++wi) {
      const char* c = colors[wi % 7];
      s << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.5\" points=\"";
      for (int k = 0; k < r.grid(o); ++k) {
        const double v = r.loss[std::size_t(o)][wi][std::size_t(k)];
        if (std::isfinite(v)) s << px(r.lo(o) + k) << "," << py(v) << " ";
      }
      s << "\"/>\n";
      const int b = r.best(o, wi);
      if (b >= 0)
        s << "<circle cx=\"" << px(r.lo(o) + b) << "\" cy=\"" << py(r.loss[std::size_t(o)][wi][std::size_t(b)])
          << "\" r=\"4\" fill=\"" << c << "\"/>\n";
    }
  }
  for (std::size_t wi = 0; wi < r.widths.size(); ++wi) {
    const double lx = 60 + double(wi) * 110, ly = 2 * ph + 15;
    s << "<line x1=\"" << lx << "\" x2=\"" << lx + 20 << "\" y1=\"" << ly << "\" y2=\"" << ly << "\" stroke=\""
      << colors[wi % 7] << "\" stroke-width=\"2\"/><text x=\"" << lx + 25 << "\" y=\"" << ly + 4 << "\">width "
      << r.widths[wi] << "</text>\n";
  }
  s << "</svg>\n";
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  std::fputs(s.str().c_str(), f);
  std::fclose(f);
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::atoi(item.c_str()));
  return out;
}

int usage(const char* why) {
  if (why) std::fprintf(stderr, "polar_width_transfer: %s (try --help)\n", why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--quick") {
      o.quick = true;
      o.widths = {32, 64};
      o.steps = 60;
      o.seeds = 1;
    } else if (a == "--depth" && has_value) {
      o.depth = std::atoi(argv[++i]);
    } else if (a == "--steps" && has_value) {
      o.steps = std::atoi(argv[++i]);
    } else if (a == "--batch" && has_value) {
      o.batch = std::atoi(argv[++i]);
    } else if (a == "--widths" && has_value) {
      o.widths = parse_list(argv[++i]);
    } else if (a == "--gain-lr" && has_value) {
      o.gain_lr = std::atof(argv[++i]);
    } else if (a == "--seeds" && has_value) {
      o.seeds = std::atoi(argv[++i]);
    } else if (a == "--seed" && has_value) {
      o.seed = std::uint64_t(std::atoll(argv[++i]));
    } else if (a == "--csv" && has_value) {
      o.csv = argv[++i];
    } else if (a == "--svg" && has_value) {
      o.svg = argv[++i];
    } else if (a == "--data" && has_value) {
      o.data = argv[++i];
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: polar_width_transfer [options]\n"
          "  --quick          widths 32,64, 60 steps: a check that it runs (the test suite's)\n"
          "  --depth N        hidden layers (default 1)\n"
          "  --steps N        optimizer steps per run (default 100)\n"
          "  --batch N        images per step (default 128)\n"
          "  --widths A,B,..  hidden widths (default 64,128,256,512,1024)\n"
          "  --gain-lr X      the MD gains' peak learning rate (default 0.01)\n"
          "  --seeds N        runs per cell, each from its own start and batch order;\n"
          "                   the table holds their losses' geometric mean (default 3)\n"
          "  --seed N         the first seed (default 2026)\n"
          "  --csv FILE       the table (default width_transfer.csv)\n"
          "  --svg FILE       the plot (default width_transfer.svg)\n"
          "  --data FILE      the digits (default %s)\n",
          examples::default_digits_path().c_str());
      return 0;
    } else {
      return usage(("unknown option or missing value: " + a).c_str());
    }
  }
  if (o.depth < 1 || o.depth > 8) return usage("--depth must be 1..8");
  if (o.steps < 1 || o.batch < 1 || o.seeds < 1) return usage("--steps, --batch and --seeds must be positive");
  if (o.widths.empty()) return usage("--widths is empty");
  for (int w : o.widths)
    if (w < 1 || w > 16384) return usage("each width must be 1..16384");
  if (!(o.gain_lr >= 0)) return usage("--gain-lr must be >= 0");

  try {
    const digits data = examples::load_digits(o.data);
    results r;
    r.widths = o.widths;
    struct job {
      int opt;
      std::size_t wi;
      int k;
    };
    std::vector<job> jobs;
    r.loss.resize(n_optimizers);
    for (int op = 0; op < n_optimizers; ++op) {
      r.loss[std::size_t(op)].assign(o.widths.size(), std::vector<double>(std::size_t(r.grid(op)), nan_value));
      for (std::size_t wi = 0; wi < o.widths.size(); ++wi)
        for (int k = 0; k < r.grid(op); ++k) jobs.push_back({op, wi, k});
    }
    // The widest (slowest) runs first, for the threads' balance.
    std::stable_sort(jobs.begin(), jobs.end(),
                     [&](const job& a, const job& b) { return o.widths[a.wi] > o.widths[b.wi]; });
    int threads = 1;
#if defined(_OPENMP)
    threads = omp_get_max_threads();
#endif
    std::printf("width transfer: %zu images, depth %d, %d steps of %d, %d seed(s), widths", std::size_t(data.x.rows()),
                o.depth, o.steps, o.batch, o.seeds);
    for (int w : o.widths) std::printf(" %d", w);
    std::printf("; %zu runs on %d thread(s)\n", jobs.size() * std::size_t(o.seeds), threads);
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    const long n_jobs = long(jobs.size());
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (long j = 0; j < n_jobs; ++j) {
      const job& jb = jobs[std::size_t(j)];
      // The geometric mean over the seeds: the losses span decades.
      double log_sum = 0;
      for (int k = 0; k < o.seeds; ++k)
        log_sum += std::log(run(data, o, o.seed + std::uint64_t(k), jb.opt, o.widths[jb.wi],
                                std::ldexp(1.0, r.lo(jb.opt) + jb.k)));
      r.loss[std::size_t(jb.opt)][jb.wi][std::size_t(jb.k)] = std::exp(log_sum / o.seeds);
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    print_table(r);
    print_shift(r);
    write_csv(r, o.csv);
    write_svg(r, o.svg);
    std::printf("\n%.1f s; table in %s, plot in %s\n", elapsed, o.csv.c_str(), o.svg.c_str());

    // Every optimizer must have trained at every width: its best run ends
    // well below the loss of a uniform guess, log 10.
    bool ok = true;
    for (int op = 0; op < n_optimizers; ++op)
      for (std::size_t wi = 0; wi < o.widths.size(); ++wi) {
        const int b = r.best(op, wi);
        if (b < 0 || !(r.loss[std::size_t(op)][wi][std::size_t(b)] < 0.5 * std::log(10.0))) {
          std::printf("%s did not train at width %d\n", optimizers[op].name, o.widths[wi]);
          ok = false;
        }
      }
    std::printf("width_transfer: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "polar_width_transfer: %s\n", e.what());
    return 1;
  }
}
