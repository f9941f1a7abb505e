// tests/dist/sharded_model.hpp: the model the sharded optimizer's tests
// step (tests/dist/sharded.cpp with ranks as threads, tests/dist/
// mpi_sharded.cpp with ranks as processes): Muon, AdamW, MD-AdamW and
// row-sphere Riemannian Adam groups, a schedule, clipping; every rank's
// gradients from a seed of (rank, step, tensor), and the reference step of
// one optimizer on their average.
#pragma once

#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/core/tensor_traits.hpp"
#include "polar/core/eigen_traits.hpp"
#include "polar/optimizer.hpp"
#include "polar/schedule.hpp"

namespace sharded_test {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

struct model {
  std::vector<std::string> names;
  std::vector<fmat> w;
};

/// Uniform entries in [-1, 1) from a seed.
inline fmat random(polar::index rows, polar::index cols, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  fmat m(rows, cols);
  for (polar::index j = 0; j < cols; ++j)
    for (polar::index i = 0; i < rows; ++i) m(i, j) = u(g);
  return m;
}

/// The same shape and bits.
inline bool same_bits(const fmat& a, const fmat& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

/// The model's initial weights (the same on every rank).
inline model make_model() {
  model m;
  const auto add = [&](const char* name, polar::index r, polar::index c) {
    m.names.emplace_back(name);
    m.w.push_back(random(r, c, 11 + 7 * m.w.size()) * 0.2f);
  };
  add("embed", 24, 16);
  add("blocks.0.w1", 32, 48);
  add("blocks.0.w2", 48, 32);
  add("blocks.0.w3", 16, 64);
  add("blocks.0.w4", 40, 40);
  add("md.w", 24, 32);
  add("sphere.w", 16, 24);
  m.w.back().rowwise().normalize();
  add("bias", 1, 32);
  return m;
}

/// The groups, on polar::optimizer or the sharded one: MD-AdamW, row-sphere
/// Riemannian Adam, Muon for the other matrices (with a schedule), AdamW
/// for the rest (with a group clip); clip_norm over the whole model.
template <class Opt>
void configure(Opt& opt, double clip) {
  opt.add_group("md", polar::md_adamw{}, polar::rule::names({"md.w"}));
  polar::riemannian_adam<polar::hypersphere> sphere;
  sphere.geometry.scope = polar::sphere_scope::rows;
  opt.add_group("sphere", sphere, polar::rule::names({"sphere.w"}));
  auto& hidden = opt.add_group("hidden", polar::muon_direction<>{},
                               polar::rule::matrices() && !polar::rule::name("embed"));
  hidden.lr_schedule = polar::schedule::cosine(10, 0.1, 2);
  auto& rest = opt.add_group("rest", polar::adamw_direction{}, polar::rule::all());
  rest.clip_norm = clip > 0 ? 0.5 : 0.0;
  opt.clip_norm = clip;
}

/// Adds every tensor, in order.
template <class Opt>
void add_all(Opt& opt, model& m) {
  for (std::size_t t = 0; t < m.w.size(); ++t) opt.add(m.names[t], polar::make_view(m.w[t]));
}

/// A model with its optimizer, configured and filled: Opt is
/// polar::optimizer<B, float> (the reference) or a sharded optimizer, made
/// on `comm`. Not copyable: the optimizer holds views of the model.
template <class Opt, class B>
struct trained {
  model m = make_model();
  B be;
  Opt opt;
  template <class... Comm>
  explicit trained(double clip, Comm&... comm) : opt(be, comm...) {
    configure(opt, clip);
    add_all(opt, m);
  }
  trained(const trained&) = delete;
  trained& operator=(const trained&) = delete;
};

/// 24 Muon matrices of 16 x 40 and rank r's gradients of them: every rank
/// of 1 to 4 owns 24 / N, so bytes and state split evenly.
struct muon_set {
  static constexpr int count = 24;
  std::vector<fmat> w, g;
  explicit muon_set(int r) {
    for (int k = 0; k < count; ++k) {
      w.push_back(random(16, 40, 7 + std::uint64_t(k)));
      g.push_back(random(16, 40, 100 + std::uint64_t(k + count * r)));
    }
  }
  /// Adds a Muon group and the matrices to opt.
  template <class Opt>
  void add_to(Opt& opt) {
    opt.add_group("muon", polar::muon_direction<>{});
    for (std::size_t k = 0; k < w.size(); ++k) opt.add("w" + std::to_string(k), polar::make_view(w[k]));
  }
  std::vector<polar::param_view<const float>> grads() const {
    std::vector<polar::param_view<const float>> v;
    for (const auto& x : g) v.push_back(polar::make_view(x));
    return v;
  }
  /// The state one process holds for the set.
  static std::size_t single_state_bytes() {
    muon_set s(0);
    polar::backend::eigen be;
    polar::optimizer<polar::backend::eigen, float> one(be);
    s.add_to(one);
    return one.state_bytes();
  }
  /// The bytes a rank of n sends in one step: the others' gradients and its
  /// weights to every other rank, 32 bytes of header, 24 per owned tensor
  /// and 8 of status.
  static double step_bytes(int n, double parameter_bytes) {
    const double others = n - 1;
    return 2 * others / n * parameter_bytes + 32 * others + 24.0 * (count / n) * others + 8 * others;
  }
};

/// Rank r's gradients at step s (entry (0, 0) of tensor 1 NaN when nan).
inline std::vector<fmat> gradients(const model& m, int r, int s, bool nan = false) {
  std::vector<fmat> g;
  for (std::size_t t = 0; t < m.w.size(); ++t)
    g.push_back(random(m.w[t].rows(), m.w[t].cols(), 1000003ull * std::uint64_t(r + 1) + 1009ull * std::uint64_t(s) + t));
  if (nan) g[1](0, 0) = std::numeric_limits<float>::quiet_NaN();
  return g;
}

/// A sharded step with this rank's gradients.
template <class Opt>
void step_own(Opt& opt, model& m, int r, int s, bool nan = false) {
  auto g = gradients(m, r, s, nan);
  std::vector<polar::param_view<const float>> v;
  for (auto& x : g) v.push_back(polar::make_view(x));
  opt.step(v);
}

/// One optimizer's step with the average of ranks 0..n-1's gradients,
/// ((g_0 + g_1) + g_2 + ...) / n in float (rank nan_rank's with its NaN).
template <class Opt>
void step_averaged(Opt& opt, model& m, int s, int n, int nan_rank = -1) {
  std::vector<fmat> avg = gradients(m, 0, s, nan_rank == 0);
  for (int r = 1; r < n; ++r) {
    const auto g = gradients(m, r, s, nan_rank == r);
    for (std::size_t t = 0; t < avg.size(); ++t)
      for (polar::index k = 0; k < avg[t].size(); ++k) avg[t].data()[k] += g[t].data()[k];
  }
  for (auto& a : avg)
    for (polar::index k = 0; k < a.size(); ++k) a.data()[k] = a.data()[k] / float(n);
  std::vector<polar::param_view<const float>> v;
  for (auto& x : avg) v.push_back(polar::make_view(x));
  opt.step(v);
}

}  // namespace sharded_test
