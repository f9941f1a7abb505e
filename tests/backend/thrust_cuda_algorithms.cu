// The algorithms on the Thrust backend's CUDA system against the same
// algorithms on its CPP system: Newton–Schulz (standard, Gram form, a stack),
// the model-level optimizer stepping a matrix with Muon and a vector with AdamW,
// the Muon family (NorMuon, AdaMuon, PolarGrad, optax's momentum) on a stack,
// and Dion at a low rank.
// Built by the `cuda` preset; it needs a GPU to run, which CI does not have.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/orthogonalize/gram_newton_schulz.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/dion.hpp"
#include "polar/direction/muon.hpp"
#include "polar/optimizer.hpp"

namespace {
using device_backend = polar::backend::thrust<polar::system::cuda>;
using host_backend = polar::backend::thrust<polar::system::cpp>;

template <class T>
std::vector<T> random_host(polar::index n, std::uint64_t seed) {
  std::vector<T> v(static_cast<std::size_t>(n));
  host_backend().fill_random(polar::row_major_view(v.data(), 1, n), polar::rng_key{seed}, polar::distribution::normal);
  return v;
}

/// A stack of count matrices rows x cols, row-major, in a device vector.
template <class T>
polar::batch_view<T> device_batch(::thrust::device_vector<T>& v, polar::index count, polar::index rows,
                                  polar::index cols) {
  return polar::row_major_batch(::thrust::raw_pointer_cast(v.data()), count, rows, cols, polar::memory_space::device);
}

template <class T>
double max_rel_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double d = 0, r = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::abs(double(a[i]) - double(b[i])));
    r = std::max(r, std::abs(double(b[i])));
  }
  return d / (r > 0 ? r : 1);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(thrust_cuda_algorithms)

BOOST_AUTO_TEST_CASE(newton_schulz_forms_match_the_host) {
  device_backend dev;
  host_backend host;
  const polar::index count = 3, n = 48, m = 200;
  const auto g = random_host<float>(count * n * m, 1);
  ::thrust::device_vector<float> dg(g.begin(), g.end()), dout(g.size());
  std::vector<float> want(g.size()), got(g.size());
  const auto hb = polar::row_major_batch(g.data(), count, n, m);
  const auto wb = polar::row_major_batch(want.data(), count, n, m);
  const auto db = device_batch(dg, count, n, m);
  const auto ob = device_batch(dout, count, n, m);
  polar::newton_schulz sym{polar::schedules::polar_express5};
  sym.symmetric_threshold = 1;
  polar::gram_newton_schulz gram{};
  gram.fallback = false;
  for (int form = 0; form < 3; ++form) {
    BOOST_TEST_CONTEXT("form " << form) {
      if (form == 0) {
        polar::newton_schulz{}(host, polar::as_const(hb), wb);
        polar::newton_schulz{}(dev, polar::as_const(db), ob);
      } else if (form == 1) {
        sym(host, polar::as_const(hb), wb);
        sym(dev, polar::as_const(db), ob);
      } else {
        gram(host, polar::as_const(hb), wb);
        gram(dev, polar::as_const(db), ob);
      }
      cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
      ::thrust::copy(dout.begin(), dout.end(), got.begin());
      BOOST_TEST(max_rel_diff(got, want) <= 1e-4);
    }
  }
}

// TF32 products (allow_tf32): Newton-Schulz stays within a few TF32
// roundings of the float iteration, and as close to the exact polar factor
// as the schedule's own approximation allows.
BOOST_AUTO_TEST_CASE(newton_schulz_in_tf32_stays_near_the_float_iteration) {
  device_backend dev;
  host_backend host;
  const polar::index n = 256, m = 1024;
  const auto g = random_host<float>(n * m, 7);
  std::vector<float> exact(g.size()), fp32(g.size()), tf32(g.size());
  polar::svd_polar{}(host, polar::row_major_view(g.data(), n, m), polar::row_major_view(exact.data(), n, m));
  ::thrust::device_vector<float> dg(g.begin(), g.end()), dout(g.size());
  const auto gv = polar::as_const(polar::make_view(dg, n, m));
  const auto ov = polar::make_view(dout, n, m);
  const polar::newton_schulz ns{polar::schedules::polar_express5};
  BOOST_TEST(!dev.tf32());
  ns(dev, gv, ov);
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(dout.begin(), dout.end(), fp32.begin());
  dev.allow_tf32(true);
  BOOST_TEST(dev.tf32());
  ns(dev, gv, ov);
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(dout.begin(), dout.end(), tf32.begin());
  dev.allow_tf32(false);
  BOOST_TEST(max_rel_diff(tf32, fp32) <= 2e-2);
  BOOST_TEST(max_rel_diff(tf32, exact) <= max_rel_diff(fp32, exact) + 2e-2);
  BOOST_TEST(max_rel_diff(tf32, fp32) > 0);  // the products did change
}

