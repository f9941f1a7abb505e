// bench/bench_support.hpp: what polar's benchmarks share.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace polar_bench {

/// Seconds per call of f: one warm-up call, then as many calls as fit in
/// `budget` seconds. For baselines and ratios measured inside a benchmark
/// in the same process.
template <class F>
double seconds(F&& f, double budget = 0.3) {
  f();
  const auto t0 = std::chrono::steady_clock::now();
  int reps = 0;
  double el = 0;
  do {
    f();
    ++reps;
    el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (el < budget);
  return el / reps;
}

/// Time of a over time of b, for a ratio that load changes on a shared
/// machine should not skew: `rounds` rounds, each timing a then b for
/// `budget` seconds apiece, and the median of the rounds' ratios.
template <class A, class B>
double interleaved_ratio(A&& a, B&& b, int rounds = 7, double budget = 0.05) {
  std::vector<double> r;
  for (int k = 0; k < rounds; ++k) {
    const double ta = polar_bench::seconds(a, budget);
    r.push_back(ta / polar_bench::seconds(b, budget));
  }
  std::nth_element(r.begin(), r.begin() + rounds / 2, r.end());
  return r[rounds / 2];
}

/// Time of a over time of b, call by call: `pairs` pairs of one call of a
/// and one of b (after one warm-up call of each), and the median of the
/// pairs' ratios. Each pair sees the machine in the same state, so a ratio
/// of steps that take milliseconds holds still while the machine's speed
/// drifts; where one call takes a long time, interleaved_ratio needs fewer.
template <class A, class B>
double paired_ratio(A&& a, B&& b, int pairs = 201) {
  const auto once = [](auto& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  a();
  b();
  std::vector<double> r;
  for (int k = 0; k < pairs; ++k) {
    const double ta = once(a);
    r.push_back(ta / once(b));
  }
  std::nth_element(r.begin(), r.begin() + pairs / 2, r.end());
  return r[std::size_t(pairs / 2)];
}

}  // namespace polar_bench
