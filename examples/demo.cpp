// examples/demo.cpp: what the README's demo command runs.
//
// Trains one perceptron on the digits (data/digits.csv.gz) with each of
// polar's optimizers, from the same start and through the same batches, and
// compares them: final training loss, test accuracy, steps to a target
// loss, time per step, and the memory the optimizer's state holds. It shows
// a progress bar per run, prints the table, and writes the loss curves as
// an SVG plot and the raw numbers as CSV.
//
// The network: 64 pixels -> width -> width -> 10, ReLU, no biases (the
// width is --width). 1500 images train it, the other 297 test it (a fixed
// split). Every run takes --steps steps of --batch images, its learning
// rate on a cosine from its peak to 0. Each optimizer runs with the
// settings its authors recommend (see `methods` below and docs/demo.md):
// the hidden layers get the optimizer under test; the output layer gets
// the same one where the method is meant for every layer (AdamW, MD-AdamW,
// SPSA) and AdamW otherwise, as Muon's authors recommend for the head.
//
//   polar_demo [--optimizers LIST] [--steps N] [--batch N] [--width N]
//              [--seed N] [--out DIR] [--target X] [--lr-scale X]
//              [--data FILE] [--quick] [--list] [--help]
#include <polar/polar.hpp>

#include "digits.hpp"
#include "heap_count.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <iomanip>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using examples::digits;
using examples::loss_and_grads;
using examples::network;
using examples::rmatrix;
using examples::split;
using examples::split_digits;
using eigen = polar::backend::eigen;


// ---- the optimizers ---------------------------------------------------------

// The model's optimizer: one group per policy, the layers added as w0, w1, ...
using model_optimizer = polar::optimizer<eigen, float>;

// The head's optimizer where the method is for the hidden layers only:
// AdamW (betas 0.9/0.999, weight decay 0.01) at 3e-3.
polar::adamw_direction head_adamw(double scale) {
  polar::adamw_direction a;
  a.lr = 3e-3 * scale;
  return a;
}

polar::muon_direction<> muon(const polar::ns_schedule& schedule, double scale) {
  polar::muon_direction<> m;  // Nesterov 0.95, scale sqrt(max(1, rows/cols))
  m.lr = 0.02 * scale;
  m.orthogonalizer.schedule = schedule;
  return m;
}

// A method: its name, what the table says of its settings, and how it
// prepares the network's layers (it may first move the start onto its set).
struct method {
  const char* key;     // for --optimizers
  const char* name;    // for the table
  const char* recipe;  // the settings, for --list and the CSV
  bool spsa;           // no backward pass: the SPSA loop below
  std::function<void(eigen&, network&, double, model_optimizer&)> make;  // adds the groups
};

// The hidden layers with opt, the head (the last layer) with AdamW.
template <class Opt>
void hidden_and_head(network& net, const Opt& opt, double scale, model_optimizer& o) {
  o.add_group("head", head_adamw(scale), polar::rule::name("w" + std::to_string(net.w.size() - 1)));
  o.add_group("hidden", opt);
}

template <class Opt>
void every_layer(const Opt& opt, model_optimizer& o) {
  o.add_group("layers", opt);
}

// SPSA's settings (MeZO's recipe: two-sided, one normal direction, eps 1e-3).
constexpr double spsa_lr = 5e-3, spsa_eps = 1e-3;