// 16-bit Newton-Schulz on the tensor cores (ns_precision): a stack of three
// and a single matrix, tall and wide, in bfloat16 and float16, with the
// symmetric products as one GEMM and in four row blocks (one
// strided-batched call per block diagonal for the matrix, per block for
// the stack, then one mirror kernel for the stack), and the Gram form in
// float16; against the host's 16-bit iteration (float products of the same
// 16-bit operands: the sums' order differs, so a value may round to the
// neighbouring 16-bit value, which the steps carry on) and against the
// float iteration, which it stays within the host tests' bounds of
// (tests/orthogonalize: 5e-2 bfloat16, 6.5e-3 float16 for the standard
// form, 1.9e-2 for the Gram form in float16, relative Frobenius distance
// to the schedule's map; twice that here for the Gram form, whose two
// sides each carry it).
BOOST_AUTO_TEST_CASE(newton_schulz_in_16_bits_matches_the_host) {
  device_backend dev;
  host_backend host;
  const polar::index n = 64, m = 256;
  const auto g = random_host<float>(3 * n * m, 9);
  ::thrust::device_vector<float> dg(g.begin(), g.end()), dout(g.size());
  const auto frob = [](const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, r = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      d += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
      r += double(b[i]) * double(b[i]);
    }
    return std::sqrt(d / r);
  };
  const auto check = [&](auto orth, polar::index count, bool tall, double bound) {
    std::vector<float> want(std::size_t(count * n * m)), got(want.size()), fp32(want.size());
    const polar::index r = tall ? m : n, c = tall ? n : m;
    const auto hb = polar::row_major_batch(g.data(), count, r, c);
    const auto db = device_batch(dg, count, r, c);
    const auto ob = device_batch(dout, count, r, c);
    const auto prec = orth.precision;
    orth.precision = polar::ns_precision::native;
    orth(host, polar::as_const(hb), polar::row_major_batch(fp32.data(), count, r, c));
    orth.precision = prec;
    orth(host, polar::as_const(hb), polar::row_major_batch(want.data(), count, r, c));
    orth(dev, polar::as_const(db), ob);
    cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
    ::thrust::copy(dout.begin(), dout.begin() + polar::index(got.size()), got.begin());
    BOOST_TEST(frob(got, want) <= bound);
    BOOST_TEST(frob(got, fp32) <= bound);
    BOOST_TEST(frob(got, fp32) > 0);  // the products were 16-bit
  };
  for (polar::index count : {3, 1})
    for (bool tall : {false, true})
      for (int blocks : {1, 4}) {
        for (auto prec : {polar::ns_precision::bfloat16, polar::ns_precision::float16}) {
          BOOST_TEST_CONTEXT(count << (tall ? " tall" : " wide") << " precision " << int(prec) << " blocks "
                                   << blocks) {
            polar::newton_schulz ns{polar::schedules::polar_express5};
            ns.precision = prec;
            ns.blocks = blocks;
            check(ns, count, tall, prec == polar::ns_precision::bfloat16 ? 5e-2 : 6.5e-3);
          }
        }
        BOOST_TEST_CONTEXT(count << (tall ? " tall" : " wide") << " Gram form, float16, blocks " << blocks) {
          polar::gram_newton_schulz gram{polar::schedules::polar_express5};
          gram.fallback = false;
          gram.precision = polar::ns_precision::float16;
          gram.blocks = blocks;
          check(gram, count, tall, 3.8e-2);
        }
      }
}

