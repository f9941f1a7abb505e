// tests/core/checkpoint.cpp: checkpoints (polar/checkpoint.hpp). A run that
// stops, saves, restores into fresh states and goes on ends with the same bits
// as a run that never stopped, for every optimizer, on Eigen and both Thrust
// host systems. Every changed byte and every cut of a small checkpoint is
// rejected; another version, other shapes, another scalar type, a missing
// entry and a bad file are reported and write nothing.
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "polar/checkpoint.hpp"
#include "polar/estimator/spsa.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/orthogonalize/gram_newton_schulz.hpp"
#include "polar/geometry/manifold_muon.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/geometry/stiefel.hpp"
#include "geometry/geometry_support.hpp"

namespace {

using geometry_test::mat;
using all_backends = polar_test::host_backends;
using fmat = mat<float>;

// The gradient at step k: pulls W towards a fixed target, plus noise of its
// own for each step, so that every step depends on where W is.
template <class B>
fmat gradient(B& be, const fmat& w, int k) {
  const fmat target = geometry_test::random<float>(be, w.rows(), w.cols(), 900);
  const fmat noise = geometry_test::random<float>(be, w.rows(), w.cols(), 1000 + std::uint64_t(k));
  return fmat(w - target + 0.3f * noise);
}

// Runs `steps` steps from w with opt and state s.
template <class B, class Opt, class S>
void run(B& be, const Opt& opt, fmat& w, S& s, int from, int to) {
  for (int k = from; k < to; ++k) {
    const fmat g = gradient(be, w, k);
    opt.step(be, polar::make_view(w), polar::make_view(g), s);
  }
}

// The same 2n steps straight through, and as n steps, a checkpoint (through
// bytes, and through a file for the first optimizer), fresh states restored
// from it, and n more: the weights and the saved states must be the same
// bits.
template <class B, class Opt>
void resumes_bit_exactly(B& be, const Opt& opt, fmat w0, const char* what, bool through_file = false) {
  BOOST_TEST_CONTEXT(what) {
    const int n = 6;
    fmat wa = w0;
    auto sa = opt.init(be, polar::make_view(wa));
    run(be, opt, wa, sa, 0, 2 * n);

    fmat wb = w0;
    auto sb = opt.init(be, polar::make_view(wb));
    run(be, opt, wb, sb, 0, n);
    polar::checkpoint saved;
    saved.put(be, "w", polar::make_view(std::as_const(wb)));
    saved.put_state(be, "opt", sb);
    polar::checkpoint back;
    if (through_file) {
      const std::string path = "polar_test_checkpoint.ckpt";
      saved.save(path);
      BOOST_TEST(!std::ifstream(path + ".tmp").good());  // the temporary is renamed away
      back = polar::checkpoint::load(path);
      std::remove(path.c_str());
    } else {
      back = polar::checkpoint::parse(saved.serialize());
    }
    // Fresh memory: the start's weights and a state init() makes for them.
    fmat wc = w0;
    auto sc = opt.init(be, polar::make_view(wc));
    back.get(be, "w", polar::make_view(wc));
    back.get_state(be, "opt", sc);
    run(be, opt, wc, sc, n, 2 * n);

    BOOST_TEST((wc.array() == wa.array()).all(), "the weights differ by " << (wc - wa).norm());
    BOOST_TEST(!(wc.array() == w0.array()).all());  // the run moved the weights
    polar::checkpoint ea, ec;
    ea.put_state(be, "opt", sa);
    ec.put_state(be, "opt", sc);
    BOOST_TEST((ea.serialize() == ec.serialize()), "the states differ after resuming");
  }
}

// A start on the Stiefel manifold (orthonormal columns) and one on the row sphere.
template <class B>
fmat on_stiefel(B& be, polar::index r, polar::index c) {
  fmat w = geometry_test::random<float>(be, r, c, 77);
  polar::stiefel<> st;
  polar::stiefel<>::workspace<B, float> ws;
  st.project(be, polar::make_view(w), ws);
  return w;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(checkpoint)

BOOST_AUTO_TEST_CASE_TEMPLATE(resume_is_bit_exact_for_every_optimizer, B, all_backends) {
  B be;
  const fmat w = geometry_test::random<float>(be, 12, 8, 5);
  polar::sgd_direction sgd;
  resumes_bit_exactly(be, sgd, w, "sgd", true);
  polar::momentum_direction momentum;
  momentum.nesterov = true;
  resumes_bit_exactly(be, momentum, w, "momentum");
  resumes_bit_exactly(be, polar::adamw_direction{}, w, "adamw");
  resumes_bit_exactly(be, polar::muon_direction<>{}, w, "muon");
  resumes_bit_exactly(be, polar::muon_direction<polar::gram_newton_schulz>{}, fmat(w.transpose()), "muon, gram form");
  polar::riemannian_adam<polar::hypersphere> sphere_adam;
  sphere_adam.geometry.scope = polar::sphere_scope::rows;
  fmat on_rows = w;
  on_rows.rowwise().normalize();
  resumes_bit_exactly(be, sphere_adam, on_rows, "riemannian adam, row sphere");
  sphere_adam.fast_paths = false;
  resumes_bit_exactly(be, sphere_adam, on_rows, "riemannian adam, row sphere, generic");
  resumes_bit_exactly(be, polar::riemannian_momentum<polar::stiefel<>>{}, on_stiefel(be, 12, 8),
                      "riemannian momentum, stiefel");
  resumes_bit_exactly(be, polar::riemannian_muon<polar::stiefel<>>{}, on_stiefel(be, 12, 8), "riemannian muon, stiefel");
  polar::manifold_muon<> mm;
  mm.max_dual_steps = 10;
  resumes_bit_exactly(be, mm, on_stiefel(be, 12, 8), "manifold muon");
  resumes_bit_exactly(be, polar::md_adamw{}, w, "md_adamw");
  resumes_bit_exactly(be, polar::md_muon{}, w, "md_muon");
  polar::md_adamw by_rows;
  by_rows.sphere = polar::sphere_scope::rows;
  by_rows.fast_paths = false;
  resumes_bit_exactly(be, by_rows, w, "md_adamw, row sphere, generic");
  resumes_bit_exactly(be, polar::row_col_gains<polar::riemannian_adam<polar::stiefel<>>>{}, w, "md over stiefel adam");
}

// A whole model (every group, schedule positions, counts) resumes bit
// exactly in tests/optimizer/optimizer.cpp.

BOOST_AUTO_TEST_CASE(spsa_momentum_resumes_bit_exactly) {
  polar::backend::eigen be;
  fmat a = geometry_test::random<float>(be, 5, 7, 11), b = geometry_test::random<float>(be, 3, 4, 12);
  const fmat a0 = a, b0 = b;
  const auto params_of = [](fmat& x, fmat& y) {
    polar::spsa_params<float> p;
    p.add(polar::make_view(x));
    p.add(polar::make_view(y));
    return p;
  };
  const auto loss = [](const fmat& x, const fmat& y) { return double(x.squaredNorm() + (y.array() - 1).square().sum()); };
  polar::spsa est;
  est.seed = 3;
  polar::momentum_direction dir;
  dir.lr = 0.01;
  const auto steps = [&](fmat& x, fmat& y, polar::spsa_momentum_state<polar::backend::eigen, float>& st, int from,
                         int to) {
    auto p = params_of(x, y);
    polar::spsa::workspace<polar::backend::eigen, float> ws;
    for (int k = from; k < to; ++k) {
      const auto g = est.estimate(be, p, [&] { return loss(x, y); }, std::uint32_t(k), ws);
      polar::spsa_momentum_step(be, p, g, dir, st);
    }
  };
  polar::spsa_momentum_state<polar::backend::eigen, float> s1, s2, s3;
  steps(a, b, s1, 0, 20);
  fmat c = a0, d = b0;
  steps(c, d, s2, 0, 10);
  polar::checkpoint ck;
  ck.put(be, "a", polar::make_view(std::as_const(c)));
  ck.put(be, "b", polar::make_view(std::as_const(d)));
  ck.put_state(be, "momentum", s2);
  const auto back = polar::checkpoint::parse(ck.serialize());
  fmat e = a0, f = b0;
  steps(e, f, s3, 0, 1);  // any state with buffers of the right sizes
  back.get(be, "a", polar::make_view(e));
  back.get(be, "b", polar::make_view(f));
  back.get_state(be, "momentum", s3);
  BOOST_TEST(s3.steps == 10);
  steps(e, f, s3, 10, 20);
  BOOST_TEST((e.array() == a.array()).all());
  BOOST_TEST((f.array() == b.array()).all());
}

// A small checkpoint: AdamW on a 3x2 matrix after two steps, and the weights.
std::vector<std::uint8_t> small_checkpoint() {
  polar::backend::eigen be;
  fmat w = geometry_test::random<float>(be, 3, 2, 8);
  polar::adamw_direction opt;
  auto s = opt.init(be, polar::make_view(w));
  run(be, opt, w, s, 0, 2);
  polar::checkpoint ck;
  ck.put(be, "w", polar::make_view(std::as_const(w)));
  ck.put_state(be, "adamw", s);
  return ck.serialize();
}

BOOST_AUTO_TEST_CASE(every_corruption_is_detected) {
  const auto bytes = small_checkpoint();
  BOOST_TEST_MESSAGE("the small checkpoint has " << bytes.size() << " bytes");
  BOOST_REQUIRE_NO_THROW(polar::checkpoint::parse(bytes));
  int missed = 0;
  // Every byte changed, in three ways: all bits, the lowest bit, the highest.
  for (std::uint8_t mask : {std::uint8_t(0xFF), std::uint8_t(0x01), std::uint8_t(0x80)})
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      auto bad = bytes;
      bad[i] ^= mask;
      try {
        polar::checkpoint::parse(bad);
        ++missed;
        BOOST_TEST_MESSAGE("not detected: byte " << i << " ^ " << int(mask));
      } catch (const polar::format_error&) {
      }
    }
  // Every cut, and one byte too many.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    try {
      polar::checkpoint::parse(bytes.data(), n);
      ++missed;
    } catch (const polar::format_error&) {
    }
  }
  auto longer = bytes;
  longer.push_back(0);
  BOOST_CHECK_THROW(polar::checkpoint::parse(longer), polar::format_error);
  BOOST_TEST(missed == 0);
}

