// examples/gpt/recipes.hpp: the optimizers the GPT experiment compares,
// each as one polar::optimizer over the model's tensors with groups by name:
//
//   hidden  h*.w* (the attention's and MLP's matrices): the optimizer named
//   embed   wte, wpe, head: AdamW (the routing Muon's authors use)
//   gains   the RMSNorm gains (vectors): AdamW without weight decay
//
// "adamw" puts every group on AdamW at the recipe's lr. Every group follows
// one cosine schedule to 0.1 of its rate after a linear warmup. Also: the
// starting points the constrained optimizers need, and the GEMM rate that
// the throughput is compared with. polar_gpt (train.cpp) and bench_gpt use
// them.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/SVD>

#include "model.hpp"

namespace gpt {

/// The optimizers of the experiment, by name.
inline const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"adamw",   "muon",    "normuon",   "adamuon",
                                                 "polargrad", "dion",     "md-adamw", "md-muon", "sphere",
                                                 "manifold-muon", "spsa"};
  return names;
}

/// One optimizer's settings.
struct recipe {
  std::string optimizer = "muon";
  double lr = 0.02;          ///< the hidden group's (every group's for adamw)
  double lr_adam = 3e-3;     ///< the embed and gains groups' (not adamw)
  double weight_decay = 0;   ///< AdamW's or Muon's on the hidden matrices (and on embed, for adamw)
  long warmup = 0;           ///< steps of linear warmup
  long steps = 1000;         ///< the schedule's length
  int dual_steps = 10;       ///< manifold Muon's dual-ascent cap
};

template <class Backend>
using float_model = model<Backend, float>;

// Each row of every hidden matrix scaled to norm 1 (the sphere
// optimizer's manifold: nGPT keeps its matrices' rows on the unit sphere).
template <class Backend>
void rows_to_sphere(float_model<Backend>& m) {
  for (std::size_t k = 0; k < m.tensors().size(); ++k) {
    const auto& t = m.tensors()[k];
    if (t.vector() || t.name[0] != 'h') continue;
    float* w = m.weights().data() + t.offset;
    for (polar::index i = 0; i < t.rows; ++i) {
      double s = 0;
      for (polar::index j = 0; j < t.cols; ++j) s += double(w[i * t.cols + j]) * w[i * t.cols + j];
      const float inv = float(1 / std::sqrt(s));
      for (polar::index j = 0; j < t.cols; ++j) w[i * t.cols + j] *= inv;
    }
  }
}

// Every hidden matrix replaced by its orthogonal polar factor (the Stiefel
// manifold that manifold Muon steps on: orthonormal columns, or rows when wide).
template <class Backend>
void hidden_to_stiefel(float_model<Backend>& m) {
  using rmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (std::size_t k = 0; k < m.tensors().size(); ++k) {
    const auto& t = m.tensors()[k];
    if (t.vector() || t.name[0] != 'h') continue;
    Eigen::Map<rmat> w(m.weights().data() + t.offset, t.rows, t.cols);
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(w.cast<double>(), Eigen::ComputeThinU | Eigen::ComputeThinV);
    w = (svd.matrixU() * svd.matrixV().transpose()).cast<float>();
  }
}

