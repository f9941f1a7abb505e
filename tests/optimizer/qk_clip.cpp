// tests/optimizer/qk_clip.cpp: QK-clip (polar/qk_clip.hpp) against its
// formula: gamma_h = min(1, tau / S_h), queries times gamma^alpha, keys
// times gamma^(1 - alpha); grouped keys take their group's smallest factor;
// both orientations; every backend on the host; the errors write nothing.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "backends.hpp"
#include "polar/qk_clip.hpp"

namespace {

std::vector<double> ramp(polar::index n, double start) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = start + 0.25 * double(i % 7) - 0.125 * double(i % 3);
  return v;
}

template <class T>
polar::matrix_view<T> view(std::vector<T>& v, polar::index r, polar::index c) {
  return polar::matrix_view<T>(v.data(), r, c, c, 1);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(qk_clip)

// Three query heads of size 2 over a model width of 3; head 0 under tau,
// heads 1 and 2 over it. Each row of W_q and W_k is checked against the
// formula; the product q.k of a clipped head scales by exactly gamma.
BOOST_AUTO_TEST_CASE_TEMPLATE(rescales_each_head_by_its_factor, Backend, polar_test::host_backends) {
  Backend be;
  const polar::index heads = 3, hd = 2, d = 3;
  const std::vector<double> wq0 = ramp(heads * hd * d, 0.5), wk0 = ramp(heads * hd * d, -0.25);
  std::vector<double> wq = wq0, wk = wk0;
  const std::vector<double> s = {80.0, 150.0, 400.0};
  polar::qk_clip clip;
  clip.alpha = 0.3;
  const polar::index n = clip.apply(be, view(wq, heads * hd, d), view(wk, heads * hd, d), s);
  BOOST_TEST(n == 2);
  for (polar::index h = 0; h < heads; ++h) {
    const double g = std::min(1.0, 100.0 / s[std::size_t(h)]);
    for (polar::index i = h * hd * d; i < (h + 1) * hd * d; ++i) {
      BOOST_TEST(wq[std::size_t(i)] == wq0[std::size_t(i)] * std::pow(g, 0.3), boost::test_tools::tolerance(1e-15));
      BOOST_TEST(wk[std::size_t(i)] == wk0[std::size_t(i)] * std::pow(g, 0.7), boost::test_tools::tolerance(1e-15));
    }
  }
  BOOST_TEST(clip.factor(80.0) == 1.0);
  BOOST_TEST(clip.factor(400.0) == 0.25);
}

// Grouped-query attention: 4 query heads, 2 key heads. Key head 0 serves
// query heads 0 and 1 and takes the smaller factor; key head 1's group is
// under tau and is left alone. Heads as columns: the (in x out) layout.
BOOST_AUTO_TEST_CASE(grouped_keys_and_column_heads) {
  polar::backend::eigen be;
  const polar::index d = 5, hd = 3;
  std::vector<float> wq(std::size_t(d * 4 * hd)), wk(std::size_t(d * 2 * hd));
  for (std::size_t i = 0; i < wq.size(); ++i) wq[i] = 1.0f + float(i % 5);
  for (std::size_t i = 0; i < wk.size(); ++i) wk[i] = 2.0f + float(i % 3);
  const std::vector<float> wq0 = wq, wk0 = wk;
  const std::vector<double> s = {200.0, 125.0, 50.0, 99.0};
  polar::qk_clip clip;
  clip.axis = polar::head_axis::cols;
  BOOST_TEST(clip.apply(be, view(wq, d, 4 * hd), view(wk, d, 2 * hd), s) == 2);
  for (polar::index i = 0; i < d; ++i)
    for (polar::index j = 0; j < 4 * hd; ++j) {
      const double g = std::min(1.0, 100.0 / s[std::size_t(j / hd)]);
      const std::size_t at = std::size_t(i * 4 * hd + j);
      BOOST_TEST(wq[at] == float(double(wq0[at]) * std::sqrt(g)), boost::test_tools::tolerance(1e-6f));
    }
  for (polar::index i = 0; i < d; ++i)
    for (polar::index j = 0; j < 2 * hd; ++j) {
      const double g = j < hd ? 0.5 : 1.0;  // min(100/200, 100/125) for key head 0; none for 1
      const std::size_t at = std::size_t(i * 2 * hd + j);
      BOOST_TEST(wk[at] == float(double(wk0[at]) * std::sqrt(g)), boost::test_tools::tolerance(1e-6f));
    }
}

BOOST_AUTO_TEST_CASE(errors_write_nothing) {
  polar::backend::eigen be;
  std::vector<double> wq(12, 1.0), wk(12, 1.0);
  const auto q = view(wq, 4, 3), k = view(wk, 4, 3);
  const auto fails = [&](const polar::qk_clip& c, polar::matrix_view<double> qq, polar::matrix_view<double> kk,
                         std::vector<double> s, const std::string& text) {
    try {
      c.apply(be, qq, kk, s);
      BOOST_ERROR("no error for: " << text);
    } catch (const polar::error& e) {
      BOOST_TEST_INFO(e.what());
      BOOST_TEST(std::string(e.what()).find(text) != std::string::npos);
      BOOST_TEST(std::string(e.what()).find("polar::qk_clip::apply") != std::string::npos);
    }
    for (double x : wq) BOOST_TEST(x == 1.0);
    for (double x : wk) BOOST_TEST(x == 1.0);
  };
  polar::qk_clip c;
  fails(c, q, k, {200.0, 200.0, 200.0}, "heads (3) must be >= 1 and divide W_q's rows (4)");
  fails(c, q, k, {}, "heads (0)");
  fails(c, q, k, {200.0, std::nan("")}, "the largest logit of head 1 is nan");
  fails(c, q, view(wk, 3, 4), {200.0, 200.0}, "their model dimensions (columns) differ");
  fails(c, q, view(wk, 3, 3), {200.0, 200.0, 200.0, 200.0}, "W_k's rows (3) must be a number of heads of size 1");
  polar::qk_clip bad_tau;
  bad_tau.tau = 0;
  fails(bad_tau, q, k, {200.0, 200.0}, "tau must be finite and > 0, got 0");
  polar::qk_clip bad_alpha;
  bad_alpha.alpha = 1.5;
  fails(bad_alpha, q, k, {200.0, 200.0}, "alpha must be in [0, 1], got 1.5");
}

BOOST_AUTO_TEST_SUITE_END()