const std::vector<method>& methods() {
  static const std::vector<method> all = {
      {"adamw", "AdamW", "AdamW lr 3e-3, betas 0.9/0.999, wd 0.01, every layer", false,
       [](eigen&, network&, double s, model_optimizer& o) { every_layer(head_adamw(s), o); }},
      {"muon", "Muon (Jordan)", "Muon lr 0.02, Nesterov 0.95, jordan5 quintic; AdamW head", false,
       [](eigen&, network& net, double s, model_optimizer& o) {
         hidden_and_head(net, muon(polar::schedules::jordan5, s), s, o);
       }},
      {"muon-pe", "Muon (Polar Express)", "Muon lr 0.02, Nesterov 0.95, polar_express5; AdamW head", false,
       [](eigen&, network& net, double s, model_optimizer& o) {
         hidden_and_head(net, muon(polar::schedules::polar_express5, s), s, o);
       }},
      {"md-adamw", "MD-AdamW", "AdamW on D lr 3e-3, Adam on gains lr 1e-2, no wd, every layer", false,
       [](eigen&, network&, double s, model_optimizer& opt) {
         polar::md_adamw o;
         o.direction.lr = 3e-3 * s;
         o.gain_direction.lr = 1e-2 * s;
         every_layer(o, opt);
       }},
      {"md-muon", "MD-Muon", "Muon on D lr 0.02, Adam on gains lr 1e-2; AdamW head", false,
       [](eigen&, network& net, double s, model_optimizer& opt) {
         polar::md_muon o;
         o.direction.lr = 0.02 * s;
         o.gain_direction.lr = 1e-2 * s;
         hidden_and_head(net, o, s, opt);
       }},
      {"manifold-muon", "Manifold Muon", "Stiefel hidden layers, eta 0.05, Newton-Schulz (turbo4) msign, 5 warm dual steps; AdamW head", false,
       [](eigen& be, network& net, double s, model_optimizer& opt) {
         polar::manifold_muon<polar::newton_schulz> o;  // the fast form (docs/geometry.md)
         o.orthogonalizer.schedule = polar::schedules::turbo4;
         o.lr = 0.05 * s;
         o.max_dual_steps = 5;  // these 128 x 64 layers converge slowly: 20 to 80 iterations to 1e-3
         o.tolerance = 1e-3;
         auto geometry = o.geometry();
         decltype(geometry)::workspace<eigen, float> ws;
         for (std::size_t l = 0; l + 1 < net.w.size(); ++l) geometry.project(be, polar::make_view(net.w[l]), ws);
         hidden_and_head(net, o, s, opt);
       }},
      {"radam-sphere", "Riemannian Adam (rows)", "Adam lr 3e-3 on the row sphere, radius sqrt(2); AdamW head", false,
       [](eigen& be, network& net, double s, model_optimizer& opt) {
         polar::riemannian_adam<polar::hypersphere> o;
         o.direction.lr = 3e-3 * s;
         o.geometry.scope = polar::sphere_scope::rows;
         o.geometry.radius = std::sqrt(2.0);  // He's initialization's row norm
         polar::hypersphere::workspace<eigen, float> ws;
         for (std::size_t l = 0; l + 1 < net.w.size(); ++l) o.geometry.project(be, polar::make_view(net.w[l]), ws);
         hidden_and_head(net, o, s, opt);
       }},
      {"spsa", "SPSA-SGD", "two-sided, 1 normal direction, eps 1e-3, lr 5e-3; no backward pass", true,
       [](eigen&, network&, double, model_optimizer&) {}},
  };
  return all;
}

// ---- options ------------------------------------------------------------------

struct options {
  std::vector<std::string> optimizers;  // keys; empty: all
  int steps = 1000;
  int batch = 64;
  int width = 128;
  std::uint64_t seed = 2026;
  double target = 0.01;
  double lr_scale = 1;
  std::string out = "polar-demo";
  std::string data = examples::default_digits_path();
  bool quick = false;
};

void print_help() {
  std::printf(
      "usage: polar_demo [options]\n"
      "\n"
      "Trains a perceptron (64 -> width -> width -> 10) on the digits with each of\n"
      "polar's optimizers from the same start, then prints a table (final training\n"
      "loss, test accuracy, steps to the target loss, time per step, optimizer\n"
      "state) and writes the loss curves to DIR/curves.svg and DIR/curves.csv and\n"
      "the table to DIR/summary.csv.\n"
      "\n"
      "  --optimizers LIST  comma-separated keys, or 'all' (default); see --list\n"
      "  --steps N          optimizer steps per run, 1..1000000 (default 1000)\n"
      "  --batch N          images per step, 1..1500 (default 64)\n"
      "  --width N          hidden width, 8..4096 (default 128)\n"
      "  --seed N           the start and the batch order (default 2026)\n"
      "  --target X         the training loss 'steps to target' counts to (default 0.01)\n"
      "  --lr-scale X       multiplies every peak learning rate (default 1)\n"
      "  --out DIR          output folder, created if missing (default polar-demo)\n"
      "  --data FILE        the digits data set (default %s)\n"
      "  --quick            200 steps of width 64: a check that everything runs\n"
      "  --list             the optimizers and their settings, then exit\n"
      "  --help             this text\n",
      examples::default_digits_path().c_str());
}

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double parse_number(const std::string& opt, const char* text, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !std::isfinite(v))
    throw usage_error(opt + " needs a number, got '" + text + "'");
  if (v < lo || v > hi) {
    std::ostringstream s;
    s << opt << " must be in [" << lo << ", " << hi << "], got " << text;
    throw usage_error(s.str());
  }
  return v;
}

