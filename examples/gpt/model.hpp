// examples/gpt/model.hpp: a decoder-only transformer (a small GPT) with its
// forward and backward passes written by hand over a polar host backend.
//
// The model, for a batch of B sequences of T tokens (N = B T rows):
//
//   x    = wte[token] + wpe[position]                        N x d
//   for each of L blocks:
//     a  = rmsnorm(x) * g1
//     q, k, v = a Wq^T, a Wk^T, a Wv^T                        (one GEMM, W_qkv = [Wq; Wk; Wv])
//     per sequence and head h (d/H columns each):
//       P = softmax(q_h k_h^T / sqrt(d/H), causal)           T x T
//       o_h = P v_h
//     x  = x + o Wo^T
//     a  = rmsnorm(x) * g2
//     x  = x + relu(a W1^T)^2 W2^T                            W1: 4d x d, W2: d x 4d
//   logits = (rmsnorm(x) * gf) head^T                         N x V
//   loss = mean over rows of -log softmax(logits)[target]
//
// Pre-norm blocks with RMSNorm and learnable gains, causal multi-head
// attention, a ReLU^2 MLP (the modded-nanogpt speedruns' choice), untied
// input and output embeddings, no biases. Matrices are stored (out x in),
// row-major, as torch's nn.Linear: a layer computes Y = X W^T.
//
// Every product goes through the backend's gemm (threaded by it); the
// attention's per-head products run one head per thread, each GEMM on its
// thread. The rest (norms, softmax, activation, embedding) are loops over
// rows. backward() writes the gradient of the last forward()'s mean loss
// with respect to every parameter, in the parameters' layout; it is checked
// against central differences in double by tests/gpt/gradients.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <polar/polar.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace gpt {

using polar::index;

/// The model's shape.
struct config {
  int vocab = 0;      ///< V, distinct tokens
  int context = 128;  ///< the longest sequence (rows of wpe)
  int width = 128;    ///< d
  int heads = 4;      ///< H; d must be a multiple of it
  int layers = 4;     ///< L
  int mlp = 4;        ///< the MLP's hidden width over d

  /// Throws std::invalid_argument naming the field for a shape that cannot be built.
  void check() const {
    const auto bad = [](const std::string& what) { throw std::invalid_argument("gpt::config: " + what); };
    if (vocab < 2) bad("vocab must be >= 2, got " + std::to_string(vocab));
    if (context < 1) bad("context must be >= 1, got " + std::to_string(context));
    if (width < 1 || heads < 1 || width % heads != 0)
      bad("width (" + std::to_string(width) + ") must be a positive multiple of heads (" + std::to_string(heads) +
          ")");
    if (layers < 0) bad("layers must be >= 0, got " + std::to_string(layers));
    if (mlp < 1) bad("mlp must be >= 1, got " + std::to_string(mlp));
  }
};

/// One parameter tensor: where it lies in the flat parameter vector.
struct tensor_info {
  std::string name;   ///< "wte", "h0.wq", "h3.norm2", "head", ...
  std::size_t offset;  ///< first element
  index rows, cols;   ///< a vector has cols == 0 and rows elements
  /// Elements.
  std::size_t size() const { return std::size_t(rows) * std::size_t(cols > 0 ? cols : 1); }
  /// Whether it is a gain vector.
  bool vector() const { return cols == 0; }
};

/// Flops of one training step's forward and backward per token: 6 per
/// parameter in a product (the embeddings' lookups are not products) plus
/// the attention's two T x T products, 12 L T d with T the sequence length
/// (PaLM's appendix B count, which charges the causal half as full).
inline double flops_per_token(const config& c, int seq) {
  const double d = c.width, f = double(c.mlp) * c.width;
  const double matrix_params = c.layers * (4 * d * d + 2 * d * f) + double(c.vocab) * d;
  return 6 * matrix_params + 12.0 * c.layers * seq * d;
}

/// The model: parameters, their gradients, and the activations of the last
/// forward pass. Backend is a polar backend over host memory (Eigen, or
/// Thrust's OMP or CPP system); T is float or double.
template <class Backend, class T>
class model {
  static_assert(Backend::space == polar::memory_space::host,
                "gpt::model: the model's loops read host memory; use a host backend");

