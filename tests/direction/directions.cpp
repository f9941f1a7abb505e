// Tests of polar/direction/sgd.hpp and adamw.hpp, and of the model-level
// optimizer's common setup (polar/optimizer.hpp: Muon for matrices, AdamW
// for the rest): each direction against a plain loop written from the
// formulas, tensors of several ranks, hyperparameter and input checks that
// leave everything unchanged, and the routing of a model's tensors between
// Muon and AdamW. On the Eigen backend and Thrust's OMP
// and CPP systems.
#include <Eigen/Dense>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/direction/muon.hpp"
#include "polar/optimizer.hpp"
#include "support.hpp"

namespace {

using muon = polar::muon_direction<>;

// Muon for matrices, stacks and kernels, AdamW for the rest: the routing
// Muon's authors use.
template <class B, class T>
void muon_and_adamw(polar::optimizer<B, T>& opt) {
  opt.add_group("muon", muon{}, polar::rule::matrices());
  opt.add_group("adamw", polar::adamw_direction{});
}

template <class T>
using rmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using backends = polar_test::host_backends;

template <class T>
polar::matrix_view<const T> cview(const rmat<T>& m) {
  return polar::make_view(m);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(direction_sgd_adamw)

BOOST_AUTO_TEST_CASE_TEMPLATE(sgd_and_momentum_follow_their_formulas, B, backends) {
  B be;
  rmat<double> w0(5, 7), g1(5, 7), g2(5, 7);
  w0.setRandom();
  g1.setRandom();
  g2.setRandom();
  const double lr = 0.1, wd = 0.3, mu = 0.8;
  {
    polar::sgd_direction d{lr, wd};
    rmat<double> w = w0;
    auto s = d.init(be, cview(w));
    d.step(be, polar::make_view(w), cview(g1), s);
    BOOST_TEST((w - (w0 * (1 - lr * wd) - lr * g1)).norm() <= 1e-14);
  }
  for (auto kind : {polar::momentum_kind::heavy_ball, polar::momentum_kind::ema})
    for (bool nesterov : {false, true}) {
      BOOST_TEST_CONTEXT("heavy ball " << (kind == polar::momentum_kind::heavy_ball) << " nesterov " << nesterov) {
        polar::momentum_direction d{lr, mu, nesterov, kind, wd};
        rmat<double> w = w0, want = w0, buf = rmat<double>::Zero(5, 7);
        auto s = d.init(be, cview(w));
        for (const rmat<double>* g : {&g1, &g2}) {
          d.step(be, polar::make_view(w), cview(*g), s);
          const double c = kind == polar::momentum_kind::ema ? 1 - mu : 1.0;
          buf = mu * buf + c * *g;
          rmat<double> u = buf;
          if (nesterov)
            u = kind == polar::momentum_kind::ema ? rmat<double>((1 - mu) * *g + mu * buf) : rmat<double>(*g + mu * buf);
          want = want * (1 - lr * wd) - lr * u;
        }
        BOOST_TEST((w - want).norm() <= 1e-14);
        BOOST_TEST(s.steps == 2);
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(adamw_follows_its_formula_with_bias_correction, B, backends) {
  B be;
  rmat<double> w0(6, 9);
  w0.setRandom();
  polar::adamw_direction d{0.01, 0.9, 0.99, 1e-8, 0.1};
  rmat<double> w = w0, want = w0, m = rmat<double>::Zero(6, 9), v = m;
  auto s = d.init(be, cview(w));
  for (int t = 1; t <= 4; ++t) {
    rmat<double> g(6, 9);
    g.setRandom();
    d.step(be, polar::make_view(w), cview(g), s);
    m = 0.9 * m + 0.1 * g;
    v = 0.99 * v + 0.01 * g.cwiseProduct(g);
    const rmat<double> mh = m / (1 - std::pow(0.9, t)), vh = v / (1 - std::pow(0.99, t));
    want = want * (1 - 0.01 * 0.1) - 0.01 * mh.cwiseQuotient((vh.cwiseSqrt().array() + 1e-8).matrix());
  }
  BOOST_TEST((w - want).cwiseAbs().maxCoeff() <= 1e-14);
  BOOST_TEST(s.steps == 4);
  // The first step moves every element by lr in the direction of -sign(g)
  // (plus decay): Adam's hallmark.
  rmat<float> a = rmat<float>::Zero(3, 3), ga(3, 3);
  ga << 1e-6f, -2.f, 3e3f, -4.f, 5.f, -6e-3f, 7.f, -8.f, 9.f;
  polar::adamw_direction plain{0.5, 0.9, 0.999, 1e-12, 0.0};
  auto sa = plain.init(be, cview(a));
  plain.step(be, polar::make_view(a), cview(ga), sa);
  for (int i = 0; i < 9; ++i) BOOST_TEST(std::abs(a.data()[i] + 0.5f * (ga.data()[i] > 0 ? 1.f : -1.f)) <= 1e-4f);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(tensors_of_any_rank_step_elementwise, B, backends) {
  B be;
  std::vector<float> w(2 * 3 * 4, 1.0f), g(w.size());
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = float(i) - 10.f;
  polar::momentum_direction d{0.5, 0.0, false, polar::momentum_kind::heavy_ball, 0.0};
  const polar::tensor_view<float> wt(w.data(), {2, 3, 4});
  auto s = d.init(be, wt);
  d.step(be, wt, polar::tensor_view<const float>(g.data(), {2, 3, 4}), s);
  for (std::size_t i = 0; i < w.size(); ++i) BOOST_TEST(w[i] == 1.0f - 0.5f * g[i]);
  polar_test::check_throws<polar::shape_error>(
      [&] { d.step(be, wt, polar::tensor_view<const float>(g.data(), {4, 3, 2}), s); },
      {"polar::momentum::step", "W is 2x3x4", "G is 4x3x2"});
}

BOOST_AUTO_TEST_CASE(bad_hyperparameters_and_gradients_change_nothing) {
  polar::backend::eigen be;
  rmat<float> w(4, 4), g(4, 4);
  w.setRandom();
  g.setRandom();
  const rmat<float> w0 = w;
  polar::adamw_direction d;
  auto s = d.init(be, cview(w));
  auto bad = d;
  bad.eps = 0;
  polar_test::check_throws<polar::value_error>([&] { bad.step(be, polar::make_view(w), cview(g), s); },
                                               {"polar::adamw::step", "eps must be finite and > 0, got 0"});
  bad = d;
  bad.beta2 = 1.0;
  polar_test::check_throws<polar::value_error>([&] { bad.step(be, polar::make_view(w), cview(g), s); },
                                               {"beta2 must be in [0, 1), got 1"});
  g(1, 2) = std::numeric_limits<float>::infinity();
  polar_test::check_throws<polar::non_finite_error>([&] { d.step(be, polar::make_view(w), cview(g), s); },
                                                    {"polar::adamw::step", "4x4", "NaN or infinity"});
  BOOST_TEST((w - w0).norm() == 0.0f);
  BOOST_TEST(s.steps == 0);
  polar::momentum_direction m;
  m.momentum = -0.1;
  auto ms = m.init(be, cview(w));
  g.setRandom();
  polar_test::check_throws<polar::value_error>([&] { m.step(be, polar::make_view(w), cview(g), ms); },
                                               {"polar::momentum::step", "momentum must be in [0, 1), got -0.1"});
  polar::sgd_direction sg{-1.0};
  auto ss = sg.init(be, cview(w));
  polar_test::check_throws<polar::value_error>([&] { sg.step(be, polar::make_view(w), cview(g), ss); },
                                               {"polar::sgd::step", "lr must be finite and >= 0, got -1"});
  BOOST_TEST((w - w0).norm() == 0.0f);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(muon_and_adamw_routing)

BOOST_AUTO_TEST_CASE_TEMPLATE(routes_matrices_to_muon_and_the_rest_to_adamw, B, backends) {
  B be;
  rmat<float> w1(16, 32), g1(16, 32), emb(20, 8), gemb(20, 8);
  std::vector<float> bias(16, 0.5f), gbias(16), experts(3 * 8 * 12), gexp(experts.size());
  std::vector<float> conv(4 * 2 * 3 * 3), gconv(conv.size());
  be.fill_random(polar::make_view(w1), polar::rng_key{1}, polar::distribution::normal);
  be.fill_random(polar::make_view(g1), polar::rng_key{2}, polar::distribution::normal);
  be.fill_random(polar::make_view(emb), polar::rng_key{3}, polar::distribution::normal);
  be.fill_random(polar::make_view(gemb), polar::rng_key{4}, polar::distribution::normal);
  for (auto* v : {&gbias, &experts, &gexp, &conv, &gconv})
    be.fill_random(polar::row_major_view(v->data(), 1, polar::index(v->size())), polar::rng_key{5, 0, std::uint32_t(v->size())},
                   polar::distribution::normal);

  polar::optimizer<B, float> params(be);
  muon_and_adamw(params);
  auto& matrix_direction = params.template settings<muon>("muon");
  auto& other_direction = params.template settings<polar::adamw_direction>("adamw");
  matrix_direction.lr = 0.05;
  other_direction.lr = 0.01;
  const rmat<float> w1_0 = w1, emb_0 = emb;
  const std::vector<float> bias_0 = bias, experts_0 = experts, conv_0 = conv;
  params.add("fc.weight", polar::make_view(w1));
  params.add("fc.bias", polar::tensor_view<float>(bias.data(), {16}));
  params.add("embed", polar::make_view(emb), "adamw");
  params.add("experts", polar::tensor_view<float>(experts.data(), {3, 8, 12}));
  params.add("conv", polar::tensor_view<float>(conv.data(), {4, 2, 3, 3}));
  BOOST_TEST(params.size() == 5);
  BOOST_TEST(params.group_of(0).name() == "muon");
  BOOST_TEST(params.group_of(1).name() == "adamw");
  BOOST_TEST(params.group_of(2).name() == "adamw");
  BOOST_TEST(params.group_of(3).name() == "muon");
  BOOST_TEST(params.group_of(4).name() == "muon");
  BOOST_TEST(params.template state_of<muon>(3).count == 3);
  BOOST_TEST(params.template state_of<muon>(4).cols == 18);

  params.step({polar::make_view(g1), polar::tensor_view<const float>(gbias.data(), {16}), polar::make_view(gemb),
               polar::tensor_view<const float>(gexp.data(), {3, 8, 12}),
               polar::tensor_view<const float>(gconv.data(), {4, 2, 3, 3})});
  BOOST_TEST(params.steps() == 1);

  // The same steps taken directly with the directions give the same bits.
  auto ref_w1 = w1_0;
  auto s1 = matrix_direction.init(be, cview(ref_w1));
  matrix_direction.step(be, polar::make_view(ref_w1), cview(g1), s1);
  BOOST_TEST((ref_w1 - w1).norm() == 0.0f);
  auto ref_emb = emb_0;
  auto se = other_direction.init(be, cview(ref_emb));
  other_direction.step(be, polar::make_view(ref_emb), cview(gemb), se);
  BOOST_TEST((ref_emb - emb).norm() == 0.0f);
  auto ref_bias = bias_0;
  const polar::tensor_view<float> rb(ref_bias.data(), {16});
  auto sb = other_direction.init(be, rb);
  other_direction.step(be, rb, polar::tensor_view<const float>(gbias.data(), {16}), sb);
  BOOST_TEST(ref_bias == bias);
  auto ref_exp = experts_0;
  const polar::tensor_view<float> rx(ref_exp.data(), {3, 8, 12});
  auto sx = matrix_direction.init(be, rx);
  matrix_direction.step(be, rx, polar::tensor_view<const float>(gexp.data(), {3, 8, 12}), sx);
  BOOST_TEST(ref_exp == experts);
  BOOST_TEST(conv != conv_0);
}

BOOST_AUTO_TEST_CASE(a_bad_gradient_anywhere_changes_nothing) {
  polar::backend::eigen be;
  rmat<double> w(6, 10), g(6, 10);
  std::vector<double> b(6, 1.0), gb(6, 0.5);
  w.setRandom();
  g.setRandom();
  const rmat<double> w0 = w;
  polar::optimizer<polar::backend::eigen, double> params(be);
  muon_and_adamw(params);
  params.add("w", polar::make_view(w));
  params.add("b", polar::tensor_view<double>(b.data(), {6}));
  gb[5] = std::numeric_limits<double>::quiet_NaN();
  polar_test::check_throws<polar::non_finite_error>(
      [&] { params.step({polar::make_view(g), polar::tensor_view<const double>(gb.data(), {6})}); },
      {"polar::optimizer::step", "gradients of 'b' (6)", "NaN", "nothing was stepped"});
  BOOST_TEST((w - w0).norm() == 0.0);
  BOOST_TEST(params.state_of<muon>(0).steps == 0);
  gb[5] = 0.0;
  polar_test::check_throws<polar::shape_error>(
      [&] { params.step({polar::make_view(g)}); }, {"polar::optimizer::step", "got 1 gradients for 2 tensors"});
  polar_test::check_throws<polar::shape_error>(
      [&] { params.step({polar::make_view(g), polar::tensor_view<const double>(gb.data(), {3, 2})}); },
      {"gradient of 'b' is 3x2 but the tensor is 6"});
  polar_test::check_throws<polar::value_error>([&] { params.add("w", polar::make_view(g)); },
                                               {"polar::optimizer::add", "'w' is already there"});
  std::vector<double> v(8);
  polar_test::check_throws<polar::unsupported_error>(
      [&] { params.add("v", polar::tensor_view<double>(v.data(), {8}), "muon"); },
      {"polar::optimizer::add", "1-D tensor (8)", "AdamW"});
  BOOST_TEST(params.size() == 2);
  params.step({polar::make_view(g), polar::tensor_view<const double>(gb.data(), {6})});
  BOOST_TEST((w - w0).norm() > 0.0);
}

BOOST_AUTO_TEST_CASE(trains_a_linear_model) {
  // Least squares y = W x + b with a known W*, b*: Muon on W, AdamW on b,
  // full-batch gradients. The loss falls by three orders of magnitude.
  polar::backend::eigen be;
  const int n = 256, din = 16, dout = 8;
  rmat<double> x(n, din), wstar(dout, din), w = rmat<double>::Zero(dout, din), gw(dout, din);
  be.fill_random(polar::make_view(x), polar::rng_key{11}, polar::distribution::normal);
  be.fill_random(polar::make_view(wstar), polar::rng_key{12}, polar::distribution::normal);
  Eigen::VectorXd bstar = Eigen::VectorXd::LinSpaced(dout, -1, 1), b = Eigen::VectorXd::Zero(dout), gb(dout);
  const rmat<double> y = (x * wstar.transpose()).rowwise() + bstar.transpose();
  polar::optimizer<polar::backend::eigen, double> params(be);
  muon_and_adamw(params);
  params.add("w", polar::make_view(w));
  params.add("b", polar::tensor_view<double>(b.data(), {dout}));
  auto& matrix_direction = params.settings<muon>("muon");
  auto& other_direction = params.settings<polar::adamw_direction>("adamw");
  other_direction.weight_decay = 0;
  auto loss = [&] { return 0.5 * ((x * w.transpose()).rowwise() + b.transpose() - y).squaredNorm() / n; };
  const double start = loss();
  for (int k = 0; k < 300; ++k) {
    const rmat<double> r = ((x * w.transpose()).rowwise() + b.transpose() - y) / n;
    gw = r.transpose() * x;
    gb = r.colwise().sum().transpose();
    matrix_direction.lr = 0.2 * std::pow(0.985, k);
    other_direction.lr = 0.1 * std::pow(0.985, k);
    params.step({polar::make_view(static_cast<const rmat<double>&>(gw)), polar::tensor_view<const double>(gb.data(), {dout})});
  }
  BOOST_TEST(loss() <= 1e-3 * start);
}

BOOST_AUTO_TEST_SUITE_END()