long parse_integer(const std::string& opt, const char* text, long lo, long hi) {
  const double v = parse_number(opt, text, double(lo), double(hi));
  if (v != std::floor(v)) throw usage_error(opt + " needs a whole number, got '" + text + "'");
  return long(v);
}

options parse(int argc, char** argv, bool& exit_now) {
  options o;
  exit_now = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      print_help();
      exit_now = true;
      return o;
    } else if (a == "--list") {
      for (const method& m : methods()) std::printf("  %-14s %-24s %s\n", m.key, m.name, m.recipe);
      exit_now = true;
      return o;
    } else if (a == "--optimizers") {
      std::string list = value();
      o.optimizers.clear();
      if (list == "all") continue;
      std::stringstream in(list);
      std::string key;
      while (std::getline(in, key, ',')) {
        const bool known = std::any_of(methods().begin(), methods().end(), [&](const method& m) { return key == m.key; });
        if (!known) throw usage_error("unknown optimizer '" + key + "' in --optimizers; --list names them");
        if (std::find(o.optimizers.begin(), o.optimizers.end(), key) == o.optimizers.end()) o.optimizers.push_back(key);
      }
      if (o.optimizers.empty()) throw usage_error("--optimizers is empty");
    } else if (a == "--steps") {
      o.steps = int(parse_integer(a, value(), 1, 1000000));
    } else if (a == "--batch") {
      o.batch = int(parse_integer(a, value(), 1, 1500));
    } else if (a == "--width") {
      o.width = int(parse_integer(a, value(), 8, 4096));
    } else if (a == "--seed") {
      o.seed = std::uint64_t(parse_integer(a, value(), 0, 1L << 52));
    } else if (a == "--target") {
      o.target = parse_number(a, value(), 1e-6, 10);
    } else if (a == "--lr-scale") {
      o.lr_scale = parse_number(a, value(), 1e-6, 1e6);
    } else if (a == "--out") {
      o.out = value();
    } else if (a == "--data") {
      o.data = value();
    } else if (a == "--quick") {
      o.quick = true;
      o.steps = 200;
      o.width = 64;
    } else {
      throw usage_error("unknown option '" + a + "'");
    }
  }
  return o;
}

// ---- the data ---------------------------------------------------------------



// ---- progress ---------------------------------------------------------------

class progress {
 public:
  progress(const char* name, int steps) : name_(name), steps_(steps), tty_(isatty(fileno(stdout)) != 0) {
    if (tty_) draw(0, std::numeric_limits<double>::quiet_NaN());
  }
  // After step `done` of the run, with the training loss there.
  void update(int done, double loss) {
    if (tty_) {
      draw(done, loss);
    } else {  // plain lines: a quarter of the run each
      const int quarter = 4 * done / steps_;
      if (quarter > printed_) {
        printed_ = quarter;
        std::printf("  %-24s step %6d/%d  loss %.4f\n", name_, done, steps_, loss);
        std::fflush(stdout);
      }
    }
  }
  void finish(const std::string& summary) {
    if (tty_) std::printf("\r\033[K");
    std::printf("  %-24s %s\n", name_, summary.c_str());
    std::fflush(stdout);
  }

 private:
  void draw(int done, double loss) {
    constexpr int cells = 30;
    const int full = int(std::lround(double(cells) * done / steps_));
    std::string bar(std::size_t(full), '#');
    bar.append(std::size_t(cells - full), '.');
    std::printf("\r  %-24s [%s] %3d%%", name_, bar.c_str(), int(100.0 * done / steps_));
    if (std::isfinite(loss)) std::printf("  loss %.4f", loss);
    std::fflush(stdout);
  }
  const char* name_;
  int steps_;
  bool tty_;
  int printed_ = 0;
};

