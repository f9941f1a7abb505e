// tests/gpt/gradients.cpp: the GPT example's hand-written backward pass
// (examples/gpt/model.hpp) against central differences of its forward pass,
// in double, for every parameter tensor; the causal mask; the same model in
// float; its errors.
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends.hpp"
#include "gpt/model.hpp"

namespace {

// Small enough that every element can be perturbed, large enough that
// every code path runs: two blocks, two heads, sequences of 5 with a
// context of 6 (positions past T are unused).
gpt::config small_config() {
  gpt::config c;
  c.vocab = 7, c.context = 6, c.width = 8, c.heads = 2, c.layers = 2, c.mlp = 2;
  return c;
}

void tokens_for(int B, int T, int vocab, std::uint32_t seed, std::vector<int>& x, std::vector<int>& y) {
  x.resize(std::size_t(B) * std::size_t(T));
  y.resize(x.size());
  std::uint32_t s = seed;
  for (std::size_t i = 0; i < x.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = int((s >> 16) % std::uint32_t(vocab));
    s = s * 1664525u + 1013904223u;
    y[i] = int((s >> 16) % std::uint32_t(vocab));
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(gpt_model)

// Every element of every tensor: the backward pass's derivative against
// (L(w + h) - L(w - h)) / 2h with h = 1e-5, in double. The error is measured
// per tensor as |g - fd| / |g| (Euclidean norms), as llm.c checks GPT-2's
// tensors; the bar is 1e-6. The central difference's own error is O(h^2)
// (1e-10 relative) plus rounding (1e-16 / h), far below the bar.
BOOST_AUTO_TEST_CASE_TEMPLATE(backward_matches_central_differences, Backend, polar_test::host_backends) {
  Backend be;
  const gpt::config c = small_config();
  gpt::model<Backend, double> m(be, c, 11);
  const int B = 2, T = 5;
  std::vector<int> x, y;
  tokens_for(B, T, c.vocab, 3, x, y);
  const double loss = m.forward(x.data(), y.data(), B, T);
  BOOST_TEST(std::isfinite(loss));
  m.backward();
  const std::vector<double> g = m.gradients();
  auto& w = m.weights();
  const double h = 1e-5;
  double worst = 0;
  std::string worst_name;
  for (const auto& t : m.tensors()) {
    double diff = 0, norm = 0;
    for (std::size_t e = t.offset; e < t.offset + t.size(); ++e) {
      const double keep = w[e];
      w[e] = keep + h;
      const double up = m.forward(x.data(), y.data(), B, T);
      w[e] = keep - h;
      const double down = m.forward(x.data(), y.data(), B, T);
      w[e] = keep;
      const double fd = (up - down) / (2 * h);
      diff += (g[e] - fd) * (g[e] - fd);
      norm += g[e] * g[e];
    }
    const double rel = std::sqrt(diff / norm);
    BOOST_TEST_INFO("tensor " << t.name << " (" << t.size() << " elements): |g| = " << std::sqrt(norm)
                              << ", |g - fd| / |g| = " << rel);
    BOOST_TEST(norm > 0);  // every tensor takes part in the loss
    BOOST_TEST(rel <= 1e-6);
    if (rel > worst) worst = rel, worst_name = t.name;
  }
  BOOST_TEST_MESSAGE("gpt_model: " << Backend::name() << ": the largest |g - fd| / |g| of a tensor is " << worst
                                   << " (" << worst_name << ")");
  // The positions past T (row 5 of wpe) take no part: exactly zero.
  const auto& wpe = m.tensors()[1];
  BOOST_TEST(wpe.name == "wpe");
  for (polar::index j = 0; j < c.width; ++j) BOOST_TEST(g[wpe.offset + std::size_t(5 * c.width + j)] == 0.0);
}

// A token changes the logits at its own position and after, never before.
BOOST_AUTO_TEST_CASE(attention_is_causal) {
  polar::backend::eigen be;
  const gpt::config c = small_config();
  gpt::model<polar::backend::eigen, double> m(be, c, 5);
  const int T = 6;
  std::vector<int> x = {1, 2, 3, 4, 5, 6};
  m.forward(x.data(), nullptr, 1, T);
  const std::vector<double> before(m.logits(), m.logits() + T * c.vocab);
  x[3] = 0;
  m.forward(x.data(), nullptr, 1, T);
  for (int i = 0; i < T; ++i) {
    double change = 0;
    for (int v = 0; v < c.vocab; ++v) change = std::max(change, std::abs(m.logits()[i * c.vocab + v] - before[std::size_t(i * c.vocab + v)]));
    BOOST_TEST_INFO("position " << i);
    if (i < 3)
      BOOST_TEST(change == 0.0);
    else
      BOOST_TEST(change > 1e-6);
  }
}

// The same weights in float and double give the same loss and gradients to
// float's precision; at initialization the loss is near log V.
BOOST_AUTO_TEST_CASE(float_agrees_with_double) {
  polar::backend::eigen be;
  gpt::config c;
  c.vocab = 65, c.context = 32, c.width = 32, c.heads = 4, c.layers = 2;
  gpt::model<polar::backend::eigen, double> md(be, c, 9);
  gpt::model<polar::backend::eigen, float> mf(be, c, 9);
  for (std::size_t i = 0; i < md.weights().size(); ++i) mf.weights()[i] = float(md.weights()[i]);
  std::vector<int> x, y;
  tokens_for(4, 32, c.vocab, 8, x, y);
  const double ld = md.forward(x.data(), y.data(), 4, 32);
  const double lf = mf.forward(x.data(), y.data(), 4, 32);
  BOOST_TEST(std::abs(ld - lf) <= 1e-5 * ld);
  BOOST_TEST(std::abs(ld - std::log(65.0)) < 1.5);
  md.backward();
  mf.backward();
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < md.gradients().size(); ++i) {
    const double a = md.gradients()[i], b = mf.gradients()[i];
    diff += (a - b) * (a - b), norm += a * a;
  }
  BOOST_TEST(std::sqrt(diff / norm) < 1e-4);
}

// The tensors the optimizer sees: names, shapes, and views onto the flat vectors.
BOOST_AUTO_TEST_CASE(tensors_and_views) {
  polar::backend::eigen be;
  const gpt::config c = small_config();
  gpt::model<polar::backend::eigen, float> m(be, c, 1);
  std::size_t total = 0;
  std::vector<std::string> names;
  for (std::size_t k = 0; k < m.tensors().size(); ++k) {
    const auto& t = m.tensors()[k];
    BOOST_TEST(t.offset == total);
    total += t.size();
    names.push_back(t.name);
    const auto v = m.view(k);
    BOOST_TEST(v.is_tensor() == t.vector());
    BOOST_TEST(v.elements().data() == m.weights().data() + t.offset);
  }
  BOOST_TEST(total == m.parameter_count());
  const std::vector<std::string> expect = {"wte", "wpe", "h0.norm1", "h0.wq", "h0.wk", "h0.wv", "h0.wo",
                                           "h0.norm2", "h0.w1", "h0.w2", "h1.norm1", "h1.wq", "h1.wk", "h1.wv",
                                           "h1.wo", "h1.norm2", "h1.w1", "h1.w2", "normf", "head"};
  BOOST_TEST(names == expect, boost::test_tools::per_element());
}

// The largest logits the forward pass records are the largest q.k/sqrt(hd)
// over causal pairs (checked here from the weights, the long way round for
// one head), and after polar::qk_clip with tau under them the next forward
// on the same tokens has each clipped head's largest logit at tau.
BOOST_AUTO_TEST_CASE(qk_clip_caps_the_logits) {
  polar::backend::eigen be;
  gpt::config c = small_config();
  c.context = 6;
  gpt::model<polar::backend::eigen, double> m(be, c, 21);
  std::vector<int> x, y;
  tokens_for(2, 6, c.vocab, 4, x, y);
  m.forward(x.data(), y.data(), 2, 6);
  const std::vector<double> s0(m.max_logits(1), m.max_logits(1) + c.heads);
  std::vector<double> before0(m.max_logits(0), m.max_logits(0) + c.heads);
  // Block 0, head 1, from the weights: a = rmsnorm(wte[x] + wpe[t]) g1,
  // q = a Wq^T and k = a Wk^T on the head's columns.
  {
    const auto& w = m.weights();
    const auto& ti = m.tensors();
    const polar::index d = c.width, hd = d / c.heads, h = 1;
    const auto row = [&](std::size_t k, polar::index r) { return w.data() + ti[k].offset + std::size_t(r * d); };
    double best = -1e300;
    for (int b = 0; b < 2; ++b) {
      std::vector<std::vector<double>> q(6, std::vector<double>(std::size_t(hd))), k = q;
      for (int t = 0; t < 6; ++t) {
        std::vector<double> a(static_cast<std::size_t>(d));
        double ss = 0;
        for (polar::index j = 0; j < d; ++j) {
          a[std::size_t(j)] = row(0, x[std::size_t(b * 6 + t)])[j] + row(1, t)[j];
          ss += a[std::size_t(j)] * a[std::size_t(j)];
        }
        const double r = 1 / std::sqrt(ss / double(d) + 1e-6);
        for (polar::index j = 0; j < d; ++j) a[std::size_t(j)] *= r * w[ti[2].offset + std::size_t(j)];
        for (polar::index e = 0; e < hd; ++e)
          for (polar::index j = 0; j < d; ++j) {
            q[std::size_t(t)][std::size_t(e)] += a[std::size_t(j)] * row(m.query_index(0), h * hd + e)[j];
            k[std::size_t(t)][std::size_t(e)] += a[std::size_t(j)] * row(m.key_index(0), h * hd + e)[j];
          }
      }
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (polar::index e = 0; e < hd; ++e) dot += q[std::size_t(i)][std::size_t(e)] * k[std::size_t(j)][std::size_t(e)];
          best = std::max(best, dot / std::sqrt(double(hd)));
        }
    }
    BOOST_TEST(before0[1] == best, boost::test_tools::tolerance(1e-12));
  }
  polar::qk_clip clip;
  clip.tau = 0.5 * std::max(s0[0], s0[1]);
  const auto wq = m.view(m.query_index(1)).matrix(), wk = m.view(m.key_index(1)).matrix();
  BOOST_TEST(m.tensors()[m.query_index(1)].name == "h1.wq");
  BOOST_TEST(m.tensors()[m.key_index(1)].name == "h1.wk");
  const polar::index n = clip.apply(be, wq, wk, c.heads, s0.data());
  BOOST_TEST(n >= 1);
  m.forward(x.data(), y.data(), 2, 6);
  for (int h = 0; h < c.heads; ++h) {
    BOOST_TEST_INFO("head " << h << ": " << s0[std::size_t(h)] << " -> " << m.max_logits(1)[h]);
    if (s0[std::size_t(h)] > clip.tau)
      BOOST_TEST(m.max_logits(1)[h] == clip.tau, boost::test_tools::tolerance(1e-12));
    else
      BOOST_TEST(m.max_logits(1)[h] == s0[std::size_t(h)], boost::test_tools::tolerance(1e-12));
    BOOST_TEST(m.max_logits(0)[h] == before0[std::size_t(h)]);  // block 0 comes first: untouched
  }
}

BOOST_AUTO_TEST_CASE(errors_name_the_values) {
  polar::backend::eigen be;
  gpt::config c = small_config();
  c.heads = 3;
  using fmodel = gpt::model<polar::backend::eigen, float>;
  BOOST_CHECK_EXCEPTION(fmodel(be, c, 1), std::invalid_argument,
                        [](const std::invalid_argument& e) {
                          return std::string(e.what()).find("width (8) must be a positive multiple of heads (3)") !=
                                 std::string::npos;
                        });
  c = small_config();
  gpt::model<polar::backend::eigen, float> m(be, c, 1);
  std::vector<int> x(7, 0), y(7, 0);
  BOOST_CHECK_EXCEPTION(m.forward(x.data(), y.data(), 1, 7), std::invalid_argument, [](const std::invalid_argument& e) {
    return std::string(e.what()).find("T = 7 (1 <= T <= context = 6)") != std::string::npos;
  });
  x[2] = 7;
  BOOST_CHECK_EXCEPTION(m.forward(x.data(), y.data(), 1, 6), std::invalid_argument, [](const std::invalid_argument& e) {
    return std::string(e.what()).find("token 7 at 2 is outside the vocabulary of 7") != std::string::npos;
  });
  x[2] = 0;
  y[4] = -1;
  BOOST_CHECK_EXCEPTION(m.forward(x.data(), y.data(), 1, 6), std::invalid_argument, [](const std::invalid_argument& e) {
    return std::string(e.what()).find("target -1 at 4") != std::string::npos;
  });
  BOOST_CHECK_THROW(m.backward(), std::logic_error);  // the failed forward left nothing to differentiate
}

BOOST_AUTO_TEST_SUITE_END()
