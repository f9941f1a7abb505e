// tests/dist/sharded.cpp: the sharded optimizer (polar/dist/sharded_optimizer.hpp)
// and the communicator collectives (polar/dist/communicator.hpp), with ranks
// as threads of this process (local_group). On 1 to 4 ranks a model of
// Muon, AdamW, MD-AdamW and row-sphere Riemannian Adam groups steps to the
// same bits as one polar::optimizer stepping the averaged gradient, with and
// without clipping; state is split among the ranks; bytes are counted as
// the design says; checkpoints move between rank counts; faults are errors.
// tests/dist/mpi_sharded.cpp runs the same comparison between processes.
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "backends.hpp"
#include "dist/sharded_model.hpp"
#include "polar/backend/eigen.hpp"
#include "polar/core/threads.hpp"
#include "polar/dist/communicator.hpp"
#include "polar/dist/sharded_optimizer.hpp"

BOOST_AUTO_TEST_SUITE(dist_sharded)

// The helpers live in the suite's namespace: polar_tests compiles this file
// in one unity group with others, whose anonymous namespaces are shared.
using sharded_test::fmat;
using sharded_test::model;
using comm_t = polar::dist::local_communicator;
using sharded_t = polar::dist::sharded_optimizer<polar::backend::eigen, float, comm_t>;
using sharded_run = sharded_test::trained<sharded_t, polar::backend::eigen>;
using reference_run = sharded_test::trained<polar::optimizer<polar::backend::eigen, float>, polar::backend::eigen>;