// ---- one run ------------------------------------------------------------------

struct result {
  const method* m = nullptr;
  std::vector<std::pair<int, double>> curve;  // (steps taken, training loss)
  double final_loss = 0, test_accuracy = 0;
  int steps_to_target = -1;  // -1: not reached
  double ms_per_step = 0;    // forward, backward (or the two loss evaluations) and the step
  double ms_optimizer = 0;   // the optimizer's share
  long long state_bytes = 0;    // heap the optimizer held after its first step, less its scratch
  long long scratch_bytes = 0;  // the step buffers all of its tensors share
  double state_ratio = 0;       // the method's group: its state over the parameters it steps
  bool diverged = false;
  std::string error;
};

std::string loss_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, v < 0.01 ? "%.2e" : "%.4f", v);
  return text;
}

result train(const method& m, const options& o, const split& data) {
  result r;
  r.m = &m;
  eigen be;
  network net = examples::make_network(o.width, 2, o.seed);
  const int n_train = int(data.train_x.rows());
  std::vector<int> order(static_cast<std::size_t>(n_train));
  for (int i = 0; i < n_train; ++i) order[std::size_t(i)] = i;
  std::mt19937_64 shuffle(o.seed);
  std::size_t next = order.size();
  rmatrix xb(o.batch, 64);
  std::vector<int> yb(std::size_t(o.batch));
  std::vector<rmatrix> grads, acts;
  const auto next_batch = [&] {
    for (int b = 0; b < o.batch; ++b) {
      if (next == order.size()) {
        for (std::size_t i = order.size(); i-- > 1;) std::swap(order[i], order[std::size_t(shuffle() % (i + 1))]);
        next = 0;
      }
      const int k = order[next++];
      xb.row(b) = data.train_x.row(k);
      yb[std::size_t(b)] = data.train_y[std::size_t(k)];
    }
  };
  const auto train_loss = [&] { return loss_and_grads(net, data.train_x, data.train_y.data(), nullptr, acts); };
  // Every buffer of the training loop exists before the optimizer's state,
  // so what the heap gains from here on is the optimizer's.
  next_batch();
  loss_and_grads(net, xb, yb.data(), &grads, acts);
  const long long heap_before = heap_count::live();

  polar::spsa_params<float> params;
  polar::spsa est;
  polar::spsa::workspace<eigen, float> ws;
  model_optimizer opt(be);
  const auto spsa_schedule = polar::schedule::cosine(o.steps);
  std::vector<polar::param_view<const float>> grad_views;
  if (m.spsa) {
    for (auto& w : net.w) params.add(polar::make_view(w));
    est.epsilon = spsa_eps;
    est.seed = o.seed;
  } else {
    m.make(be, net, o.lr_scale, opt);
    // Every learning rate follows one cosine from its peak to 0.
    for (polar::index k = 0; k < opt.groups(); ++k) opt.group_at(k).lr_schedule = polar::schedule::cosine(o.steps);
    for (std::size_t l = 0; l < net.w.size(); ++l) {
      opt.add("w" + std::to_string(l), polar::make_view(net.w[l]));
      grad_views.emplace_back(polar::make_view(static_cast<const rmatrix&>(grads[l])));
    }
  }

  const int eval_every = std::max(1, o.steps / 60);
  progress bar(m.name, o.steps);
  r.curve.emplace_back(0, train_loss());
  double step_seconds = 0, optimizer_seconds = 0;
  using clock = std::chrono::steady_clock;
  try {
    for (int t = 0; t < o.steps; ++t) {
      next_batch();
      const double f = spsa_schedule(t);
      const auto t0 = clock::now();
      auto t1 = t0;
      if (m.spsa) {
        const auto g = est.estimate(be, params, [&] { return loss_and_grads(net, xb, yb.data(), nullptr, acts); },
                                    std::uint32_t(t), ws);
        t1 = clock::now();
        polar::spsa_sgd_step(be, params, g, spsa_lr * o.lr_scale * f);
      } else {
        const double loss = loss_and_grads(net, xb, yb.data(), &grads, acts);
        if (!std::isfinite(loss)) throw std::runtime_error("the batch loss is not finite");
        t1 = clock::now();
        opt.step(grad_views);
      }
      const auto t2 = clock::now();
      step_seconds += std::chrono::duration<double>(t2 - t0).count();
      optimizer_seconds += std::chrono::duration<double>(t2 - t1).count();
      if (t == 0) {
        r.scratch_bytes = (long long)(opt.scratch_bytes());
        // The group of the method under test ("hidden", or "layers" where it
        // steps every layer): what its state holds per byte it steps.
        for (polar::index k = 0; k < opt.groups(); ++k) {
          auto& g = opt.group_at(k);
          if (g.name() == "head") continue;
          double param_bytes = 0;
          for (polar::index i : g.members()) param_bytes += double(sizeof(float)) * double(net.w[std::size_t(i)].size());
          r.state_ratio = double(g.state_bytes()) / param_bytes;
        }
        r.state_bytes = heap_count::live() - heap_before - r.scratch_bytes;
      }
      if ((t + 1) % eval_every == 0 || t + 1 == o.steps) {
        const double loss = train_loss();
        r.curve.emplace_back(t + 1, loss);
        if (r.steps_to_target < 0 && loss <= o.target) r.steps_to_target = t + 1;
        bar.update(t + 1, loss);
        if (!std::isfinite(loss)) throw std::runtime_error("the training loss is not finite");
      }
    }
  } catch (const std::exception& e) {  // a diverged run, reported in the table
    r.diverged = true;
    r.error = e.what();
  }
  const int taken = r.curve.back().first;
  r.final_loss = r.curve.back().second;
  r.test_accuracy = r.diverged ? 0 : examples::accuracy(net, data.test_x, data.test_y.data());
  r.ms_per_step = 1e3 * step_seconds / std::max(1, taken);
  r.ms_optimizer = 1e3 * optimizer_seconds / std::max(1, taken);
  std::ostringstream s;
  s.setf(std::ios::fixed);
  if (r.diverged)
    s << "diverged after " << taken << " steps: " << r.error;
  else
    s << "loss " << loss_text(r.final_loss) << "  test accuracy " << std::setprecision(1)
      << 100 * r.test_accuracy << "%  " << std::setprecision(2) << r.ms_per_step << " ms/step";
  bar.finish(s.str());
  return r;
}

