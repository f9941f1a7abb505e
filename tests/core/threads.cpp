// Tests of polar/core/threads.hpp: the thread count and where it comes from,
// the pool, and that results do not depend on the number of threads.
#include "polar/core/threads.hpp"

#include <boost/test/unit_test.hpp>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#include <Eigen/Core>

#include "polar/backend/eigen.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "backends.hpp"
#include "support.hpp"

namespace {

using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using dmat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Restores the process-wide count when a test ends.
struct process_default {
  ~process_default() { polar::set_threads(0); }
};

template <class M>
M gaussian(polar::index r, polar::index c, std::uint64_t seed) {
  M m(r, c);
  polar::backend::eigen be;
  be.fill_random(polar::make_view(m), polar::rng_key{seed}, polar::distribution::normal);
  return m;
}

template <class M>
bool same_bits(const M& a, const M& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(typename M::Scalar) * std::size_t(a.size())) == 0;
}

/// f() run on 1 thread, then on each count in `counts`: every result must be
/// the same bits as the first.
template <class F>
void same_on_any_thread_count(F&& f, std::initializer_list<int> counts = {2, 3, 5}) {
  auto first = [&] {
    const polar::thread_limit one(1);
    return f();
  }();
  for (const int t : counts) {
    const polar::thread_limit limit(t);
    BOOST_TEST(polar::threads() == t);
    BOOST_CHECK_MESSAGE(same_bits(f(), first), "the result on " << t << " threads differs from 1 thread's");
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(core_threads)

BOOST_AUTO_TEST_CASE(count_comes_from_scope_then_process_then_default) {
  const process_default restore;
  const int base = polar::threads();
  BOOST_TEST(base >= 1);
  polar::set_threads(3);
  BOOST_TEST(polar::threads() == 3);
  {
    const polar::thread_limit outer(2);
    BOOST_TEST(polar::threads() == 2);
    {
      const polar::thread_limit inner(5);
      BOOST_TEST(polar::threads() == 5);
    }
    BOOST_TEST(polar::threads() == 2);
    // The scope is the calling thread's: another thread sees the process's.
    int seen = 0;
    std::thread([&] { seen = polar::threads(); }).join();
    BOOST_TEST(seen == 3);
  }
  BOOST_TEST(polar::threads() == 3);
  polar::set_threads(0);
  BOOST_TEST(polar::threads() == base);
#if defined(_OPENMP)
  // The default follows OpenMP's count on this thread, and polar's setting
  // leaves OpenMP's alone.
  const int omp = omp_get_max_threads();
  polar::set_threads(7);
  BOOST_TEST(omp_get_max_threads() == omp);
  polar::set_threads(0);
  if (std::getenv("POLAR_NUM_THREADS") == nullptr) BOOST_TEST(polar::threads() == omp);
#endif
}

BOOST_AUTO_TEST_CASE(bad_counts_are_value_errors) {
  polar_test::check_throws<polar::value_error>([] { polar::set_threads(-2); },
                                               {"polar::set_threads", ">= 0", "-2"});
  polar_test::check_throws<polar::value_error>([] { polar::thread_limit t(0); },
                                               {"polar::thread_limit", ">= 1", "got 0"});
  BOOST_TEST(polar::detail::host::process_threads().load() == 0);  // unchanged by the failed call
}

BOOST_AUTO_TEST_CASE(one_thread_inside_openmp_regions_and_pool_tasks) {
  const polar::thread_limit four(4);
  std::vector<int> inside(8, 0);
  polar::detail::host::parallel_tasks(8, [&](polar::index i) { inside[std::size_t(i)] = polar::threads(); });
  for (const int t : inside) BOOST_TEST(t == 1);
#if defined(_OPENMP)
  int in_region = 0;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    in_region = polar::threads();
  }
  BOOST_TEST(in_region == 1);
#endif
}

BOOST_AUTO_TEST_CASE(pool_runs_every_task_once_and_rethrows) {
  polar::detail::host::pool p;
  for (const int team : {1, 2, 4}) {
    std::vector<std::atomic<int>> hits(100);
    p.run(team, 100, [&](polar::index i) { hits[std::size_t(i)].fetch_add(1); });
    for (auto& h : hits) BOOST_TEST(h.load() == 1);
  }
  BOOST_TEST(p.started() == 3);
  // A task that throws: the others still run, and the caller gets the error
  // once they have ended.
  std::atomic<int> ran{0};
  BOOST_CHECK_THROW(p.run(3, 50,
                          [&](polar::index i) {
                            ran.fetch_add(1);
                            if (i == 17) throw std::runtime_error("task 17");
                          }),
                    std::runtime_error);
  BOOST_TEST(ran.load() == 50);
  // The pool is usable afterwards.
  std::atomic<int> again{0};
  p.run(3, 10, [&](polar::index) { again.fetch_add(1); });
  BOOST_TEST(again.load() == 10);
}

BOOST_AUTO_TEST_CASE(openmp_threads_give_the_same_bits) {
  // polar::use_openmp_threads: the same work on OpenMP's threads (where the
  // test is compiled with OpenMP), the same bits as on polar's pool.
  const auto a = gaussian<fmat>(300, 700, 11), b = gaussian<fmat>(700, 500, 12);
  polar::backend::eigen be;
  const auto product = [&] {
    fmat c(300, 500);
    be.gemm(1.0f, polar::op::n, polar::make_view(a), polar::op::n, polar::make_view(b), 0.0f, polar::make_view(c));
    return c;
  };
  // thrust<omp>'s elementwise calls then run in Thrust's OpenMP regions:
  // the same bits; its reductions add in another order.
  polar_test::omp_or_eigen omp;  // Eigen where Thrust is not built
  const auto map = [&] {
    fmat out = b;
    omp.axpby(2.0f, polar::make_view(b), -0.5f, polar::make_view(out));
    return out;
  };
  const polar::thread_limit two(2);
  const fmat on_pool = product(), map_on_pool = map();
  const float norm_on_pool = omp.norm(polar::make_view(b));
  polar::use_openmp_threads(true);
  std::atomic<int> seen{0};
  polar::detail::host::parallel_tasks(4, [&](polar::index) { seen.fetch_add(1); });
  const fmat on_openmp = product(), map_on_openmp = map();
  const float norm_on_openmp = omp.norm(polar::make_view(b));
  polar::use_openmp_threads(false);
  BOOST_TEST(seen.load() == 4);
  BOOST_TEST(same_bits(on_pool, on_openmp));
  BOOST_TEST(same_bits(map_on_pool, map_on_openmp));
  BOOST_TEST(norm_on_openmp == norm_on_pool, boost::test_tools::tolerance(1e-6f));
}

BOOST_AUTO_TEST_CASE(concurrent_callers_share_the_pool) {
  // Two threads call products at once: one gets the pool, the other runs
  // on its own thread; both results are right (the same bits as alone).
  const auto a = gaussian<fmat>(300, 500, 1), b = gaussian<fmat>(500, 400, 2);
  fmat alone(300, 400);
  polar::backend::eigen be;
  const auto product = [&](fmat& c) {
    be.gemm(1.0f, polar::op::n, polar::make_view(a), polar::op::n, polar::make_view(b), 0.0f, polar::make_view(c));
  };
  product(alone);
  std::vector<fmat> out(4, fmat(300, 400));
  std::vector<std::thread> callers;
  for (auto& c : out)
    callers.emplace_back([&] {
      for (int k = 0; k < 5; ++k) product(c);
    });
  for (auto& t : callers) t.join();
  for (const auto& c : out) BOOST_TEST(same_bits(c, alone));
}

BOOST_AUTO_TEST_CASE(products_are_the_same_bits_on_any_thread_count) {
  polar::backend::eigen be;
  // Wide and tall results (cut by columns and by rows), every transpose
  // combination, shapes that are not multiples of the block quanta, and a
  // strided output.
  for (const auto& s : std::vector<std::array<polar::index, 3>>{{200, 700, 300}, {700, 200, 300}, {97, 1030, 61}}) {
    const polar::index m = s[0], n = s[1], k = s[2];
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        const auto a = ta ? gaussian<fmat>(k, m, 3) : gaussian<fmat>(m, k, 3);
        const auto b = tb ? gaussian<fmat>(n, k, 4) : gaussian<fmat>(k, n, 4);
        same_on_any_thread_count([&] {
          fmat c = gaussian<fmat>(m, n, 5);
          be.gemm(0.5f, ta ? polar::op::t : polar::op::n, polar::make_view(a), tb ? polar::op::t : polar::op::n,
                  polar::make_view(b), 0.25f, polar::make_view(c));
          return c;
        });
      }
  }
  const auto x = gaussian<dmat>(600, 900, 6);
  same_on_any_thread_count([&] {
    dmat c = dmat::Zero(600, 600);
    be.syrk(polar::uplo::lower, 1.0, polar::op::n, polar::make_view(x), 0.0, polar::make_view(c));
    be.symmetrize(polar::uplo::lower, polar::make_view(c));
    return c;
  });
  // A long inner dimension: op(A) is read in panels of columns (4096 at
  // n = 128 in float), here two of them.
  const auto xl = gaussian<fmat>(128, 8300, 10);
  same_on_any_thread_count([&] {
    fmat c = fmat::Zero(128, 128);
    be.syrk(polar::uplo::lower, 1.0f, polar::op::n, polar::make_view(xl), 0.0f, polar::make_view(c));
    return c;
  });
  const auto g = gaussian<fmat>(256, 1024, 7);
  same_on_any_thread_count([&] {
    fmat out(256, 1024);
    polar::newton_schulz ns;
    polar::newton_schulz::workspace<polar::backend::eigen, float> ws;
    ns(be, polar::make_view(g), polar::make_view(out), ws);
    return out;
  });
}