BOOST_AUTO_TEST_CASE(errors_say_what_is_wrong) {
  polar::backend::eigen be;
  auto bytes = small_checkpoint();
  const auto message = [](const std::vector<std::uint8_t>& b) -> std::string {
    try {
      polar::checkpoint::parse(b);
    } catch (const polar::format_error& e) {
      return e.what();
    }
    return "";
  };
  // Another version, with every checksum made right again.
  auto v2 = bytes;
  v2[8] = 2;
  const auto fix = [](std::vector<std::uint8_t>& b) {
    const auto h = polar::detail::crc32(b.data(), 16);
    for (int k = 0; k < 4; ++k) b[std::size_t(16 + k)] = std::uint8_t(h >> (8 * k));
    const auto t = polar::detail::crc32(b.data(), b.size() - 4);
    for (int k = 0; k < 4; ++k) b[b.size() - 4 + std::size_t(k)] = std::uint8_t(t >> (8 * k));
  };
  fix(v2);
  BOOST_TEST(message(v2).find("format version 2; this build reads version 1") != std::string::npos, message(v2));
  auto flipped = bytes;
  flipped[30] ^= 1;
  BOOST_TEST(message(flipped).find("does not match") != std::string::npos, message(flipped));
  BOOST_TEST(message(std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 40)).find("PEND") != std::string::npos);
  std::vector<std::uint8_t> other(bytes);
  other[0] = 'X';
  BOOST_TEST(message(other).find("not a polar checkpoint") != std::string::npos);
  // An entry's checksum (the whole-file one made right).
  auto entry = bytes;
  entry[bytes.size() - 9] ^= 0x10;  // the last entry's checksum
  fix(entry);
  BOOST_TEST(message(entry).find("the checksum of entry 'adamw/steps' does not match") != std::string::npos,
             message(entry));

  // Entries that carry what their kind has not, or a size that wraps (found
  // by fuzz/checkpoint.cpp), with every checksum made right. One entry
  // starts at byte 20 and its checksum sits 12 bytes before the end.
  const auto reseal = [&fix](std::vector<std::uint8_t>& b) {
    const auto c = polar::detail::crc32(b.data() + 20, b.size() - 12 - 20);
    for (int k = 0; k < 4; ++k) b[b.size() - 12 + std::size_t(k)] = std::uint8_t(c >> (8 * k));
    fix(b);
  };
  {
    polar::checkpoint one;
    one.put_integer("n", 7);
    auto b = one.serialize();
    b[24] = 1;  // the scalar code of an integer
    reseal(b);
    BOOST_TEST(message(b).find("entry 'n' is an integer with scalar code 1 and rank 0") != std::string::npos,
               message(b));
  }
  {
    polar::checkpoint one;
    float x = 1;
    one.put(be, "t", polar::matrix_view<float>(&x, 1, 1, 1, 1));
    auto b = one.serialize();
    b[24] = 9;  // no such scalar code
    reseal(b);
    BOOST_TEST(message(b).find("entry 't' is a tensor of scalar code 9") != std::string::npos, message(b));
  }
  {
    // 2^61 x 1 doubles: 2^64 bytes, which wraps to the empty payload's 0.
    polar::checkpoint one;
    one.put(be, "t", polar::matrix_view<double>(nullptr, 0, 0, 0, 1));
    auto b = one.serialize();
    for (int k = 0; k < 16; ++k) b[std::size_t(26 + k)] = 0;
    b[26 + 7] = 0x20;  // extent 0: 2^61
    b[34] = 1;         // extent 1: 1
    reseal(b);
    BOOST_TEST(message(b).find("entry 't' has an impossible extent") != std::string::npos, message(b));
  }

  const auto ck = polar::checkpoint::parse(bytes);
  // Other shapes: a state for 2x3 refuses the 3x2 one, and is unchanged.
  polar::adamw_direction opt;
  fmat w23 = geometry_test::random<float>(be, 2, 3, 9);
  auto s23 = opt.init(be, polar::make_view(w23));
  polar::checkpoint before;
  before.put_state(be, "s", s23);
  try {
    ck.get_state(be, "adamw", s23);
    BOOST_FAIL("no error for other shapes");
  } catch (const polar::shape_error& e) {
    BOOST_TEST(std::string(e.what()).find("'adamw/rows' is 3 but the state's is 2") != std::string::npos, e.what());
  }
  polar::checkpoint after;
  after.put_state(be, "s", s23);
  BOOST_TEST((before.serialize() == after.serialize()));
  BOOST_CHECK_THROW(ck.get(be, "w", polar::make_view(w23)), polar::shape_error);
  // Another scalar type, a missing entry, another kind.
  mat<double> wd(3, 2);
  polar::adamw_direction::state<polar::backend::eigen, double> sd = opt.init(be, polar::make_view(wd));
  try {
    ck.get_state(be, "adamw", sd);
    BOOST_FAIL("no error for another scalar type");
  } catch (const polar::format_error& e) {
    BOOST_TEST(std::string(e.what()).find("holds float elements, not double") != std::string::npos, e.what());
  }
  fmat w32(3, 2);
  auto s32 = opt.init(be, polar::make_view(w32));
  BOOST_CHECK_THROW(ck.get_state(be, "sgd", s32), polar::format_error);
  BOOST_CHECK_THROW(ck.get_integer("w"), polar::format_error);
  BOOST_TEST(ck.get_integer("adamw/steps") == 2);
  // Names: empty or used twice.
  polar::checkpoint names;
  names.put_integer("a", 1);
  BOOST_CHECK_THROW(names.put_integer("a", 2), polar::value_error);
  BOOST_CHECK_THROW(names.put_real("", 2), polar::value_error);
  // Files: a folder that does not exist.
  BOOST_CHECK_THROW(names.save("/nonexistent-folder/x.ckpt"), polar::format_error);
  BOOST_CHECK_THROW(polar::checkpoint::load("/nonexistent-folder/x.ckpt"), polar::format_error);
}

BOOST_AUTO_TEST_SUITE_END()