// ---- the report -----------------------------------------------------------------

std::string bytes_text(long long b) {
  char text[32];
  if (b < 10 * 1024)
    std::snprintf(text, sizeof text, "%lld B", b);
  else if (b < 10 * 1024 * 1024)
    std::snprintf(text, sizeof text, "%.1f KiB", double(b) / 1024);
  else
    std::snprintf(text, sizeof text, "%.1f MiB", double(b) / (1024 * 1024));
  return text;
}

void print_table(const std::vector<result>& rs, const options& o, long long param_bytes, polar::index n_train,
                 polar::index n_test) {
  std::printf("\n%-24s %10s %9s %10s %9s %9s %12s %8s %12s\n", "optimizer", "train loss", "test acc", "steps to",
              "ms/step", "opt ms", "state", "state x", "scratch");
  char target[32];
  std::snprintf(target, sizeof target, "%g", o.target);
  std::printf("%-24s %10s %9s %10s %9s %9s %12s %8s %12s\n", "", "", "", target, "", "", "", "", "");
  for (const result& r : rs) {
    char steps[16];
    if (r.steps_to_target >= 0)
      std::snprintf(steps, sizeof steps, "%d", r.steps_to_target);
    else
      std::snprintf(steps, sizeof steps, "-");
    if (r.diverged)
      std::printf("%-24s %10s %9s %10s %9.2f %9.2f %12s %8.3f %12s\n", r.m->name, "diverged", "-", steps,
                  r.ms_per_step, r.ms_optimizer, bytes_text(r.state_bytes).c_str(), r.state_ratio,
                  bytes_text(r.scratch_bytes).c_str());
    else
      std::printf("%-24s %10s %8.1f%% %10s %9.2f %9.2f %12s %8.3f %12s\n", r.m->name,
                  loss_text(r.final_loss).c_str(), 100 * r.test_accuracy, steps, r.ms_per_step, r.ms_optimizer,
                  bytes_text(r.state_bytes).c_str(), r.state_ratio, bytes_text(r.scratch_bytes).c_str());
  }
  std::printf(
      "\ntrain loss: mean cross-entropy over the %ld training images after the last step;\n"
      "test acc: on the other %ld images; steps to: the first evaluation (every %d steps)\n"
      "at or below the target; ms/step: forward, backward and optimizer step (SPSA: two\n"
      "forward passes and its step); opt ms: the optimizer's share; state: heap held by\n"
      "the optimizer after its first step, less the scratch; state x: what the states of\n"
      "the method's own group hold (its buffers) over the parameters it steps (the head's\n"
      "AdamW apart); scratch: the step buffers that all its tensors share (the parameters\n"
      "are %s).\n",
      long(n_train), long(n_test), std::max(1, o.steps / 60), bytes_text(param_bytes).c_str());
}