BOOST_AUTO_TEST_CASE(an_optimizer_steps_like_the_host) {
  device_backend dev;
  host_backend host;
  const polar::index rows = 32, cols = 96;
  auto w = random_host<double>(rows * cols, 2), b = random_host<double>(rows, 3);
  const auto gw = random_host<double>(rows * cols, 4), gb = random_host<double>(rows, 5);
  ::thrust::device_vector<double> dw(w.begin(), w.end()), db(b.begin(), b.end());
  ::thrust::device_vector<double> dgw(gw.begin(), gw.end()), dgb(gb.begin(), gb.end());
  const auto dev_ptr = [](auto& v) { return ::thrust::raw_pointer_cast(v.data()); };
  polar::optimizer<device_backend, double> dp(dev);
  dp.add_group("muon", polar::muon_direction<>{}, polar::rule::matrices());
  dp.add_group("adamw", polar::adamw_direction{});
  dp.add("w", polar::tensor_view<double>(dev_ptr(dw), {rows, cols}, polar::memory_space::device));
  dp.add("b", polar::tensor_view<double>(dev_ptr(db), {rows}, polar::memory_space::device));
  polar::optimizer<host_backend, double> hp(host);
  hp.add_group("muon", polar::muon_direction<>{}, polar::rule::matrices());
  hp.add_group("adamw", polar::adamw_direction{});
  hp.add("w", polar::tensor_view<double>(w.data(), {rows, cols}));
  hp.add("b", polar::tensor_view<double>(b.data(), {rows}));
  for (int k = 0; k < 3; ++k) {
    dp.step({polar::tensor_view<const double>(dev_ptr(dgw), {rows, cols}, polar::memory_space::device),
             polar::tensor_view<const double>(dev_ptr(dgb), {rows}, polar::memory_space::device)});
    hp.step({polar::tensor_view<const double>(gw.data(), {rows, cols}), polar::tensor_view<const double>(gb.data(), {rows})});
  }
  std::vector<double> got_w(w.size()), got_b(b.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(dw.begin(), dw.end(), got_w.begin());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(db.begin(), db.end(), got_b.begin());
  BOOST_TEST(max_rel_diff(got_w, w) <= 1e-12);
  BOOST_TEST(max_rel_diff(got_b, b) <= 1e-12);
}

namespace {
/// Three steps of direction d on a 2 x 16 x 40 stack on both systems;
/// returns the largest difference over the largest entry.
template <class Direction>
double family_gap(const Direction& d) {
  device_backend dev;
  host_backend host;
  const polar::index count = 2, rows = 16, cols = 40, n = count * rows * cols;
  auto w = random_host<double>(n, 6);
  const auto g = random_host<double>(n, 7);
  ::thrust::device_vector<double> dw(w.begin(), w.end()), dg(g.begin(), g.end());
  const polar::tensor_view<double> dwt(::thrust::raw_pointer_cast(dw.data()), {count, rows, cols}, polar::memory_space::device);
  const polar::tensor_view<const double> dgt(::thrust::raw_pointer_cast(dg.data()), {count, rows, cols}, polar::memory_space::device);
  const polar::tensor_view<double> hwt(w.data(), {count, rows, cols});
  const polar::tensor_view<const double> hgt(g.data(), {count, rows, cols});
  auto ds = d.init(dev, dwt);
  auto hs = d.init(host, hwt);
  for (int k = 0; k < 3; ++k) {
    d.step(dev, dwt, dgt, ds);
    d.step(host, hwt, hgt, hs);
  }
  std::vector<double> got(w.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(dw.begin(), dw.end(), got.begin());
  return max_rel_diff(got, w);
}
}  // namespace

BOOST_AUTO_TEST_CASE(the_muon_family_steps_like_the_host) {
  BOOST_TEST(family_gap(polar::muon_direction<polar::newton_schulz, void, polar::normuon>{}) <= 1e-12);
  BOOST_TEST(family_gap(polar::muon_direction<polar::newton_schulz, void, polar::adamuon>{}) <= 1e-12);
  polar::muon_direction<polar::newton_schulz, void, polar::polargrad> pg;
  pg.scale = polar::scale_rule::none;
  BOOST_TEST(family_gap(pg) <= 1e-12);
  polar::muon_direction<> optax;
  optax.bias_correction = true;
  BOOST_TEST(family_gap(optax) <= 1e-12);
}

BOOST_AUTO_TEST_CASE(dion_steps_like_the_host) {
  // Q starts from the same counter-based draws on both systems, and the QR's
  // non-negative diagonal makes P unique, so the steps agree to rounding.
  device_backend dev;
  host_backend host;
  const polar::index rows = 48, cols = 80;
  auto w = random_host<double>(rows * cols, 8);
  const auto g = random_host<double>(rows * cols, 9);
  ::thrust::device_vector<double> dw(w.begin(), w.end()), dg(g.begin(), g.end());
  const auto dwv = polar::row_major_view(::thrust::raw_pointer_cast(dw.data()), rows, cols, -1, polar::memory_space::device);
  const auto dgv = polar::as_const(polar::row_major_view(::thrust::raw_pointer_cast(dg.data()), rows, cols, -1, polar::memory_space::device));
  const auto hwv = polar::row_major_view(w.data(), rows, cols);
  const auto hgv = polar::as_const(polar::row_major_view(g.data(), rows, cols));
  polar::dion_direction d;
  d.rank = 8;
  auto ds = d.init(dev, polar::as_const(dwv));
  auto hs = d.init(host, polar::as_const(hwv));
  for (int k = 0; k < 3; ++k) {
    d.step(dev, dwv, dgv, ds);
    d.step(host, hwv, hgv, hs);
  }
  std::vector<double> got(w.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(dw.begin(), dw.end(), got.begin());
  BOOST_TEST(max_rel_diff(got, w) <= 1e-10);
}

BOOST_AUTO_TEST_SUITE_END()
