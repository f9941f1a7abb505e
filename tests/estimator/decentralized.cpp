// Decentralized SPSA: the one-byte codes, the byte log and its corruptions,
// the loopback transport, and replicas that stay bit-identical while
// machines (on the Eigen backend and the Thrust host systems) join and
// leave.
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/dist/loopback.hpp"
#include "polar/estimator/decentralized.hpp"

namespace {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

bool same_bits(const fmat& a, const fmat& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong type: ") + e.what();
  }
  return "no exception";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The model: a 12x10 matrix and a 1x7 row (127 parameters). Machine m's loss
// is a quadratic around its own target (its shard of the data):
// L_m = 1/2 sum_i h_i (theta_i - a_m,i)^2, h_i in [0.5, 2].
struct problem {
  static constexpr int n = 127;
  std::vector<double> h, target;  // target: the machines' mean
  std::vector<std::vector<double>> shard;
  explicit problem(int machines) : h(n), target(n, 0.0), shard(std::size_t(machines), std::vector<double>(n)) {
    for (int i = 0; i < n; ++i) h[std::size_t(i)] = 0.5 + 1.5 * double((i * 37) % n) / n;
    for (int m = 0; m < machines; ++m)
      for (int i = 0; i < n; ++i) {
        const double v = std::sin(0.3 * i) + 0.05 * std::sin(1.1 * i + 1.7 * m);
        shard[std::size_t(m)][std::size_t(i)] = v;
        target[std::size_t(i)] += v / machines;
      }
  }
  double loss(const float* w, const float* b, const std::vector<double>& a) const {
    double s = 0;
    for (int i = 0; i < n; ++i) {
      const double x = i < 120 ? double(w[i]) : double(b[i - 120]);
      s += 0.5 * h[std::size_t(i)] * (x - a[std::size_t(i)]) * (x - a[std::size_t(i)]);
    }
    return s;
  }
};

// One machine's replica on some backend, behind an interface so that
// machines on different backends can share a run.
struct machine_base {
  fmat w{12, 10}, b{1, 7};
  virtual ~machine_base() = default;
  virtual std::uint8_t propose(const problem& pb, int shard) = 0;
  virtual void apply(const std::vector<polar::byte_record>& r) = 0;
  virtual void catch_up(const polar::byte_log& log) = 0;
  virtual std::uint32_t step() const = 0;
  virtual const polar::byte_log& log() const = 0;
};

template <class B>
struct machine : machine_base {
  B be;
  polar::spsa_params<float> p;
  polar::decentralized_spsa<B, float> r;
  machine(const polar::shared_spsa& c, std::uint32_t id, std::uint32_t step, const fmat& w0, const fmat& b0)
      : r(c, id, step) {
    w = w0;
    b = b0;
    p.add(polar::make_view(w));
    p.add(polar::make_view(b));
  }
  std::uint8_t propose(const problem& pb, int shard) override {
    return r.propose(be, p, [&] { return pb.loss(w.data(), b.data(), pb.shard[std::size_t(shard)]); });
  }
  void apply(const std::vector<polar::byte_record>& rec) override { r.apply(be, p, rec); }
  void catch_up(const polar::byte_log& log) override { r.catch_up(be, p, log); }
  std::uint32_t step() const override { return r.step(); }
  const polar::byte_log& log() const override { return r.log(); }
};

polar::shared_spsa settings() {
  polar::shared_spsa c;
  c.seed = 2026;
  c.epsilon = 1e-3;
  c.lr = 4e-3;
  c.code = polar::byte_code::logarithmic();
  return c;
}

void initial_weights(fmat& w, fmat& b) {
  polar::backend::eigen be;
  be.fill_random(polar::make_view(w), polar::rng_key{99}, polar::distribution::normal, 0.5f);
  be.fill_random(polar::make_view(b), polar::rng_key{99, 1}, polar::distribution::normal, 0.5f);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(estimator_decentralized)

BOOST_AUTO_TEST_CASE(crc32_matches_the_standard_check_value) {
  const char* s = "123456789";
  BOOST_TEST(polar::detail::crc32(reinterpret_cast<const std::uint8_t*>(s), 9) == 0xCBF43926u);
  BOOST_TEST(polar::detail::crc32(nullptr, 0) == 0u);
}

// The logarithmic code: 127 levels a factor e^(1/8) apart from 3.6e-4, a
// decoded value within half a level (in ln) of the value, saturation at the
// top, 0 below the bottom, and 0x80 never produced.
BOOST_AUTO_TEST_CASE(logarithmic_code_rounds_in_log_space) {
  const auto c = polar::byte_code::logarithmic();
  const double r = std::exp(1.0 / 8);
  BOOST_TEST(c.smallest() == 3.6e-4);
  BOOST_TEST(std::fabs(c.largest() / (3.6e-4 * std::exp(126.0 / 8)) - 1) < 1e-13);
  for (int k = 1; k < 127; ++k) {
    const double lo = c.decode(std::uint8_t(k)), hi = c.decode(std::uint8_t(k + 1));
    BOOST_TEST(std::fabs(hi / lo - r) < 1e-14, "level " << k);
    BOOST_TEST(c.decode(std::uint8_t(0x80 | k)) == -lo);
  }
  for (double g = 4e-4; g < 2e3; g *= 1.0123) {
    for (double s : {1.0, -1.0}) {
      const std::uint8_t b = c.encode(s * g);
      BOOST_TEST(b != polar::byte_code::absent);
      const double d = c.decode(b);
      BOOST_TEST(d * s > 0);
      BOOST_TEST(std::fabs(std::log(std::fabs(d) / g)) <= 0.5 / 8 + 1e-12, "g " << s * g);
    }
  }
  BOOST_TEST(c.encode(0.0) == 0);
  BOOST_TEST(c.encode(-1e-30) == 0);  // not 0x80
  BOOST_TEST(c.encode(3.6e-4 / std::sqrt(r) * 0.999) == 0);
  BOOST_TEST(c.encode(3.6e-4) == 1);
  BOOST_TEST(c.encode(1e9) == 127);
  BOOST_TEST(c.encode(-1e9) == 0xFF);
  BOOST_TEST(c.saturates(1e9));
  BOOST_TEST(!c.saturates(1.0));
  const auto fine = polar::byte_code::logarithmic(3.6e-4, 16);  // the published resolution
  BOOST_TEST(std::fabs(fine.largest() - 3.6e-4 * std::exp(126.0 / 16)) < 1e-12);
}

BOOST_AUTO_TEST_CASE(linear_code_rounds_to_the_nearest_level) {
  const auto c = polar::byte_code::linear(2.0);
  BOOST_TEST(c.largest() == 2.0);
  for (double g = -2.0; g <= 2.0; g += 0.001) {
    const std::uint8_t b = c.encode(g);
    BOOST_TEST(b != polar::byte_code::absent);
    BOOST_TEST(std::fabs(c.decode(b) - g) <= 1.0 / 127 + 1e-15, "g " << g);
  }
  BOOST_TEST(c.decode(c.encode(5.0)) == 2.0);
  BOOST_TEST(c.decode(c.encode(-5.0)) == -2.0);
  BOOST_TEST(c.encode(1.0 / 127 * 0.99) == 0);  // below half the first level
  BOOST_TEST(c.decode(c.encode(1.0 / 127 * 1.01)) == 2.0 / 127);
}

BOOST_AUTO_TEST_CASE(codes_reject_bad_settings_and_values) {
  BOOST_TEST(contains(message_of<polar::value_error>([] { polar::byte_code::logarithmic(0.0); }), "smallest"));
  BOOST_TEST(contains(message_of<polar::value_error>([] { polar::byte_code::logarithmic(1e-3, 0); }), "got 0"));
  BOOST_TEST(contains(message_of<polar::value_error>([] { polar::byte_code::logarithmic(1e300, 1); }), "overflows"));
  BOOST_TEST(contains(message_of<polar::value_error>([] { polar::byte_code::linear(-1.0); }), "got -1"));
  const auto c = polar::byte_code::linear(1.0);
  BOOST_TEST(contains(message_of<polar::non_finite_error>([&] { c.encode(std::nan("")); }), "nan"));
  BOOST_TEST(contains(message_of<polar::value_error>([&] { c.decode(0x80); }), "absent"));
  auto s = settings();
  s.lr = -1;
  BOOST_TEST(contains(message_of<polar::value_error>([&] { polar::decentralized_spsa<polar::backend::eigen, float>(s, 0); }),
                      "-1"));
  s = settings();
  s.epsilon = 0;
  BOOST_TEST(contains(message_of<polar::value_error>([&] { polar::decentralized_spsa<polar::backend::eigen, float>(s, 0); }),
                      "epsilon"));
}

// 1000 steps, six machines on three backends: machine 0 throughout; 1 leaves
// after step 599; 2 joins at 200 from the initial weights and machine 0's
// log; 3 leaves after 299 and returns at 700 from its own weights and the
// log since 300; 4 (Thrust OMP) joins at 400 from a checkpoint taken at 400;
// 5 (Thrust CPP) joins at 900. Every live replica holds the same bits after
// every step; the run minimizes the machines' mean loss; the log replays to
// the same bits, also after a round trip through its bytes.
BOOST_AUTO_TEST_CASE(replicas_stay_bit_identical_while_machines_join_and_leave) {
  const auto cfg = settings();
  const problem pb(6);
  fmat w0(12, 10), b0(1, 7);
  initial_weights(w0, b0);

  polar::dist::loopback hub;
  hub.schedule(0, 0, 999);
  hub.schedule(1, 0, 599);
  hub.schedule(2, 200, 999);
  hub.schedule(3, 0, 299);
  hub.schedule(3, 700, 999);
  hub.schedule(4, 400, 999);
  hub.schedule(5, 900, 999);

  std::vector<std::unique_ptr<machine_base>> m(6);
  m[0] = std::make_unique<machine<polar::backend::eigen>>(cfg, 0, 0, w0, b0);
  m[1] = std::make_unique<machine<polar::backend::eigen>>(cfg, 1, 0, w0, b0);
  m[3] = std::make_unique<machine<polar::backend::eigen>>(cfg, 3, 0, w0, b0);
  fmat w400, b400;  // machine 0's checkpoint at step 400
  const double start = pb.loss(w0.data(), b0.data(), pb.target);
  std::uint64_t published = 0;
  for (std::uint32_t s = 0; s < 1000; ++s) {
    if (s == 200) {  // from the initial weights and the whole log
      m[2] = std::make_unique<machine<polar::backend::eigen>>(cfg, 2, 0, w0, b0);
      m[2]->catch_up(m[0]->log());
    }
    if (s == 400) {
      w400 = m[0]->w;
      b400 = m[0]->b;
      m[4] = std::make_unique<machine<polar_test::omp_or_eigen>>(cfg, 4, 400, w400, b400);
    }
    if (s == 700) m[3]->catch_up(m[0]->log().since(300));  // its own weights are those of step 300
    if (s == 900) {
      m[5] = std::make_unique<machine<polar_test::cpp_or_eigen>>(cfg, 5, 400, w400, b400);
      m[5]->catch_up(m[0]->log().since(400));
    }
    const auto live = hub.members(s);
    for (auto id : live) {
      BOOST_REQUIRE(m[id]->step() == s);
      hub.publish(s, id, m[id]->propose(pb, int(id)));
    }
    published += live.size();
    for (auto id : live) m[id]->apply(hub.collect(s, id));
    for (auto id : live)
      if (!same_bits(m[id]->w, m[live[0]]->w) || !same_bits(m[id]->b, m[live[0]]->b))
        BOOST_FAIL("machine " << id << " differs from machine " << live[0] << " after step " << s);
  }
  BOOST_TEST(hub.bytes_published() == published);
  for (int id : {2, 3, 4, 5}) {
    BOOST_TEST(same_bits(m[std::size_t(id)]->w, m[0]->w), "machine " << id);
    BOOST_TEST(same_bits(m[std::size_t(id)]->b, m[0]->b), "machine " << id);
  }
  const double end = pb.loss(m[0]->w.data(), m[0]->b.data(), pb.target);
  BOOST_TEST_MESSAGE("decentralized quadratic: " << start << " -> " << end);
  BOOST_TEST(end < 0.02 * start);

  // Replay: the initial weights plus the log, directly and through bytes.
  const auto& log = m[0]->log();
  BOOST_TEST(log.steps() == 1000u);
  BOOST_TEST(log.size() == published);
  const auto bytes = log.serialize();
  const auto parsed = polar::byte_log::parse(bytes);
  BOOST_TEST((parsed == log));
  fmat w = w0, b = b0;
  polar::backend::eigen be;
  polar::spsa_params<float> p;
  p.add(polar::make_view(w));
  p.add(polar::make_view(b));
  polar::replay(be, p, parsed);
  BOOST_TEST(same_bits(w, m[0]->w));
  BOOST_TEST(same_bits(b, m[0]->b));
  // Machine 2 started from step 0 too, so its log is the same.
  BOOST_TEST((m[2]->log() == log));
  // A file round trip.
  const std::string path = "polar_test_byte_log.bin";
  log.save(path);
  BOOST_TEST((polar::byte_log::load(path) == log));
  std::remove(path.c_str());
}

// Four machines on their own threads, exchange() blocking until each step
// is complete: the replicas end bit-identical.
BOOST_AUTO_TEST_CASE(threads_exchange_through_the_loopback) {
  const auto cfg = settings();
  const problem pb(4);
  fmat w0(12, 10), b0(1, 7);
  initial_weights(w0, b0);
  polar::dist::loopback hub;
  std::vector<std::unique_ptr<machine<polar::backend::eigen>>> m;
  for (std::uint32_t id = 0; id < 4; ++id) {
    hub.schedule(id, 0, 199);
    m.push_back(std::make_unique<machine<polar::backend::eigen>>(cfg, id, 0, w0, b0));
  }
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (std::size_t id = 0; id < 4; ++id)
    threads.emplace_back([&, id] {
      try {
        auto& x = *m[id];
        for (int s = 0; s < 200; ++s)
          x.r.step(x.be, x.p, hub, [&] { return pb.loss(x.w.data(), x.b.data(), pb.shard[id]); });
      } catch (const std::exception& e) {
        errors[id] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (std::size_t id = 0; id < 4; ++id) {
    BOOST_TEST(errors[id].empty(), errors[id]);
    BOOST_TEST(m[id]->r.step() == 200u);
    BOOST_TEST(same_bits(m[id]->w, m[0]->w), "machine " << id);
    BOOST_TEST(same_bits(m[id]->b, m[0]->b), "machine " << id);
    BOOST_TEST(m[id]->r.stats().proposed == 200u);
    BOOST_TEST(m[id]->r.stats().applied == 800u);
  }
  BOOST_TEST(hub.bytes_published() == 800u);
}

BOOST_AUTO_TEST_CASE(loopback_reports_misuse_and_missing_machines) {
  polar::dist::loopback hub(std::chrono::milliseconds(50));
  hub.schedule(0, 0, 9);
  hub.schedule(1, 5, 9);
  BOOST_TEST(contains(message_of<polar::value_error>([&] { hub.schedule(1, 9, 12); }), "overlap"));
  BOOST_TEST(contains(message_of<polar::value_error>([&] { hub.publish(2, 1, 3); }), "machine 1 is not scheduled for step 2"));
  BOOST_TEST(hub.exchange(2, 0, 3).size() == 1u);  // machine 0 alone: no wait
  hub.publish(5, 0, 7);
  BOOST_TEST(contains(message_of<polar::value_error>([&] { hub.publish(5, 0, 7); }), "published twice at step 5"));
  BOOST_TEST(contains(message_of<polar::value_error>([&] { hub.collect(5, 0); }), "machine 1 have not published"));
  BOOST_TEST(contains(message_of<polar::transport_error>([&] { hub.exchange(6, 0, 1); }),
                      "step 6: machine 1 did not publish"));
}

// An oracle that fails: the machine publishes absent, applies the others'
// records (here none), advances, and rethrows; its weights are those of the
// step without its contribution.
BOOST_AUTO_TEST_CASE(a_failing_oracle_publishes_absent_and_keeps_step) {
  const auto cfg = settings();
  fmat w(12, 10), b(1, 7);
  initial_weights(w, b);
  polar::backend::eigen be;
  polar::spsa_params<float> p;
  p.add(polar::make_view(w));
  p.add(polar::make_view(b));
  polar::dist::loopback hub;
  hub.schedule(0, 0);
  polar::decentralized_spsa<polar::backend::eigen, float> r(cfg, 0);
  const fmat w_before = w;
  const auto msg = message_of<polar::non_finite_error>(
      [&] { r.step(be, p, hub, [] { return std::numeric_limits<double>::quiet_NaN(); }); });
  BOOST_TEST(contains(msg, "step 0"), msg);
  BOOST_TEST(r.step() == 1u);
  BOOST_TEST(r.stats().failed == 1u);
  BOOST_TEST(same_bits(w, w_before));
  BOOST_TEST(r.log().records(0).empty());
  BOOST_TEST(hub.bytes_published() == 1u);
}

BOOST_AUTO_TEST_CASE(apply_and_catch_up_reject_bad_input_untouched) {
  const auto cfg = settings();
  fmat w(12, 10), b(1, 7);
  initial_weights(w, b);
  const fmat w0 = w;
  polar::backend::eigen be;
  polar::spsa_params<float> p;
  p.add(polar::make_view(w));
  p.add(polar::make_view(b));
  polar::decentralized_spsa<polar::backend::eigen, float> r(cfg, 0);
  BOOST_TEST(contains(message_of<polar::value_error>([&] { r.apply(be, p, {{2, 5}, {1, 9}}); }),
                      "machine 1 follows machine 2 at step 0"));
  BOOST_TEST(contains(message_of<polar::value_error>([&] { r.apply(be, p, {{1, 5}, {1, 9}}); }),
                      "machine 1 appears twice at step 0"));
  BOOST_TEST(contains(message_of<polar::value_error>([&] { r.apply(be, p, {{1, 0x80}}); }), "absent"));
  BOOST_TEST(same_bits(w, w0));
  BOOST_TEST(r.step() == 0u);
  auto other = cfg;
  other.seed = 1;
  BOOST_TEST(contains(message_of<polar::value_error>([&] { r.catch_up(be, p, polar::byte_log(other, 0)); }),
                      "not this run's"));
  BOOST_TEST(contains(message_of<polar::value_error>([&] { r.catch_up(be, p, polar::byte_log(cfg, 5)); }),
                      "covers steps 5 to 5"));
}

// A small log (20 steps, machines 0, 2 and 5 with one absent now and then):
// every cut and every flipped bit of its bytes is rejected; gaps,
// duplicates and bad checksums name the step and machine.
BOOST_AUTO_TEST_CASE(byte_log_rejects_every_corruption) {
  polar::byte_log log(settings(), 40);
  for (std::uint32_t s = 40; s < 60; ++s) {
    std::vector<polar::byte_record> r;
    for (std::uint32_t m : {0u, 2u, 5u})
      if ((s + m) % 7 != 0) r.push_back({m, std::uint8_t((s * 31 + m * 17) % 256 == 0x80 ? 1 : (s * 31 + m * 17) % 256)});
    log.append(s, r);
  }
  const auto bytes = log.serialize();
  BOOST_TEST((polar::byte_log::parse(bytes) == log));
  for (std::size_t n = 0; n < bytes.size(); ++n)
    BOOST_CHECK_THROW(polar::byte_log::parse(bytes.data(), n), polar::format_error);
  std::size_t caught = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = bytes;
      bad[i] ^= std::uint8_t(1u << bit);
      try {
        polar::byte_log::parse(bad);
      } catch (const polar::format_error&) {
        ++caught;
      }
    }
  BOOST_TEST(caught == bytes.size() * 8);

  // A flipped record in step 45's block: its checksum names it.
  constexpr std::size_t header = 56;
  std::size_t at = header;
  for (std::uint32_t s = 40; s < 45; ++s) at += 8 + 5 * log.records(s).size() + 4;
  auto bad = bytes;
  bad[at + 8 + 4] ^= 1;  // the first record's byte
  auto msg = message_of<polar::format_error>([&] { polar::byte_log::parse(bad); });
  BOOST_TEST(contains(msg, "the checksum of step 45"), msg);
  BOOST_TEST(contains(msg, "machines 0, 2, 5"), msg);

  // Gaps and duplicates, by append and in bytes whose checksums are right.
  polar::byte_log g(settings(), 0);
  g.append(0, {{0, 1}});
  g.append(1, {{0, 2}});
  msg = message_of<polar::format_error>([&] { g.append(3, {{0, 1}}); });
  BOOST_TEST(contains(msg, "step 3 follows step 1: a gap (steps 2 to 2 missing)"), msg);
  msg = message_of<polar::format_error>([&] { g.append(1, {{0, 1}}); });
  BOOST_TEST(contains(msg, "step 1 comes again after step 1: a duplicate"), msg);
  msg = message_of<polar::format_error>([&] { g.append(2, {{3, 1}, {3, 2}}); });
  BOOST_TEST(contains(msg, "machine 3 appears twice at step 2"), msg);
  const auto restamp = [](std::vector<std::uint8_t> b, std::size_t block, std::uint32_t step) {
    // Rewrites the step number of the block at `block` and fixes the
    // block's and the whole log's checksums.
    const auto count = polar::detail::get_le<std::uint32_t>(b.data() + block + 4);
    std::vector<std::uint8_t> le;
    polar::detail::put_le(le, step);
    std::copy(le.begin(), le.end(), b.begin() + std::ptrdiff_t(block));
    const std::size_t len = 8 + 5 * std::size_t(count);
    le.clear();
    polar::detail::put_le(le, polar::detail::crc32(b.data() + block, len));
    std::copy(le.begin(), le.end(), b.begin() + std::ptrdiff_t(block + len));
    le.clear();
    polar::detail::put_le(le, polar::detail::crc32(b.data(), b.size() - 4));
    std::copy(le.begin(), le.end(), b.end() - 4);
    return b;
  };
  const auto gb = g.serialize();  // steps 0 and 1, blocks of 17 bytes at 56 and 73
  msg = message_of<polar::format_error>([&] { polar::byte_log::parse(restamp(gb, header + 17, 2)); });
  BOOST_TEST(contains(msg, "step 2 follows step 0: a gap"), msg);
  msg = message_of<polar::format_error>([&] { polar::byte_log::parse(restamp(gb, header + 17, 0)); });
  BOOST_TEST(contains(msg, "step 0 comes again after step 0: a duplicate"), msg);
  auto wrong_version = gb;
  wrong_version[8] = 9;
  msg = message_of<polar::format_error>([&] { polar::byte_log::parse(wrong_version); });
  BOOST_TEST(contains(msg, "version 9"), msg);
}

BOOST_AUTO_TEST_SUITE_END()
