// bench/bench_support.hpp: what polar's benchmarks share.
#pragma once

#include <chrono>

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

}  // namespace polar_bench
