// Steps in a deferred_checks scope on Thrust's CUDA system: a whole step of
// Muon, AdamW, SGD with momentum, Riemannian Adam on the row sphere and
// MD-AdamW (flat and row spheres) is
// captured in a CUDA graph (thread-local capture mode, which refuses any
// call that would wait for the device or allocate), replayed, and compared
// bit for bit with the same step run on the stream; a NaN gradient in a
// replay changes nothing and check() reports it. Built by the `cuda` preset
// (nvcc); it needs a GPU to run, which CI does not have, so CI checks that
// it compiles.
#include <cuda_runtime.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <vector>

#include "polar/backend/thrust.hpp"
#include "polar/checkpoint.hpp"
#include "polar/deferred.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/optimizer.hpp"

namespace {

using device_backend = polar::backend::thrust<polar::system::cuda>;
using dvec = ::thrust::device_vector<float>;

std::vector<float> host_copy(const dvec& v) {
  std::vector<float> h(v.size());
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(v.begin(), v.end(), h.begin());
  return h;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <class S>
std::vector<std::uint8_t> state_bytes(device_backend& be, const S& s) {
  polar::checkpoint ck;
  ck.put_state(be, "s", s);
  return ck.serialize();
}

// Rows of norm 2 (the row sphere of radius 2).
void to_row_sphere(device_backend& be, dvec& w, polar::index rows, polar::index cols) {
  std::vector<float> h = host_copy(w);
  for (polar::index i = 0; i < rows; ++i) {
    double n = 0;
    for (polar::index j = 0; j < cols; ++j) n += double(h[std::size_t(i * cols + j)]) * h[std::size_t(i * cols + j)];
    for (polar::index j = 0; j < cols; ++j) h[std::size_t(i * cols + j)] = float(h[std::size_t(i * cols + j)] * 2.0 / std::sqrt(n));
  }
  cudaDeviceSynchronize();  // the backend's stream: its work is asynchronous
  ::thrust::copy(h.begin(), h.end(), w.begin());
  be.synchronize();
}

// One step of opt from the same point, run on the stream and replayed from
// a graph: the same bits in W and the state. Then a NaN gradient in a
// replay: nothing changes, and check() says so.
template <class Opt>
void captured_step_is_the_step(const Opt& opt, bool sphere, const char* what) {
  BOOST_TEST_CONTEXT(what) {
    cudaStream_t stream;
    BOOST_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    {
      device_backend be(stream);
      const polar::index rows = 256, cols = 768;
      dvec w(std::size_t(rows * cols)), g(std::size_t(rows * cols));
      be.fill_random(polar::make_view(w, rows, cols), polar::rng_key{1}, polar::distribution::normal, 0.5f);
      be.fill_random(polar::make_view(g, rows, cols), polar::rng_key{2}, polar::distribution::normal, 0.1f);
      if (sphere) to_row_sphere(be, w, rows, cols);
      const auto wv = polar::make_view(w, rows, cols);
      const auto gv = polar::matrix_view<const float>(polar::make_view(g, rows, cols));
      auto s = opt.init(be, wv);
      polar::deferred_checks<device_backend> checks(be);
      checks.recycle = false;  // the graph's slots stay described for its replays

      // A first step on the stream: the scratch arenas and workspaces grow
      // here, before the capture (a capture cannot allocate).
      {
        auto scope = checks.scope();
        opt.step(be, wv, gv, s);
      }
      checks.check();
      const dvec w1 = w;
      polar::checkpoint ck;
      ck.put_state(be, "s", s);

      // The second step on the stream: the reference.
      {
        auto scope = checks.scope();
        opt.step(be, wv, gv, s);
      }
      checks.check();
      const std::vector<float> w_ref = host_copy(w);
      const auto s_ref = state_bytes(be, s);

      // Back to the first step's result; the same step captured.
      w = w1;
      ck.get_state(be, "s", s);
      be.synchronize();
      cudaGraph_t graph = nullptr;
      BOOST_REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
      {
        auto scope = checks.scope();
        opt.step(be, wv, gv, s);  // queues kernels only
      }
      BOOST_REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
      cudaGraphExec_t exec = nullptr;
      BOOST_REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
      // Nothing ran while capturing.
      BOOST_TEST(same_bits(host_copy(w), host_copy(w1)));
      BOOST_REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
      BOOST_REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
      checks.check();
      BOOST_TEST(same_bits(host_copy(w), w_ref));
      BOOST_TEST((state_bytes(be, s) == s_ref));

      // A replay with NaN in G: W and the state keep their bits.
      const float nan = std::nanf("");
      const std::vector<float> w_before = host_copy(w);
      const auto s_before = state_bytes(be, s);
      ::thrust::fill_n(g.begin() + 5, 1, nan);
      BOOST_REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
      BOOST_TEST(!checks.ok());
      BOOST_CHECK_THROW(checks.check(), polar::non_finite_error);
      BOOST_TEST(same_bits(host_copy(w), w_before));
      BOOST_TEST((state_bytes(be, s) == s_before));
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    }
    cudaStreamDestroy(stream);
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(deferred_cuda)

BOOST_AUTO_TEST_CASE(a_captured_step_replays_the_step_bit_for_bit) {
  polar::muon_direction<> muon;
  muon.lr = 0.02;
  muon.weight_decay = 0.01;
  captured_step_is_the_step(muon, false, "muon");
  polar::muon_direction<polar::newton_schulz, void, polar::normuon> normuon;
  captured_step_is_the_step(normuon, false, "normuon");
  polar::muon_direction<polar::newton_schulz, void, polar::adamuon> adamuon;
  captured_step_is_the_step(adamuon, false, "adamuon");
  polar::muon_direction<polar::newton_schulz, void, polar::polargrad> polargrad;
  polargrad.scale = polar::scale_rule::none;
  polargrad.lr = 1e-3;
  captured_step_is_the_step(polargrad, false, "polargrad");
  captured_step_is_the_step(polar::adamw_direction{}, false, "adamw");
  polar::momentum_direction mom;
  mom.nesterov = true;
  captured_step_is_the_step(mom, false, "momentum");
  polar::riemannian<polar::adamw_direction, polar::hypersphere> sphere;
  sphere.direction.weight_decay = 0;
  sphere.geometry = {polar::sphere_scope::rows, 2.0};
  sphere.check_point = false;  // it reads the distance back
  captured_step_is_the_step(sphere, true, "row-sphere adam");
  captured_step_is_the_step(polar::md_adamw{}, false, "md-adamw (flat sphere)");
  polar::md_adamw md_rows;
  md_rows.sphere = polar::sphere_scope::rows;
  captured_step_is_the_step(md_rows, false, "md-adamw (row sphere)");
  md_rows.phi = polar::gain_map::identity;
  captured_step_is_the_step(md_rows, false, "md-adamw (row sphere, identity gains)");
}

// A whole step of the model-level optimizer (Muon, MD-AdamW, row-sphere
// Adam and AdamW groups, clipped to a global norm) captured and replayed:
// the weights and the whole checkpoint (states, step counts) are the step
// run on the stream, bit for bit.
BOOST_AUTO_TEST_CASE(a_captured_optimizer_step_replays_the_step_bit_for_bit) {
  cudaStream_t stream;
  BOOST_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  {
    device_backend be(stream);
    const polar::index d = 256;
    const auto n = [](polar::index k) { return static_cast<std::size_t>(k); };
    dvec hidden(n(4 * d * d)), embed(n(100 * d)), sphere(n(d * d)), bias(n(d));
    dvec gh(hidden.size()), ge(embed.size()), gs(sphere.size()), gb(bias.size());
    be.fill_random(polar::make_view(hidden, 4 * d, d), polar::rng_key{11}, polar::distribution::normal, 0.05f);
    be.fill_random(polar::make_view(embed, 100, d), polar::rng_key{12}, polar::distribution::normal);
    be.fill_random(polar::make_view(sphere, d, d), polar::rng_key{13}, polar::distribution::normal);
    to_row_sphere(be, sphere, d, d);
    be.fill_random(polar::make_view(bias, 1, d), polar::rng_key{14}, polar::distribution::normal, 0.1f);
    be.fill_random(polar::make_view(gh, 4 * d, d), polar::rng_key{21}, polar::distribution::normal);
    be.fill_random(polar::make_view(ge, 100, d), polar::rng_key{22}, polar::distribution::normal);
    be.fill_random(polar::make_view(gs, d, d), polar::rng_key{23}, polar::distribution::normal);
    be.fill_random(polar::make_view(gb, 1, d), polar::rng_key{24}, polar::distribution::normal);

    polar::optimizer<device_backend, float> opt(be);
    opt.add_group("embed", polar::md_adamw{}, polar::rule::name("embed"));
    polar::riemannian<polar::adamw_direction, polar::hypersphere> ra;
    ra.direction.weight_decay = 0;
    ra.geometry = {polar::sphere_scope::rows, 2.0};
    ra.check_point = false;
    opt.add_group("sphere", ra, polar::rule::name("sphere"));
    opt.add_group("hidden", polar::muon_direction<>{}, polar::rule::matrices());
    opt.add_group("rest", polar::adamw_direction{});
    opt.group("hidden").lr_schedule = polar::schedule::cosine(10, 0.1, 2);
    opt.clip_norm = 1.0;
    opt.add("embed", polar::make_view(embed, 100, d));
    opt.add("sphere", polar::make_view(sphere, d, d));
    opt.add("hidden", polar::make_view(hidden, 4 * d, d));
    opt.add("bias", polar::make_view(bias, 1, d));
    const auto c = [](const dvec& v, polar::index r, polar::index k) {
      return polar::param_view<const float>(polar::as_const(polar::make_view(v, r, k)));
    };
    const std::vector<polar::param_view<const float>> grads{c(ge, 100, d), c(gs, d, d), c(gh, 4 * d, d), c(gb, 1, d)};
    const auto weights = [&] {
      std::vector<float> all;
      for (const dvec* v : {&embed, &sphere, &hidden, &bias}) {
        const auto h = host_copy(*v);
        all.insert(all.end(), h.begin(), h.end());
      }
      return all;
    };
    polar::deferred_checks<device_backend> checks(be);
    checks.recycle = false;
    {
      auto scope = checks.scope();
      opt.step(grads);  // the arenas and the clipping buffers grow here
    }
    checks.check();
    polar::checkpoint before;
    opt.save(before);
    {
      auto scope = checks.scope();
      opt.step(grads);
    }
    checks.check();
    const std::vector<float> w_ref = weights();
    polar::checkpoint ref;
    opt.save(ref);

    opt.load(before);
    be.synchronize();
    cudaGraph_t graph = nullptr;
    BOOST_REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    {
      auto scope = checks.scope();
      opt.step(grads);
    }
    BOOST_REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    BOOST_REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
    BOOST_REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    BOOST_REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    checks.check();
    BOOST_TEST(same_bits(weights(), w_ref));
    polar::checkpoint replayed;
    opt.save(replayed);
    BOOST_TEST((replayed.serialize() == ref.serialize()));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(stream);
}

BOOST_AUTO_TEST_SUITE_END()