 public:
  /// Builds the tensors (see names()) and initializes them from `seed`:
  /// embeddings N(0, 1), products' inputs N(0, 1/in), the blocks' output
  /// projections (Wo, W2) N(0, 1/(2 L in)) as GPT-2 scales them, gains 1.
  model(Backend& be, const config& c, std::uint64_t seed) : be_(be), c_(c) {
    c_.check();
    const index d = c_.width, f = index(c_.mlp) * d, V = c_.vocab;
    const auto add = [&](std::string name, index rows, index cols) {
      tensor_info t{std::move(name), total_, rows, cols};
      total_ += t.size();
      info_.push_back(t);
      return info_.size() - 1;
    };
    wte_ = add("wte", V, d);
    wpe_ = add("wpe", c_.context, d);
    for (int l = 0; l < c_.layers; ++l) {
      const std::string p = "h" + std::to_string(l) + ".";
      block b;
      b.norm1 = add(p + "norm1", d, 0);
      // wq, wk, wv are consecutive so that one GEMM computes q, k and v.
      b.wq = add(p + "wq", d, d);
      add(p + "wk", d, d);
      add(p + "wv", d, d);
      b.wo = add(p + "wo", d, d);
      b.norm2 = add(p + "norm2", d, 0);
      b.w1 = add(p + "w1", f, d);
      b.w2 = add(p + "w2", d, f);
      blocks_.push_back(b);
    }
    normf_ = add("normf", d, 0);
    head_ = add("head", V, d);
    w_.assign(total_, T(0));
    g_.assign(total_, T(0));
    const double out_scale = 1 / std::sqrt(2.0 * std::max(1, c_.layers));
    std::uint32_t k = 0;
    for (const auto& t : info_) {
      auto v = polar::matrix_view<T>(w_.data() + t.offset, 1, index(t.size()), index(t.size()), 1);
      if (t.vector()) {
        be_.fill(v, T(1));
        continue;
      }
      double sd = 1 / std::sqrt(double(t.cols));
      if (&t == &info_[wte_] || &t == &info_[wpe_]) sd = 1;
      const bool output = t.name.size() > 3 && (t.name.compare(t.name.size() - 3, 3, ".wo") == 0 ||
                                                t.name.compare(t.name.size() - 3, 3, ".w2") == 0);
      if (output) sd *= out_scale;
      be_.fill_random(v, polar::rng_key{seed, 0, k++}, polar::distribution::normal, T(sd));
    }
  }

  const config& shape() const { return c_; }
  /// Every tensor, in the order of the flat vectors.
  const std::vector<tensor_info>& tensors() const { return info_; }
  /// Parameters, all of them.
  std::size_t parameter_count() const { return total_; }
  /// The flat parameter vector.
  std::vector<T>& weights() { return w_; }
  const std::vector<T>& weights() const { return w_; }
  /// The flat gradient vector (backward() writes it).
  std::vector<T>& gradients() { return g_; }
  const std::vector<T>& gradients() const { return g_; }

  /// Tensor k of the weights (or of `flat`, a vector of the same layout):
  /// a matrix, or a rank-1 tensor for a gain.
  polar::param_view<T> view(std::size_t k) { return view_of(w_.data(), k); }
  /// Tensor k of the gradients.
  polar::param_view<const T> gradient(std::size_t k) const {
    return view_of(const_cast<T*>(g_.data()), k);  // read-only view of our own data
  }

