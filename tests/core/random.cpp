// Tests of polar/core/random.hpp: Philox4x32-10 against Random123's
// known-answer vectors and implementation, order independence, and the
// distributions.
#include "polar/core/random.hpp"

#include <Random123/philox.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

BOOST_AUTO_TEST_SUITE(core_random)

// Philox4x32-10 known-answer vectors from Random123's kat_vectors:
// counter (4 words), key (2 words) -> output (4 words).
BOOST_AUTO_TEST_CASE(philox_matches_known_answer_vectors) {
  struct kat {
    polar::u32x4 ctr;
    std::uint32_t k0, k1;
    polar::u32x4 out;
  };
  const kat vectors[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const auto& v : vectors) {
    const auto got = polar::philox4x32_10::apply(v.ctr, v.k0, v.k1);
    for (int w = 0; w < 4; ++w) BOOST_TEST(got.v[w] == v.out.v[w]);
  }
}

BOOST_AUTO_TEST_CASE(philox_matches_random123_on_random_inputs) {
  std::mt19937 g32(2024);
  auto g = [&g32] { return static_cast<std::uint32_t>(g32()); };
  r123::Philox4x32_R<10> ref;
  for (int trial = 0; trial < 10000; ++trial) {
    r123::Philox4x32_R<10>::ctr_type c = {{g(), g(), g(), g()}};
    r123::Philox4x32_R<10>::key_type k = {{g(), g()}};
    const auto want = ref(c, k);
    const auto got = polar::philox4x32_10::apply({{c[0], c[1], c[2], c[3]}}, k[0], k[1]);
    for (int w = 0; w < 4; ++w) BOOST_REQUIRE_EQUAL(got.v[w], want[w]);
  }
}

BOOST_AUTO_TEST_CASE(key_layout_is_as_documented) {
  const polar::rng_key key{0x1122334455667788ull, 7, 9, 3};
  const polar::philox_stream st(key);
  const std::uint64_t block = 0x0000BEEF12345678ull;
  const auto want = polar::philox4x32_10::apply(
      {{0x12345678u, (3u << 16) | 0xBEEFu, 9u, 7u}}, 0x55667788u, 0x11223344u);
  const auto got = st.block(block);
  for (int w = 0; w < 4; ++w) BOOST_TEST(got.v[w] == want.v[w]);
}

template <class T>
void check_order_independence(polar::distribution d) {
  const polar::philox_stream st(polar::rng_key{42, 1, 2, 3});
  const std::size_t n = 4099;
  std::vector<T> forward(n), shuffled(n), blocks(n + 256);
  for (std::size_t i = 0; i < n; ++i) forward[i] = st.template operator()<T>(d, i);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  for (std::size_t i : order) shuffled[i] = st.template operator()<T>(d, i);
  const unsigned per = polar::philox_stream::per_block<T>(d);
  for (std::size_t b = 0; b * per < n; ++b) st.template fill_block<T>(d, b, blocks.data() + b * per);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    bad += std::memcmp(&forward[i], &shuffled[i], sizeof(T)) != 0;
    bad += std::memcmp(&forward[i], &blocks[i], sizeof(T)) != 0;
  }
  BOOST_TEST(bad == 0u);
}

BOOST_AUTO_TEST_CASE(values_do_not_depend_on_generation_order) {
  for (auto d : {polar::distribution::normal, polar::distribution::rademacher,
                 polar::distribution::uniform}) {
    check_order_independence<float>(d);
    check_order_independence<double>(d);
  }
}

BOOST_AUTO_TEST_CASE(every_key_field_changes_the_stream) {
  const polar::rng_key base{1, 2, 3, 4};
  auto first = [](polar::rng_key k) { return polar::philox_stream(k).normal<double>(0); };
  polar::rng_key k = base;
  const double v = first(base);
  k.seed = 2;
  BOOST_TEST(first(k) != v);
  k = base;
  k.seed = base.seed | (1ull << 40);  // high seed bits matter too
  BOOST_TEST(first(k) != v);
  k = base;
  k.machine = 5;
  BOOST_TEST(first(k) != v);
  k = base;
  k.step = 5;
  BOOST_TEST(first(k) != v);
  k = base;
  k.sample = 5;
  BOOST_TEST(first(k) != v);
  BOOST_TEST(first(base) == v);  // and the same key repeats
}