void write_csv(const std::vector<result>& rs, const options& o, const std::string& dir) {
  const std::string curves = dir + "/curves.csv", summary = dir + "/summary.csv";
  std::FILE* f = std::fopen(curves.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + curves);
  std::fprintf(f, "optimizer,step,train_loss\n");
  for (const result& r : rs)
    for (const auto& [step, loss] : r.curve) std::fprintf(f, "%s,%d,%.6g\n", r.m->key, step, loss);
  std::fclose(f);
  f = std::fopen(summary.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + summary);
  std::fprintf(f,
               "optimizer,name,settings,steps,batch,width,seed,final_train_loss,test_accuracy,steps_to_target,target,"
               "ms_per_step,optimizer_ms_per_step,state_bytes,state_ratio,scratch_bytes,diverged\n");
  for (const result& r : rs)
    std::fprintf(f, "%s,%s,\"%s\",%d,%d,%d,%llu,%.6g,%.4f,%d,%g,%.4f,%.4f,%lld,%.4f,%lld,%d\n", r.m->key,
                 r.m->name, r.m->recipe, o.steps, o.batch, o.width, static_cast<unsigned long long>(o.seed),
                 r.final_loss, r.test_accuracy, r.steps_to_target, o.target, r.ms_per_step, r.ms_optimizer,
                 r.state_bytes, r.state_ratio, r.scratch_bytes, int(r.diverged));
  std::fclose(f);
}