  /// Runs the model on tokens[B T] (B sequences of T tokens, T <= context)
  /// and returns the mean cross-entropy in nats against targets[B T];
  /// keeps what backward() needs. targets may be null: then only the
  /// logits are computed (see logits()) and the loss returned is 0.
  T forward(const int* tokens, const int* targets, int B, int T_) {
    if (B < 1 || T_ < 1 || T_ > c_.context)
      throw std::invalid_argument("gpt::model::forward: B = " + std::to_string(B) + ", T = " + std::to_string(T_) +
                                  " (1 <= T <= context = " + std::to_string(c_.context) + ")");
    B_ = B, T_seq_ = T_;
    probabilities_ = false;
    const index N = index(B) * T_, d = c_.width, f = index(c_.mlp) * d, V = c_.vocab;
    resize(N);
    tokens_.assign(tokens, tokens + N);
    if (targets) targets_.assign(targets, targets + N);
    // Embedding.
    {
      const T* wte = w_.data() + info_[wte_].offset;
      const T* wpe = w_.data() + info_[wpe_].offset;
      T* x = act_.x[0].data();
      for (index i = 0; i < N; ++i) {
        const int tok = tokens[i];
        if (tok < 0 || tok >= c_.vocab)
          throw std::invalid_argument("gpt::model::forward: token " + std::to_string(tok) + " at " +
                                      std::to_string(i) + " is outside the vocabulary of " +
                                      std::to_string(c_.vocab));
        const T* e = wte + index(tok) * d;
        const T* p = wpe + (i % T_) * d;
        for (index j = 0; j < d; ++j) x[i * d + j] = e[j] + p[j];
      }
    }
    for (int l = 0; l < c_.layers; ++l) {
      const block& b = blocks_[std::size_t(l)];
      layer_acts& a = act_.layer[std::size_t(l)];
      rmsnorm_forward(act_.x[l].data(), param(b.norm1), a.a1.data(), a.r1.data(), N);
      be_.gemm(T(1), polar::op::n, cview(a.a1.data(), N, d), polar::op::t, cview(param(b.wq), 3 * d, d), T(0),
               mview(a.qkv.data(), N, 3 * d));
      attention_forward(a, l);
      std::copy(act_.x[l].begin(), act_.x[l].end(), a.xm.begin());
      be_.gemm(T(1), polar::op::n, cview(a.att.data(), N, d), polar::op::t, cview(param(b.wo), d, d), T(1),
               mview(a.xm.data(), N, d));
      rmsnorm_forward(a.xm.data(), param(b.norm2), a.a2.data(), a.r2.data(), N);
      be_.gemm(T(1), polar::op::n, cview(a.a2.data(), N, d), polar::op::t, cview(param(b.w1), f, d), T(0),
               mview(a.h.data(), N, f));
      {
        const T* h = a.h.data();
        T* r = a.relu2.data();
        POLAR_OMP(parallel for schedule(static))
        for (index i = 0; i < N * f; ++i) {
          const T u = h[i] > T(0) ? h[i] : T(0);
          r[i] = u * u;
        }
      }
      std::copy(a.xm.begin(), a.xm.end(), act_.x[l + 1].begin());
      be_.gemm(T(1), polar::op::n, cview(a.relu2.data(), N, f), polar::op::t, cview(param(b.w2), d, f), T(1),
               mview(act_.x[l + 1].data(), N, d));
    }
    rmsnorm_forward(act_.x[c_.layers].data(), param(normf_), act_.af.data(), act_.rf.data(), N);
    be_.gemm(T(1), polar::op::n, cview(act_.af.data(), N, d), polar::op::t, cview(param(head_), V, d), T(0),
             mview(act_.logits.data(), N, V));
    if (!targets) return T(0);
    for (index i = 0; i < N; ++i)
      if (targets[i] < 0 || targets[i] >= c_.vocab)
        throw std::invalid_argument("gpt::model::forward: target " + std::to_string(targets[i]) + " at " +
                                    std::to_string(i) + " is outside the vocabulary of " +
                                    std::to_string(c_.vocab));
    // Softmax and cross-entropy; the probabilities stay in the logits' place for backward.
    double loss = 0;
    T* lg = act_.logits.data();
    POLAR_OMP(parallel for schedule(static) reduction(+ : loss))
    for (index i = 0; i < N; ++i) {
      T* row = lg + i * V;
      T mx = row[0];
      for (index j = 1; j < V; ++j) mx = std::max(mx, row[j]);
      double s = 0;
      for (index j = 0; j < V; ++j) s += std::exp(double(row[j] - mx));
      const int y = targets[i];
      loss += std::log(s) - double(row[y] - mx);
      const T inv = T(1 / s);
      for (index j = 0; j < V; ++j) row[j] = std::exp(row[j] - mx) * inv;
    }
    probabilities_ = true;
    return T(loss / double(N));
  }