// polar's products run Eigen's GEMM kernels through a loop of their own
// (eigen_kernels::gemm_loop), which applies beta to each row panel of C just
// before the kernel first adds into it instead of in a pass over all of C
// first. Each element gets the same operations, so the result is Eigen's own
// product, bit for bit, on any thread count: for every transpose combination,
// beta 0 (with NaN in C, which must not leak), 1 and another, and shapes that
// take several of Eigen's blocks along the depth, C's columns and C's rows
// (where the right-hand side is packed once), besides the small shapes that
// Eigen evaluates without its GEMM.
template <class M>
void check_products_against_eigen(std::initializer_list<std::array<polar::index, 3>> shapes) {
  using T = typename M::Scalar;
  polar::backend::eigen be;
  for (const auto& s : shapes) {
    const polar::index m = s[0], n = s[1], k = s[2];
    for (const bool ta : {false, true})
      for (const bool tb : {false, true})
        for (const T beta : {T(0), T(1), T(0.25)}) {
          BOOST_TEST_CONTEXT(m << " x " << n << " x " << k << " op " << ta << tb << " beta " << beta) {
            const auto a = ta ? gaussian<M>(k, m, 3) : gaussian<M>(m, k, 3);
            const auto b = tb ? gaussian<M>(n, k, 4) : gaussian<M>(k, n, 4);
            const M c0 = gaussian<M>(m, n, 5);
            M ref = c0;
            {
              const polar::detail::host::serial_eigen one;
              if (beta == T(0))
                ref.setZero();
              else if (beta != T(1))
                ref *= beta;
              if (ta && tb)
                ref.noalias() += T(0.5) * a.transpose() * b.transpose();
              else if (ta)
                ref.noalias() += T(0.5) * a.transpose() * b;
              else if (tb)
                ref.noalias() += T(0.5) * a * b.transpose();
              else
                ref.noalias() += T(0.5) * a * b;
            }
            for (const int threads : {1, 2, 3}) {
              const polar::thread_limit limit(threads);
              M c = c0;
              if (beta == T(0)) c.fill(std::numeric_limits<T>::quiet_NaN());
              be.gemm(T(0.5), ta ? polar::op::t : polar::op::n, polar::make_view(a), tb ? polar::op::t : polar::op::n,
                      polar::make_view(b), beta, polar::make_view(c));
              BOOST_TEST(same_bits(c, ref), "on " << threads << " threads");
            }
          }
        }
  }
}