// Training loss (log scale) against steps, one line per optimizer.
void write_svg(const std::vector<result>& rs, const options& o, const std::string& path) {
  const double w = 760, h = 460, ml = 60, mr = 210, mt = 34, mb = 46;
  double lo = 1e300, hi = 0;
  for (const result& r : rs)
    for (const auto& p : r.curve)
      if (std::isfinite(p.second) && p.second > 0) lo = std::min(lo, p.second), hi = std::max(hi, p.second);
  if (!(lo < hi)) lo = 1e-3, hi = 10;
  // Losses below 1e-5 (a memorized training set) are drawn on the axis.
  constexpr double floor_loss = 1e-5;
  lo = std::max(lo, floor_loss);
  const double d0 = std::floor(std::log10(lo)), d1 = std::ceil(std::log10(hi));
  const auto px = [&](double step) { return ml + step / o.steps * (w - ml - mr); };
  const auto py = [&](double v) { return h - mb - (std::log10(v) - d0) / (d1 - d0) * (h - mt - mb); };
  static const char* colors[] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a",
                                 "#66a61e", "#e6ab02", "#a6761d", "#666666"};
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << (ml + w - mr) / 2 << "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">digits, 64-" << o.width
    << "-" << o.width << "-10 perceptron: training loss</text>\n";
  s << "<rect x=\"" << ml << "\" y=\"" << mt << "\" width=\"" << w - ml - mr << "\" height=\"" << h - mt - mb
    << "\" fill=\"none\" stroke=\"#888\"/>\n";
  for (double d = d0; d <= d1 + 1e-9; d += 1) {
    for (int k = 1; k < 10 && d < d1; ++k) {
      const double y = py(k * std::pow(10, d));
      s << "<line x1=\"" << ml << "\" x2=\"" << w - mr << "\" y1=\"" << y << "\" y2=\"" << y << "\" stroke=\""
        << (k == 1 ? "#ccc" : "#f0f0f0") << "\"/>\n";
    }
    s << "<text x=\"" << ml - 5 << "\" y=\"" << py(std::pow(10, d)) + 4 << "\" text-anchor=\"end\">"
      << std::pow(10, d) << "</text>\n";
  }
  for (int k = 0; k <= 4; ++k) {
    const double step = double(o.steps) * k / 4;
    s << "<text x=\"" << px(step) << "\" y=\"" << h - mb + 16 << "\" text-anchor=\"middle\">" << int(step)
      << "</text>\n";
  }
  s << "<text x=\"" << (ml + w - mr) / 2 << "\" y=\"" << h - 10 << "\" text-anchor=\"middle\">step</text>\n";
  for (std::size_t i = 0; i < rs.size(); ++i) {
    const char* c = colors[i % 8];
    s << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.8\" points=\"";
    for (const auto& p : rs[i].curve)
      if (std::isfinite(p.second)) s << px(p.first) << "," << py(std::max(p.second, std::pow(10, d0))) << " ";
    s << "\"/>\n";
    const double ly = mt + 10 + 20 * double(i);
    s << "<line x1=\"" << w - mr + 12 << "\" x2=\"" << w - mr + 34 << "\" y1=\"" << ly << "\" y2=\"" << ly
      << "\" stroke=\"" << c << "\" stroke-width=\"2.5\"/><text x=\"" << w - mr + 40 << "\" y=\"" << ly + 4 << "\">"
      << rs[i].m->name << "</text>\n";
  }
  s << "</svg>\n";
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  std::fputs(s.str().c_str(), f);
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    bool exit_now = false;
    o = parse(argc, argv, exit_now);
    if (exit_now) return 0;
  } catch (const usage_error& e) {
    std::fprintf(stderr, "polar_demo: %s (try --help)\n", e.what());
    return 2;
  }

  try {
    const split data = split_digits(examples::load_digits(o.data));
    std::vector<const method*> chosen;
    for (const method& m : methods())
      if (o.optimizers.empty() || std::find(o.optimizers.begin(), o.optimizers.end(), m.key) != o.optimizers.end())
        chosen.push_back(&m);
    std::filesystem::create_directories(o.out);

    eigen be;
    const long long params = 4LL * (64LL * o.width + 1LL * o.width * o.width + 10LL * o.width);
    std::printf("polar %s, backend %s, %d thread(s)\n", POLAR_VERSION_STRING, be.name(), be.threads());
    std::printf("digits: %zu training and %zu test images; perceptron 64-%d-%d-10, %lld weights\n",
                data.train_y.size(), data.test_y.size(), o.width, o.width, params / 4);
    std::printf("%zu optimizer(s), %d steps of %d images each, seed %llu\n\n", chosen.size(), o.steps, o.batch,
                static_cast<unsigned long long>(o.seed));
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<result> rs;
    for (const method* m : chosen) rs.push_back(train(*m, o, data));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    print_table(rs, o, params, data.train_x.rows(), data.test_x.rows());
    write_csv(rs, o, o.out);
    write_svg(rs, o, o.out + "/curves.svg");
    std::printf("\n%.1f s of training; plot in %s/curves.svg, numbers in %s/curves.csv and %s/summary.csv\n",
                elapsed, o.out.c_str(), o.out.c_str(), o.out.c_str());

    // Every optimizer must have learned: the backpropagating ones to half
    // the loss of a uniform guess (log 10), SPSA below its start.
    bool ok = true;
    for (const result& r : rs) {
      const double bar = r.m->spsa ? r.curve.front().second : 0.5 * std::log(10.0);
      if (r.diverged || !(r.final_loss < bar)) {
        std::printf("%s did not learn (final loss %g, needed below %g)\n", r.m->name, r.final_loss, bar);
        ok = false;
      }
    }
    std::printf("demo: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "polar_demo: %s\n", e.what());
    return 1;
  }
}