  /// The largest attention logit (q.k / sqrt(d/H), over the batch and every
  /// causal pair) of each head of block `layer` in the last forward(): H
  /// values, what polar::qk_clip takes.
  const double* max_logits(int layer) const { return max_logit_.data() + std::size_t(layer) * std::size_t(c_.heads); }
  /// The index in tensors() of block `layer`'s query (or key) matrix.
  std::size_t query_index(int layer) const { return blocks_.at(std::size_t(layer)).wq; }
  std::size_t key_index(int layer) const { return blocks_.at(std::size_t(layer)).wq + 1; }

  /// The logits of the last forward() without targets: row i of N x V.
  const T* logits() const { return act_.logits.data(); }

  /// Writes into gradients() the gradient of the last forward()'s mean loss.
  void backward() {
    if (!probabilities_)
      throw std::logic_error("gpt::model::backward: call forward() with targets first");
    const index N = index(B_) * T_seq_, d = c_.width, f = index(c_.mlp) * d, V = c_.vocab;
    std::fill(g_.begin(), g_.end(), T(0));
    // dlogits = (softmax - onehot) / N, in place of the probabilities.
    T* dl = act_.logits.data();
    const T invN = T(1) / T(N);
    POLAR_OMP(parallel for schedule(static))
    for (index i = 0; i < N; ++i) {
      T* row = dl + i * V;
      row[targets_[std::size_t(i)]] -= T(1);
      for (index j = 0; j < V; ++j) row[j] *= invN;
    }
    probabilities_ = false;
    be_.gemm(T(1), polar::op::t, cview(dl, N, V), polar::op::n, cview(act_.af.data(), N, d), T(0),
             mview(grad(head_), V, d));
    T* da = bw_.da.data();
    be_.gemm(T(1), polar::op::n, cview(dl, N, V), polar::op::n, cview(param(head_), V, d), T(0), mview(da, N, d));
    // dx: the gradient with respect to the residual stream.
    T* dx = bw_.dx.data();
    std::fill(bw_.dx.begin(), bw_.dx.end(), T(0));
    rmsnorm_backward(act_.x[c_.layers].data(), param(normf_), act_.rf.data(), da, dx, grad(normf_), N);
    for (int l = c_.layers - 1; l >= 0; --l) {
      const block& b = blocks_[std::size_t(l)];
      layer_acts& a = act_.layer[std::size_t(l)];
      // MLP: x_out = xm + relu2 W2^T.
      be_.gemm(T(1), polar::op::t, cview(dx, N, d), polar::op::n, cview(a.relu2.data(), N, f), T(0),
               mview(grad(b.w2), d, f));
      T* dh = bw_.dh.data();
      be_.gemm(T(1), polar::op::n, cview(dx, N, d), polar::op::n, cview(param(b.w2), d, f), T(0), mview(dh, N, f));
      {
        const T* h = a.h.data();
        POLAR_OMP(parallel for schedule(static))
        for (index i = 0; i < N * f; ++i) dh[i] = h[i] > T(0) ? dh[i] * T(2) * h[i] : T(0);
      }
      be_.gemm(T(1), polar::op::t, cview(dh, N, f), polar::op::n, cview(a.a2.data(), N, d), T(0),
               mview(grad(b.w1), f, d));
      be_.gemm(T(1), polar::op::n, cview(dh, N, f), polar::op::n, cview(param(b.w1), f, d), T(0), mview(da, N, d));
      rmsnorm_backward(a.xm.data(), param(b.norm2), a.r2.data(), da, dx, grad(b.norm2), N);
      // Attention: xm = x + att Wo^T.
      be_.gemm(T(1), polar::op::t, cview(dx, N, d), polar::op::n, cview(a.att.data(), N, d), T(0),
               mview(grad(b.wo), d, d));
      T* datt = bw_.datt.data();
      be_.gemm(T(1), polar::op::n, cview(dx, N, d), polar::op::n, cview(param(b.wo), d, d), T(0),
               mview(datt, N, d));
      attention_backward(a);
      be_.gemm(T(1), polar::op::t, cview(bw_.dqkv.data(), N, 3 * d), polar::op::n, cview(a.a1.data(), N, d), T(0),
               mview(grad(b.wq), 3 * d, d));
      be_.gemm(T(1), polar::op::n, cview(bw_.dqkv.data(), N, 3 * d), polar::op::n, cview(param(b.wq), 3 * d, d),
               T(0), mview(da, N, d));
      rmsnorm_backward(act_.x[l].data(), param(b.norm1), a.r1.data(), da, dx, grad(b.norm1), N);
    }
    // Embeddings: scatter-add the rows (one thread: tokens repeat).
    T* gte = grad(wte_);
    T* gpe = grad(wpe_);
    for (index i = 0; i < N; ++i) {
      T* e = gte + index(tokens_[std::size_t(i)]) * d;
      T* p = gpe + (i % T_seq_) * d;
      const T* g = dx + i * d;
      for (index j = 0; j < d; ++j) e[j] += g[j], p[j] += g[j];
    }
  }