BOOST_AUTO_TEST_CASE(products_are_eigens_own_bits) {
  check_products_against_eigen<fmat>({{5, 6, 4}, {1, 300, 200}, {9, 7, 6}, {97, 1030, 61}, {700, 300, 1000}, {200, 3000, 300}});
  check_products_against_eigen<dmat>({{9, 7, 6}, {700, 300, 1000}});
}

// On thrust<omp> too: its elementwise calls and reductions run on polar's
// pool in parts that depend on the sizes alone (thrust_algorithms.hpp), not
// in Thrust's OpenMP regions, whose reductions depend on the thread count.
BOOST_AUTO_TEST_CASE_TEMPLATE(reductions_and_steps_are_the_same_bits_on_any_thread_count, B,
                              polar_test::eigen_and_omp) {
  B be;
  const auto x = gaussian<fmat>(512, 1024, 8), y = gaussian<fmat>(512, 1024, 9);
  const auto reductions = [&] {
    Eigen::Matrix<float, 1, 5> r;
    r << be.dot(polar::make_view(x), polar::make_view(y)), be.sum(polar::make_view(x)),
        be.norm(polar::make_view(x)), be.max_abs(polar::make_view(y)), float(be.all_finite(polar::make_view(x)));
    return r;
  };
  same_on_any_thread_count(reductions);
  // Views that are not contiguous: an elementwise map and a norm over them.
  const auto strided = [&] {
    fmat out = y;
    const auto dst = polar::make_view(out).block(0, 100, 512, 700);
    be.axpby(2.0f, polar::make_view(x).block(0, 0, 512, 700), 0.5f, dst);
    out(0, 0) = be.norm(polar::matrix_view<const float>(dst));
    return out;
  };
  same_on_any_thread_count(strided);
  // Three steps of each direction from the same start.
  const auto w0 = gaussian<fmat>(384, 1024, 10);
  const auto steps = [&](auto dir, bool unit_rows = false) {
    return [&, dir, unit_rows]() mutable {
      fmat w = w0 * 0.05f;
      if (unit_rows) w.rowwise().normalize();
      auto st = dir.init(be, polar::make_view(w));
      for (int k = 0; k < 3; ++k) {
        const fmat gk = gaussian<fmat>(384, 1024, 20 + std::uint64_t(k)) * 1e-3f;
        dir.step(be, polar::make_view(w), polar::make_view(gk), st);
      }
      return w;
    };
  };
  same_on_any_thread_count(steps(polar::adamw_direction{}));
  same_on_any_thread_count(steps(polar::muon_direction<>{}));
  same_on_any_thread_count(steps(polar::row_col_gains<polar::adamw_direction>{}));
  polar::riemannian_adam<polar::hypersphere> row_adam;
  row_adam.geometry.scope = polar::sphere_scope::rows;
  same_on_any_thread_count(steps(row_adam, true));
}

BOOST_AUTO_TEST_SUITE_END()