/// The optimizer of o.optimizer over the model's tensors (any but spsa),
/// after moving the model onto the optimizer's manifold where it has one
/// (sphere: unit rows; manifold-muon: the Stiefel manifold).
template <class Backend>
std::unique_ptr<polar::optimizer<Backend, float>> make_optimizer(Backend& be, float_model<Backend>& m,
                                                                 const recipe& o) {
  if (o.optimizer == "sphere") rows_to_sphere(m);
  if (o.optimizer == "manifold-muon") hidden_to_stiefel(m);
  auto opt = std::make_unique<polar::optimizer<Backend, float>>(be);
  const auto hidden = polar::rule::name("h*.w*");
  const double decay_to = 0.1;
  const auto sched = polar::schedule::cosine(o.steps, decay_to, o.warmup);
  const auto adam = [&](double lr, double wd) { return polar::adamw_direction{lr, 0.9, 0.95, 1e-8, wd}; };
  if (o.optimizer == "adamw") {
    opt->add_group("hidden", adam(o.lr, o.weight_decay), hidden).lr_schedule = sched;
  } else if (o.optimizer == "muon") {
    polar::muon_direction<> mu;
    mu.lr = o.lr;
    mu.weight_decay = o.weight_decay;
    opt->add_group("hidden", mu, hidden).lr_schedule = sched;
  } else if (o.optimizer == "normuon") {
    polar::muon_direction<polar::newton_schulz, void, polar::normuon> mu;  // Muon's norm: Muon's rates
    mu.lr = o.lr;
    mu.weight_decay = o.weight_decay;
    opt->add_group("hidden", mu, hidden).lr_schedule = sched;
  } else if (o.optimizer == "adamuon") {
    polar::muon_direction<polar::newton_schulz, void, polar::adamuon> mu;  // AdamW's RMS: AdamW's rates
    mu.scale = polar::scale_rule::match_adamw_rms;
    mu.lr = o.lr;
    mu.weight_decay = o.weight_decay;
    opt->add_group("hidden", mu, hidden).lr_schedule = sched;
  } else if (o.optimizer == "polargrad") {
    polar::muon_direction<polar::newton_schulz, void, polar::polargrad> mu;  // the nuclear norm's length
    mu.scale = polar::scale_rule::none;
    mu.lr = o.lr;
    mu.weight_decay = o.weight_decay;
    opt->add_group("hidden", mu, hidden).lr_schedule = sched;
  } else if (o.optimizer == "dion") {
    polar::dion_direction d;  // rank 32: a quarter of the default width (full rank at --quick)
    d.lr = o.lr;
    d.rank = 32;
    d.weight_decay = o.weight_decay;
    opt->add_group("hidden", d, hidden).lr_schedule = sched;
  } else if (o.optimizer == "md-adamw") {
    polar::md_adamw md;
    md.direction.lr = o.lr;
    md.gain_direction.lr = o.lr_adam;
    opt->add_group("hidden", md, hidden).lr_schedule = sched;
  } else if (o.optimizer == "md-muon") {
    polar::md_muon md;
    md.direction.lr = o.lr;
    md.gain_direction.lr = o.lr_adam;
    opt->add_group("hidden", md, hidden).lr_schedule = sched;
  } else if (o.optimizer == "sphere") {
    polar::riemannian<polar::adamw_direction, polar::hypersphere> ra;
    ra.direction = adam(o.lr, 0);
    ra.geometry.scope = polar::sphere_scope::rows;
    opt->add_group("hidden", ra, hidden).lr_schedule = sched;
  } else if (o.optimizer == "manifold-muon") {
    // msign by Newton-Schulz (Polar Express's 8 steps, which converge),
    // not the default exact SVD: at this size a step would take seconds.
    polar::manifold_muon<polar::newton_schulz> mm;
    mm.orthogonalizer.schedule = polar::schedules::polar_express8;
    mm.lr = o.lr;
    mm.max_dual_steps = o.dual_steps;
    opt->add_group("hidden", mm, hidden).lr_schedule = sched;
  } else {
    throw std::invalid_argument("gpt::make_optimizer: no recipe for '" + o.optimizer + "'");
  }
  const double lr_rest = o.optimizer == "adamw" ? o.lr : o.lr_adam;
  opt->add_group("embed", adam(lr_rest, o.optimizer == "adamw" ? o.weight_decay : 0.0),
                 polar::rule::names({"wte", "wpe", "head"}))
      .lr_schedule = sched;
  opt->add_group("gains", adam(lr_rest, 0.0), polar::rule::vectors()).lr_schedule = sched;
  for (std::size_t k = 0; k < m.tensors().size(); ++k) opt->add(m.tensors()[k].name, m.view(k));
  return opt;
}

/// The GEMM rate of this machine and thread count in flop/s: the MLP's
/// first product (rows x width times width x 4 width), the best of five
/// rounds of `seconds` each.
template <class Backend>
double gemm_rate(Backend& be, polar::index rows, polar::index width, double seconds) {
  using clock_type = std::chrono::steady_clock;
  const polar::index n = rows, k = width, mo = 4 * width;
  std::vector<float> a(std::size_t(n * k), 0.5f), b(std::size_t(mo * k), 0.25f), c(std::size_t(n * mo));
  const auto av = polar::matrix_view<const float>(a.data(), n, k, k, 1);
  const auto bv = polar::matrix_view<const float>(b.data(), mo, k, k, 1);
  const auto cv = polar::matrix_view<float>(c.data(), n, mo, mo, 1);
  be.gemm(1.0f, polar::op::n, av, polar::op::t, bv, 0.0f, cv);
  double best = 0;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = clock_type::now();
    long reps = 0;
    double dt = 0;
    do {
      be.gemm(1.0f, polar::op::n, av, polar::op::t, bv, 0.0f, cv);
      ++reps;
      dt = std::chrono::duration<double>(clock_type::now() - t0).count();
    } while (dt < seconds);
    best = std::max(best, 2.0 * double(n) * double(k) * double(mo) * double(reps) / dt);
  }
  return best;
}

}  // namespace gpt