  /// Bytes of activations the last forward() kept.
  std::size_t activation_bytes() const {
    std::size_t n = act_.logits.size() + act_.af.size() + act_.rf.size();
    for (const auto& x : act_.x) n += x.size();
    for (const auto& a : act_.layer)
      n += a.a1.size() + a.r1.size() + a.qkv.size() + a.p.size() + a.att.size() + a.xm.size() + a.a2.size() +
           a.r2.size() + a.h.size() + a.relu2.size();
    return n * sizeof(T);
  }

 private:
  struct block {
    std::size_t norm1, wq, wo, norm2, w1, w2;  // wk = wq + 1, wv = wq + 2
  };
  struct layer_acts {
    std::vector<T> a1, r1, qkv, p, att, xm, a2, r2, h, relu2;
  };
  struct activations {
    std::vector<std::vector<T>> x;  // the residual stream entering block l; x[L] leaves the last
    std::vector<layer_acts> layer;
    std::vector<T> af, rf, logits;
  };
  struct backward_buffers {
    std::vector<T> dx, da, dh, datt, dqkv, dp;
  };

  static constexpr T eps = T(1e-6);

  T* param(std::size_t k) { return w_.data() + info_[k].offset; }
  T* grad(std::size_t k) { return g_.data() + info_[k].offset; }
  static polar::matrix_view<const T> cview(const T* p, index r, index c) {
    return polar::matrix_view<const T>(p, r, c, c, 1);
  }
  static polar::matrix_view<T> mview(T* p, index r, index c) { return polar::matrix_view<T>(p, r, c, c, 1); }
  polar::param_view<T> view_of(T* base, std::size_t k) const {
    const tensor_info& t = info_.at(k);
    if (t.vector()) return polar::tensor_view<T>(base + t.offset, {t.rows});
    return polar::matrix_view<T>(base + t.offset, t.rows, t.cols, t.cols, 1);
  }

  void resize(index N) {
    const index d = c_.width, f = index(c_.mlp) * d, V = c_.vocab;
    const auto sz = [](std::vector<T>& v, index n) { v.resize(std::size_t(n)); };
    act_.x.resize(std::size_t(c_.layers) + 1);
    for (auto& x : act_.x) sz(x, N * d);
    act_.layer.resize(std::size_t(c_.layers));
    const index heads = index(B_) * c_.heads, tt = index(T_seq_) * T_seq_;
    for (auto& a : act_.layer) {
      sz(a.a1, N * d), sz(a.r1, N), sz(a.qkv, N * 3 * d), sz(a.p, heads * tt), sz(a.att, N * d);
      sz(a.xm, N * d), sz(a.a2, N * d), sz(a.r2, N), sz(a.h, N * f), sz(a.relu2, N * f);
    }
    sz(act_.af, N * d), sz(act_.rf, N), sz(act_.logits, N * V);
    sz(bw_.dx, N * d), sz(bw_.da, N * d), sz(bw_.dh, N * f), sz(bw_.datt, N * d), sz(bw_.dqkv, N * 3 * d);
    sz(bw_.dp, heads * tt);
    max_logit_.assign(std::size_t(c_.layers) * std::size_t(c_.heads), 0.0);
  }