BOOST_AUTO_TEST_CASE(uniforms_are_exact_and_open) {
  const polar::philox_stream st(polar::rng_key{3, 0, 0, 0});
  for (std::uint64_t i = 0; i < 1000; ++i) {
    const std::uint32_t w = st.block(i >> 2).v[i & 3];
    BOOST_TEST(st.uniform<float>(i) == float((double(w >> 9) + 0.5) / 8388608.0));
    const double d = st.uniform<double>(i);
    BOOST_TEST((d > 0.0 && d < 1.0));
  }
  // The extreme words map strictly inside (0, 1).
  BOOST_TEST(polar::detail::repro::uniform_from_bits(0u) > 0.0f);
  BOOST_TEST(polar::detail::repro::uniform_from_bits(0xffffffffu) < 1.0f);
  BOOST_TEST(polar::detail::repro::uniform_from_bits(0u, 0u) > 0.0);
  BOOST_TEST(polar::detail::repro::uniform_from_bits(0xffffffffu, 0xffffffffu) < 1.0);
}

BOOST_AUTO_TEST_CASE(own_log_and_sincos_are_accurate) {
  double worst_log_f = 0, worst_log_d = 0, worst_sc_f = 0, worst_sc_d = 0;
  for (int i = 0; i < 200000; ++i) {
    const double u = (i + 0.5) / 200000.0;
    const float uf = float(u);
    worst_log_f = std::max(worst_log_f, std::abs(polar::detail::repro::log(uf) - std::log(double(uf))) /
                                            std::abs(std::log(double(uf))));
    worst_log_d = std::max(worst_log_d, std::abs(polar::detail::repro::log(u) - std::log(u)) / std::abs(std::log(u)));
    float cf, sf;
    polar::detail::repro::sincos_2pi(uf, cf, sf);
    const double t = 2 * M_PI * double(uf);
    worst_sc_f = std::max({worst_sc_f, std::abs(cf - std::cos(t)), std::abs(sf - std::sin(t))});
    double cd, sd;
    polar::detail::repro::sincos_2pi(u, cd, sd);
    worst_sc_d = std::max({worst_sc_d, std::abs(cd - std::cos(2 * M_PI * u)), std::abs(sd - std::sin(2 * M_PI * u))});
  }
  BOOST_TEST(worst_log_f < 3e-7);   // a few float ulps
  BOOST_TEST(worst_log_d < 1e-15);  // a few double ulps
  BOOST_TEST(worst_sc_f < 2e-7);
  BOOST_TEST(worst_sc_d < 2e-15);
}

template <class T>
void check_moments(polar::distribution d, double mean, double var) {
  const polar::philox_stream st(polar::rng_key{99, 0, 1, 0});
  const std::size_t n = 1 << 20;
  double s1 = 0, s2 = 0, s4 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = double(st.template operator()<T>(d, i)) - mean;
    s1 += x;
    s2 += x * x;
    s4 += x * x * x * x;
  }
  const double m = s1 / n, v = s2 / n, k = s4 / n / (v * v);
  // Five standard errors: a correct generator fails this about once in 10^6 seeds.
  BOOST_TEST(std::abs(m) < 5 * std::sqrt(var / n));
  BOOST_TEST(std::abs(v - var) < 5 * var * std::sqrt(2.0 / n));
  if (d == polar::distribution::normal) BOOST_TEST(std::abs(k - 3.0) < 5 * std::sqrt(96.0 / n));
}

BOOST_AUTO_TEST_CASE(distributions_have_the_right_moments) {
  check_moments<float>(polar::distribution::normal, 0.0, 1.0);
  check_moments<double>(polar::distribution::normal, 0.0, 1.0);
  check_moments<float>(polar::distribution::uniform, 0.5, 1.0 / 12);
  check_moments<double>(polar::distribution::uniform, 0.5, 1.0 / 12);
  const polar::philox_stream st(polar::rng_key{5, 0, 0, 0});
  long sum = 0;
  const long n = 1 << 20;
  for (long i = 0; i < n; ++i) {
    const float r = st.rademacher<float>(std::uint64_t(i));
    BOOST_REQUIRE(r == 1.0f || r == -1.0f);
    sum += long(r);
  }
  BOOST_TEST(std::abs(double(sum)) < 5 * std::sqrt(double(n)));
}

BOOST_AUTO_TEST_CASE(normals_follow_box_muller_of_the_uniforms) {
  const polar::philox_stream st(polar::rng_key{11, 0, 0, 0});
  for (std::uint64_t i = 0; i < 4000; ++i) {
    const auto w = st.block(i >> 2);
    const unsigned k = unsigned((i >> 1) & 1) * 2;
    const double u1 = polar::detail::repro::uniform_from_bits(w.v[k]);
    const double u2 = polar::detail::repro::uniform_from_bits(w.v[k + 1]);
    const double r = std::sqrt(-2 * std::log(u1));
    const double want = (i & 1) ? r * std::sin(2 * M_PI * u2) : r * std::cos(2 * M_PI * u2);
    BOOST_TEST(std::abs(st.normal<float>(i) - want) <= 1e-6 * (1 + std::abs(want)));
  }
}

BOOST_AUTO_TEST_SUITE_END()