// Runs f(comm, rank) on n threads, one rank each; returns what each threw.
template <class F>
std::vector<std::exception_ptr> run_ranks(int n, F f, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  polar::dist::local_group group(n);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        const polar::thread_limit one(1);
        auto comm = group.rank(r);
        comm.timeout = timeout;
        f(comm, r);
      } catch (...) {
        errors[std::size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

void rethrow_any(const std::vector<std::exception_ptr>& errors) {
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// What each rank threw, as text ("" for nothing) and whether it is an E.
template <class E>
bool is(const std::exception_ptr& e, std::string* text = nullptr) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const E& x) {
    if (text) *text = x.what();
    return true;
  } catch (...) {
    return false;
  }
}


BOOST_AUTO_TEST_CASE(balance_gives_the_largest_first_to_the_least_loaded_rank) {
  // Loads after each: [5,0] [5,3] [5,6] [7,6] [7,8] [8,8].
  const std::vector<int> owners = polar::dist::balance({5, 3, 3, 2, 2, 1}, 2);
  BOOST_TEST(owners == (std::vector<int>{0, 1, 1, 0, 1, 0}), boost::test_tools::per_element());
  // Ties go to the lower index and the lower rank.
  BOOST_TEST(polar::dist::balance({1, 1, 1, 1}, 3) == (std::vector<int>{0, 1, 2, 0}), boost::test_tools::per_element());
  BOOST_TEST(polar::dist::balance({2, 1}, 1) == (std::vector<int>{0, 0}), boost::test_tools::per_element());
  BOOST_CHECK_THROW(polar::dist::balance({1}, 0), polar::value_error);
  BOOST_CHECK_THROW(polar::dist::balance({1, -1}, 2), polar::value_error);
  BOOST_CHECK_THROW(polar::dist::balance({std::nan("")}, 2), polar::value_error);
}

BOOST_AUTO_TEST_CASE(collectives_sum_in_the_order_of_the_ranks) {
  // Values where the order of addition shows in the bits.
  const float x[4] = {1e8f, 1.0f, -1e8f, 3.0f};
  for (int n = 1; n <= 4; ++n) {
    std::vector<std::vector<float>> reduced(static_cast<std::size_t>(n)), scattered(static_cast<std::size_t>(n)), bcast(static_cast<std::size_t>(n));
    std::vector<polar::dist::traffic> counted(static_cast<std::size_t>(n));
    const auto errors = run_ranks(n, [&](comm_t& c, int r) {
      std::vector<float> v = {x[r], float(r) + 0.5f, x[(r + 1) % 4]};
      polar::dist::all_reduce_sum(c, v.data(), v.size());
      reduced[std::size_t(r)] = v;
      // Each rank holds 2 * n values; rank q owns [2q, 2q + 2).
      std::vector<float> mine(std::size_t(2 * n));
      for (int i = 0; i < 2 * n; ++i) mine[std::size_t(i)] = x[(i + r) % 4] * float(i + 1);
      std::vector<std::size_t> offsets(std::size_t(n + 1));
      for (int q = 0; q <= n; ++q) offsets[std::size_t(q)] = std::size_t(2 * q);
      std::vector<float> out(2);
      polar::dist::reduce_scatter_sum(c, mine.data(), offsets.data(), out.data());
      scattered[std::size_t(r)] = out;
      std::vector<float> b = {r == n - 1 ? 7.0f : 0.0f, float(r)};
      c.broadcast(b.data(), sizeof(float) * 2, n - 1);
      bcast[std::size_t(r)] = b;
      c.barrier();
      counted[std::size_t(r)] = c.counted();
    });
    rethrow_any(errors);
    for (int r = 0; r < n; ++r) {
      for (int k = 0; k < 3; ++k) {
        float s = k == 0 ? x[0] : k == 1 ? 0.5f : x[1];
        for (int q = 1; q < n; ++q) s += k == 0 ? x[q] : k == 1 ? float(q) + 0.5f : x[(q + 1) % 4];
        BOOST_TEST(reduced[std::size_t(r)][std::size_t(k)] == s);
      }
      for (int k = 0; k < 2; ++k) {
        const int i = 2 * r + k;
        float s = x[i % 4] * float(i + 1);
        for (int q = 1; q < n; ++q) s += x[(i + q) % 4] * float(i + 1);
        BOOST_TEST(scattered[std::size_t(r)][std::size_t(k)] == s);
      }
      BOOST_TEST(bcast[std::size_t(r)][0] == 7.0f);
      BOOST_TEST(bcast[std::size_t(r)][1] == float(n - 1));
      // all_reduce: 12 bytes to each other rank; reduce-scatter: 8 bytes to
      // each other rank; the broadcast's 8 bytes from the root.
      const std::uint64_t others = std::uint64_t(n - 1);
      BOOST_TEST(counted[std::size_t(r)].bytes_sent == 12 * others + 8 * others + (r == n - 1 ? 8 * others : 0));
      BOOST_TEST(counted[std::size_t(r)].bytes_received == 12 * others + 8 * others + (r == n - 1 ? 0 : 8));
      BOOST_TEST(counted[std::size_t(r)].collectives == 4u);
    }
  }
}

// On Eigen and Thrust's host systems (tests/backends.hpp).
BOOST_AUTO_TEST_CASE_TEMPLATE(steps_are_the_bits_of_one_optimizer_on_the_averaged_gradient, B,
                              polar_test::host_backends) {
  for (const double clip : {0.0, 2.0}) {
    for (int n = 1; n <= 4; ++n) {
      BOOST_TEST_CONTEXT("ranks " << n << ", clip_norm " << clip) {
        const int steps = 3;
        // The reference: one optimizer stepping the average.
        sharded_test::trained<polar::optimizer<B, float>, B> reference(clip);
        auto& ref = reference.m;
        auto& one = reference.opt;
        for (int s = 0; s < steps; ++s) sharded_test::step_averaged(one, ref, s, n);
        std::vector<model> got(static_cast<std::size_t>(n));
        std::vector<std::size_t> state(static_cast<std::size_t>(n));
        const auto errors = run_ranks(n, [&](comm_t& c, int r) {
          model m = sharded_test::make_model();
          B b;
          polar::dist::sharded_optimizer<B, float, comm_t> opt(b, c);
          opt.bucket_bytes = 4096;  // several buckets
          sharded_test::configure(opt, clip);
          sharded_test::add_all(opt, m);
          for (int s = 0; s < steps; ++s) sharded_test::step_own(opt, m, r, s);
          state[std::size_t(r)] = opt.state_bytes();
          got[std::size_t(r)] = m;
        });
        rethrow_any(errors);
        std::size_t total = 0;
        for (int r = 0; r < n; ++r) {
          total += state[std::size_t(r)];
          for (std::size_t t = 0; t < ref.w.size(); ++t)
            BOOST_TEST(sharded_test::same_bits(got[std::size_t(r)].w[t], ref.w[t]),
                       "rank " << r << ", tensor " << ref.names[t]);
        }
        // Each tensor's state is on one rank only.
        BOOST_TEST(total == one.state_bytes());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(state_and_bytes_per_rank_are_the_designs) {
  const std::size_t single = sharded_test::muon_set::single_state_bytes();
  for (int n = 1; n <= 4; ++n) {
    std::vector<std::size_t> state(static_cast<std::size_t>(n));
    std::vector<polar::dist::traffic> before(static_cast<std::size_t>(n)), after(static_cast<std::size_t>(n));
    std::vector<std::size_t> p_bytes(static_cast<std::size_t>(n));
    const auto errors = run_ranks(n, [&](comm_t& c, int r) {
      sharded_test::muon_set set(r);
      polar::backend::eigen b;
      sharded_t opt(b, c);
      opt.bucket_bytes = 16 * 40 * 4 * 5;  // 5 matrices a bucket
      set.add_to(opt);
      opt.step(set.grads());
      before[std::size_t(r)] = opt.counted();
      opt.step(set.grads());
      after[std::size_t(r)] = opt.counted();
      state[std::size_t(r)] = opt.state_bytes();
      p_bytes[std::size_t(r)] = opt.parameter_bytes();
    });
    rethrow_any(errors);
    for (int r = 0; r < n; ++r) {
      BOOST_TEST(double(state[std::size_t(r)]) <= (1.0 / n + 0.05) * double(single));
      const double expected = sharded_test::muon_set::step_bytes(n, double(p_bytes[std::size_t(r)]));
      BOOST_TEST(double(after[std::size_t(r)].bytes_sent - before[std::size_t(r)].bytes_sent) == expected);
      BOOST_TEST(double(after[std::size_t(r)].bytes_received - before[std::size_t(r)].bytes_received) == expected);
      // Collectives a step: the header, per bucket (5 of them) an all-to-all
      // and an all-gather, the measures, the status.
      BOOST_TEST(after[std::size_t(r)].collectives - before[std::size_t(r)].collectives == 13u);
    }
  }
}

BOOST_AUTO_TEST_CASE(checkpoints_move_between_rank_counts) {
  const std::string path = "polar_test_sharded_" + std::to_string(std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  // The reference: 2 steps averaged over 3 ranks, then 2 over m ranks.
  for (int m : {1, 2, 4, 3}) {
    BOOST_TEST_CONTEXT("saved on 3 ranks, resumed on " << m) {
      reference_run reference(2.0);
      auto& ref = reference.m;
      auto& one = reference.opt;
      for (int s = 0; s < 4; ++s) sharded_test::step_averaged(one, ref, s, s < 2 ? 3 : m);
      rethrow_any(run_ranks(3, [&](comm_t& c, int r) {
        sharded_run run(2.0, c);
        auto& mo = run.m;
        auto& opt = run.opt;
        for (int s = 0; s < 2; ++s) sharded_test::step_own(opt, mo, r, s);
        opt.save(path);
      }));
      std::vector<model> got(static_cast<std::size_t>(m));
      rethrow_any(run_ranks(m, [&](comm_t& c, int r) {
        sharded_run run(2.0, c);  // the initial weights: load overwrites them
        auto& mo = run.m;
        auto& opt = run.opt;
        opt.load(path);
        if (opt.steps() != 2) throw std::runtime_error("resumed at step " + std::to_string(opt.steps()));
        for (int s = 2; s < 4; ++s) sharded_test::step_own(opt, mo, r, s);
        got[std::size_t(r)] = mo;
      }));
      for (int r = 0; r < m; ++r)
        for (std::size_t t = 0; t < ref.w.size(); ++t)
          BOOST_TEST(sharded_test::same_bits(got[std::size_t(r)].w[t], ref.w[t]),
                     "rank " << r << ", tensor " << ref.names[t]);
      std::remove(path.c_str());
      for (int r = 0; r < 3; ++r) std::remove(sharded_t::shard_path(path, r, 3).c_str());
    }
  }
  // A missing shard: every rank refuses, nothing is written.
  rethrow_any(run_ranks(2, [&](comm_t& c, int) {
    sharded_run run(0.0, c);
    run.opt.save(path);
  }));
  std::remove(sharded_t::shard_path(path, 1, 2).c_str());
  const auto errors = run_ranks(2, [&](comm_t& c, int) {
    sharded_run run(0.0, c);
    auto& mo = run.m;
    auto& opt = run.opt;
    const model before = mo;
    opt.shard();
    try {
      opt.load(path);
    } catch (...) {
      for (std::size_t t = 0; t < mo.w.size(); ++t)
        if (!sharded_test::same_bits(mo.w[t], before.w[t])) throw std::runtime_error("written after a failed load");
      throw;
    }
  });
  for (const auto& e : errors) BOOST_TEST(is<polar::format_error>(e));
  std::remove(path.c_str());
  std::remove(sharded_t::shard_path(path, 0, 2).c_str());
}

BOOST_AUTO_TEST_CASE(faults_are_errors_within_the_timeout) {
  using namespace std::chrono_literals;
  // A rank that stops calling: the others give up after the timeout.
  {
    const auto start = std::chrono::steady_clock::now();
    const auto errors = run_ranks(
        3,
        [&](comm_t& c, int r) {
          sharded_run run(0.0, c);
          auto& m = run.m;
          auto& opt = run.opt;
          opt.shard();
          // The short timeout from here on: a loaded machine may be slow
          // in shard(), which is not the fault under test.
          c.timeout = 300ms;
          if (r == 2) return;  // dies
          sharded_test::step_own(opt, m, r, 0);
        });
    const auto took = std::chrono::steady_clock::now() - start;
    std::string text;
    BOOST_TEST(is<polar::transport_error>(errors[0], &text));
    BOOST_TEST(text.find("did not arrive") != std::string::npos, text);
    BOOST_TEST(text.find("2") != std::string::npos, text);
    BOOST_TEST(is<polar::transport_error>(errors[1]));
    BOOST_TEST(!errors[2]);
    BOOST_TEST((took < 30s));
  }
  // A rank with another model: every rank says so at shard().
  {
    const auto errors = run_ranks(3, [&](comm_t& c, int r) {
      model m = sharded_test::make_model();
      if (r == 1) m.w.back() = fmat::Zero(1, 33);
      polar::backend::eigen b;
      sharded_t opt(b, c);
      sharded_test::configure(opt, 0.0);
      sharded_test::add_all(opt, m);
      opt.shard();
    });
    for (int r = 0; r < 3; ++r) {
      std::string text;
      BOOST_TEST(is<polar::shape_error>(errors[std::size_t(r)], &text), "rank " << r);
      BOOST_TEST(text.find("another model") != std::string::npos, text);
    }
  }
  // A rank whose gradient does not fit: it throws shape_error, the others
  // transport_error naming it; no rank writes.
  {
    std::vector<int> unchanged(3, 0);
    const auto errors = run_ranks(3, [&](comm_t& c, int r) {
      sharded_run run(0.0, c);
      auto& m = run.m;
      auto& opt = run.opt;
      const model before = m;
      opt.shard();
      auto g = sharded_test::gradients(m, r, 0);
      if (r == 1) g[0] = fmat::Zero(3, 3);
      std::vector<polar::param_view<const float>> v;
      for (auto& x : g) v.push_back(polar::make_view(x));
      try {
        opt.step(v);
      } catch (...) {
        bool same = true;
        for (std::size_t t = 0; t < m.w.size(); ++t) same = same && sharded_test::same_bits(m.w[t], before.w[t]);
        unchanged[std::size_t(r)] = same;
        throw;
      }
    });
    std::string text;
    BOOST_TEST(is<polar::shape_error>(errors[1]));
    BOOST_TEST(is<polar::transport_error>(errors[0], &text));
    BOOST_TEST(text.find("rank 1 refused") != std::string::npos, text);
    BOOST_TEST(is<polar::transport_error>(errors[2]));
    BOOST_TEST(unchanged == (std::vector<int>{1, 1, 1}), boost::test_tools::per_element());
  }
  // A policy that refuses its tensor's step on the owner (the sphere's
  // point moved off the sphere, with the check on): the owner throws the
  // policy's error, every other rank polar::error naming it; every rank
  // holds the owner's weights and the step does not count.
  {
    std::vector<model> got(3);
    std::vector<long> steps(3, -1);
    const auto errors = run_ranks(3, [&](comm_t& c, int r) {
      sharded_run run(0.0, c);
      run.opt.settings<polar::riemannian_adam<polar::hypersphere>>("sphere").check_point = true;
      run.opt.shard();
      const polar::index sphere = 6;  // "sphere.w"
      if (run.opt.owner(sphere) == r) run.m.w[std::size_t(sphere)] *= 2.0f;
      try {
        sharded_test::step_own(run.opt, run.m, r, 0);
      } catch (...) {
        got[std::size_t(r)] = run.m;
        steps[std::size_t(r)] = run.opt.steps();
        throw;
      }
    });
    int owners = 0, others = 0;
    for (int r = 0; r < 3; ++r) {
      std::string text;
      if (is<polar::value_error>(errors[std::size_t(r)], &text)) {
        ++owners;
      } else if (is<polar::error>(errors[std::size_t(r)], &text)) {
        ++others;
        BOOST_TEST(text.find("refused the step of 'sphere.w'") != std::string::npos, text);
      }
      BOOST_TEST(steps[std::size_t(r)] == 0);
      for (std::size_t t = 0; t < got[0].w.size(); ++t)
        BOOST_TEST(sharded_test::same_bits(got[std::size_t(r)].w[t], got[0].w[t]), "rank " << r << ", tensor " << t);
    }
    BOOST_TEST(owners == 1);
    BOOST_TEST(others == 2);
  }
  // A rank resumed from an older checkpoint is out of step.
  {
    const std::string path = "polar_test_sharded_step_" + std::to_string(std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
    const auto errors = run_ranks(2, [&](comm_t& c, int r) {
      sharded_run run(0.0, c);
      auto& m = run.m;
      auto& opt = run.opt;
      sharded_test::step_own(opt, m, r, 0);
      opt.save(path + "a");
      sharded_test::step_own(opt, m, r, 1);
      opt.save(path + "b");
      opt.load(r == 1 ? path + "a" : path + "b");
      sharded_test::step_own(opt, m, r, 2);
    });
    for (int r = 0; r < 2; ++r) {
      std::string text;
      BOOST_TEST(is<polar::transport_error>(errors[std::size_t(r)], &text), "rank " << r);
      BOOST_TEST(text.find("out of step: rank 0 at step 2, rank 1 at step 1") != std::string::npos, text);
    }
    for (const char* s : {"a", "b"}) {
      std::remove((path + s).c_str());
      for (int r = 0; r < 2; ++r) std::remove(sharded_t::shard_path(path + s, r, 2).c_str());
    }
  }
}

BOOST_AUTO_TEST_CASE(a_non_finite_gradient_is_decided_for_the_whole_model) {
  for (const auto policy : {polar::nonfinite_policy::raise, polar::nonfinite_policy::skip, polar::nonfinite_policy::zero}) {
    BOOST_TEST_CONTEXT("policy " << int(policy)) {
      const int n = 3;
      // The reference, with the NaN in rank 2's gradient of tensor 1.
      reference_run reference(2.0);
      auto& ref = reference.m;
      auto& one = reference.opt;
      const model start = ref;
      one.nonfinite = policy;
      bool ref_threw = false;
      try {
        sharded_test::step_averaged(one, ref, 0, n, /*nan_rank=*/2);
      } catch (const polar::non_finite_error&) {
        ref_threw = true;
      }
      BOOST_TEST(ref_threw == (policy == polar::nonfinite_policy::raise));
      std::vector<model> got(static_cast<std::size_t>(n));
      std::vector<long> skipped(static_cast<std::size_t>(n));
      const auto errors = run_ranks(n, [&](comm_t& c, int r) {
        model m = sharded_test::make_model();
        polar::backend::eigen b;
        sharded_t opt(b, c);
        sharded_test::configure(opt, 2.0);
        opt.nonfinite = policy;
        sharded_test::add_all(opt, m);
        try {
          sharded_test::step_own(opt, m, r, 0, /*nan=*/r == 2);
        } catch (...) {
          got[std::size_t(r)] = m;
          throw;
        }
        got[std::size_t(r)] = m;
        skipped[std::size_t(r)] = opt.skipped();
      });
      for (int r = 0; r < n; ++r) {
        BOOST_TEST(is<polar::non_finite_error>(errors[std::size_t(r)]) == (policy == polar::nonfinite_policy::raise));
        if (policy == polar::nonfinite_policy::skip) BOOST_TEST(skipped[std::size_t(r)] == 1);
        for (std::size_t t = 0; t < ref.w.size(); ++t)
          BOOST_TEST(sharded_test::same_bits(got[std::size_t(r)].w[t], ref.w[t]), "rank " << r << ", tensor " << t);
      }
      if (policy != polar::nonfinite_policy::zero)
        for (std::size_t t = 0; t < ref.w.size(); ++t) BOOST_TEST(sharded_test::same_bits(ref.w[t], start.w[t]));
    }
  }
}

BOOST_AUTO_TEST_CASE(configuration_errors) {
  rethrow_any(run_ranks(1, [&](comm_t& c, int) {
    sharded_run run(0.0, c);
    auto& m = run.m;
    auto& opt = run.opt;
    BOOST_CHECK_THROW(opt.add(m.names[0], polar::make_view(m.w[0])), polar::value_error);  // a name is used twice
    opt.shard();
    fmat extra = fmat::Zero(2, 2);
    BOOST_CHECK_THROW(opt.add("late", polar::make_view(extra)), polar::value_error);
    BOOST_CHECK_THROW(opt.add_group("late", polar::adamw_direction{}), polar::value_error);
    BOOST_TEST(opt.owner(0) == 0);
    BOOST_CHECK_THROW(polar::dist::local_group(0), polar::value_error);
  }));
}

BOOST_AUTO_TEST_SUITE_END()