  // y = x / rms(x) * g per row; r[i] = 1 / rms(row i).
  void rmsnorm_forward(const T* x, const T* g, T* y, T* r, index N) const {
    const index d = c_.width;
    POLAR_OMP(parallel for schedule(static))
    for (index i = 0; i < N; ++i) {
      const T* xi = x + i * d;
      T ss = 0;
      for (index j = 0; j < d; ++j) ss += xi[j] * xi[j];
      const T ri = T(1) / std::sqrt(ss / T(d) + eps);
      r[i] = ri;
      T* yi = y + i * d;
      for (index j = 0; j < d; ++j) yi[j] = xi[j] * ri * g[j];
    }
  }
  // Given dy (the gradient at y), adds the gradient at x into dx and at g into dg.
  // With u = x r: dy/dx gives dx = r (dy g - u mean(dy g u)).
  void rmsnorm_backward(const T* x, const T* g, const T* r, const T* dy, T* dx, T* dg, index N) {
    const index d = c_.width;
#if defined(_OPENMP)
    const int threads = omp_get_max_threads();
#else
    const int threads = 1;
#endif
    std::vector<T>& part = bw_.dp;  // per-thread partial sums of dg, d each (dp is free here)
    if (part.size() < std::size_t(threads) * std::size_t(d)) part.resize(std::size_t(threads) * std::size_t(d));
    std::fill(part.begin(), part.begin() + std::ptrdiff_t(threads) * d, T(0));
    POLAR_OMP(parallel)
    {
#if defined(_OPENMP)
      T* acc = part.data() + std::ptrdiff_t(omp_get_thread_num()) * d;
#else
      T* acc = part.data();
#endif
      POLAR_OMP(for schedule(static))
      for (index i = 0; i < N; ++i) {
        const T* xi = x + i * d;
        const T* dyi = dy + i * d;
        const T ri = r[i];
        T m = 0;
        for (index j = 0; j < d; ++j) {
          acc[j] += dyi[j] * xi[j] * ri;
          m += dyi[j] * g[j] * xi[j] * ri;
        }
        m /= T(d);
        T* dxi = dx + i * d;
        for (index j = 0; j < d; ++j) dxi[j] += ri * (dyi[j] * g[j] - xi[j] * ri * m);
      }
    }
    for (int t = 0; t < threads; ++t)
      for (index j = 0; j < d; ++j) dg[j] += part[std::size_t(t) * std::size_t(d) + std::size_t(j)];
  }

  // The views of head h of sequence b: q, k, v (T x d/H, row stride 3d),
  // the output o (row stride d), and its T x T probabilities.
  polar::matrix_view<T> qkv_head(layer_acts& a, index b, index h, int part) {
    const index d = c_.width, hd = d / c_.heads;
    return polar::matrix_view<T>(a.qkv.data() + b * T_seq_ * 3 * d + part * d + h * hd, T_seq_, hd, 3 * d, 1);
  }

  void attention_forward(layer_acts& a, int layer) {
    const index d = c_.width, H = c_.heads, hd = d / H, S = T_seq_;
    const T scale = T(1) / std::sqrt(T(hd));
    const index pairs = index(B_) * H;
    pair_max_.assign(std::size_t(pairs), 0.0);
    POLAR_OMP(parallel for schedule(dynamic))
    for (index bh = 0; bh < pairs; ++bh) {
      const index b = bh / H, h = bh % H;
      T* p = a.p.data() + bh * S * S;
      // Inside a parallel region Eigen's GEMM runs on the calling thread.
      be_.gemm(scale, polar::op::n, polar::matrix_view<const T>(qkv_head(a, b, h, 0)), polar::op::t,
               polar::matrix_view<const T>(qkv_head(a, b, h, 1)), T(0), mview(p, S, S));
      for (index i = 0; i < S; ++i) {
        T* row = p + i * S;
        T mx = row[0];
        for (index j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
        if (i == 0 || double(mx) > pair_max_[std::size_t(bh)]) pair_max_[std::size_t(bh)] = double(mx);
        T s = 0;
        for (index j = 0; j <= i; ++j) s += (row[j] = std::exp(row[j] - mx));
        const T inv = T(1) / s;
        for (index j = 0; j <= i; ++j) row[j] *= inv;
        for (index j = i + 1; j < S; ++j) row[j] = T(0);
      }
      be_.gemm(T(1), polar::op::n, cview(p, S, S), polar::op::n, polar::matrix_view<const T>(qkv_head(a, b, h, 2)),
               T(0), polar::matrix_view<T>(a.att.data() + b * S * d + h * hd, S, hd, d, 1));
    }
    double* out = max_logit_.data() + std::size_t(layer) * std::size_t(H);
    for (index h = 0; h < H; ++h) {
      out[h] = pair_max_[std::size_t(h)];
      for (index b = 1; b < index(B_); ++b) out[h] = std::max(out[h], pair_max_[std::size_t(b * H + h)]);
    }
  }

  // From datt (bw_.datt), writes dq, dk, dv into bw_.dqkv.
  void attention_backward(layer_acts& a) {
    const index d = c_.width, H = c_.heads, hd = d / H, S = T_seq_;
    const T scale = T(1) / std::sqrt(T(hd));
    const index pairs = index(B_) * H;
    T* dqkv = bw_.dqkv.data();
    POLAR_OMP(parallel for schedule(dynamic))
    for (index bh = 0; bh < pairs; ++bh) {
      const index b = bh / H, h = bh % H;
      const T* p = a.p.data() + bh * S * S;
      T* dp = bw_.dp.data() + bh * S * S;
      const auto dout = polar::matrix_view<const T>(bw_.datt.data() + b * S * d + h * hd, S, hd, d, 1);
      const auto head = [&](int part) {
        return polar::matrix_view<T>(dqkv + b * S * 3 * d + part * d + h * hd, S, hd, 3 * d, 1);
      };
      // dv = P^T dout; dP = dout v^T.
      be_.gemm(T(1), polar::op::t, cview(p, S, S), polar::op::n, dout, T(0), head(2));
      be_.gemm(T(1), polar::op::n, dout, polar::op::t, polar::matrix_view<const T>(qkv_head(a, b, h, 2)), T(0),
               mview(dp, S, S));
      // dS = P (dP - rowsum(dP P)) scale, zero above the diagonal.
      for (index i = 0; i < S; ++i) {
        const T* pr = p + i * S;
        T* dr = dp + i * S;
        T s = 0;
        for (index j = 0; j <= i; ++j) s += dr[j] * pr[j];
        for (index j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - s) * scale;
        for (index j = i + 1; j < S; ++j) dr[j] = T(0);
      }
      // dq = dS k; dk = dS^T q.
      be_.gemm(T(1), polar::op::n, cview(dp, S, S), polar::op::n, polar::matrix_view<const T>(qkv_head(a, b, h, 1)),
               T(0), head(0));
      be_.gemm(T(1), polar::op::t, cview(dp, S, S), polar::op::n, polar::matrix_view<const T>(qkv_head(a, b, h, 0)),
               T(0), head(1));
    }
  }

  Backend& be_;
  config c_;
  std::vector<tensor_info> info_;
  std::size_t total_ = 0;
  std::size_t wte_ = 0, wpe_ = 0, normf_ = 0, head_ = 0;
  std::vector<block> blocks_;
  std::vector<T> w_, g_;
  int B_ = 0, T_seq_ = 0;
  std::vector<int> tokens_, targets_;
  bool probabilities_ = false;
  std::vector<double> max_logit_, pair_max_;  // per block and head; per (sequence, head) of one block
  activations act_;
  backward_buffers bw_;
};

}  // namespace gpt
