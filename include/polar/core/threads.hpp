// polar/core/threads.hpp: how many threads polar's host code uses, and the
// pool its products run on.
//
// All of polar's host threading runs on one small pool (detail::host::pool):
// products (GEMM, the symmetric rank-k update) cut into independent blocks,
// each computed by a single-threaded Eigen kernel, and elementwise loops and
// reductions cut into parts. The threads take blocks or parts one at a time
// from a shared counter and meet only at the end of a call; a thread with
// nothing to do looks for work briefly (0.5 ms), then yields its core to any
// other runnable thread between looks, then sleeps (see idle_spin).
//
// Eigen's own threaded GEMM and OpenMP's barriers wait by spinning. On a
// machine whose cores are shared with other busy processes (a data loader, a
// compiler, another job) a spinning thread burns the time slice its
// descheduled partner needs: a Muon step on two threads took 12 times its
// quiet time under two busy processes (docs/threads.md).
//
// A product's blocks depend on its shape alone and give the same bits as the
// whole product on one thread; a loop's parts depend on its size alone. So
// results are the same bits on 1, 2 or 8 threads, and from run to run.
//
// Thread count, from the first that is set:
//   1. polar::thread_limit, a scope on the calling thread;
//   2. polar::set_threads(n), for the whole process;
//   3. the environment variable POLAR_NUM_THREADS, read once;
//   4. OpenMP's omp_get_max_threads() (OMP_NUM_THREADS) when the translation
//      unit is compiled with OpenMP, and 1 when it is not (a serial build).
// Inside an OpenMP parallel region, and on the pool's own threads, polar
// runs on the calling thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "polar/core/config.hpp"
#include "polar/core/error.hpp"

namespace polar {

namespace detail::host {

/// The process-wide count set by set_threads (0: not set).
inline std::atomic<int>& process_threads() {
  static std::atomic<int> n{0};
  return n;
}
/// The calling thread's thread_limit (0: none).
inline int& scoped_threads() {
  static thread_local int n = 0;
  return n;
}
/// Set on the pool's own threads, so work they run does not fan out again.
inline bool& on_pool_thread() {
  static thread_local bool b = false;
  return b;
}
/// POLAR_NUM_THREADS, read once (0 when unset or not a positive integer).
inline int environment_threads() {
  static const int n = [] {
    const char* s = std::getenv("POLAR_NUM_THREADS");
    if (!s || !*s) return 0;
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    return (*end == '\0' && v > 0 && v <= 4096) ? int(v) : 0;
  }();
  return n;
}

/// Set by polar::use_openmp_threads for the whole process.
inline std::atomic<bool>& openmp_everywhere() {
  static std::atomic<bool> b{false};
  return b;
}

inline bool in_openmp_region() {
#if defined(_OPENMP)
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

}  // namespace detail::host

/// The number of threads polar's host loops and products use when called
/// from this thread now (see the header's comment for where it comes from).
/// 1 inside an OpenMP parallel region and on polar's pool threads.
inline int threads() noexcept {
  if (detail::host::on_pool_thread() || detail::host::in_openmp_region()) return 1;
  if (const int s = detail::host::scoped_threads(); s > 0) return s;
  if (const int p = detail::host::process_threads().load(std::memory_order_relaxed); p > 0) return p;
  if (const int e = detail::host::environment_threads(); e > 0) return e;
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the number of threads polar uses in the whole process (n >= 1), or
/// restores the default (n = 0: POLAR_NUM_THREADS, else OpenMP's count).
/// Throws value_error for n < 0. Does not change OpenMP's own setting, so
/// the caller's other OpenMP code is not affected.
inline void set_threads(int n) {
  if (n < 0) detail::raise<value_error>("polar::set_threads", "the thread count must be >= 0 (0: the default), got ", n);
  detail::host::process_threads().store(n, std::memory_order_relaxed);
}

/// Runs polar's threaded work on OpenMP's threads (on = true) instead of its
/// own pool (false, the default), in the whole process. For a program whose
/// own code runs OpenMP loops between polar's calls (a model's forward and
/// backward passes): OpenMP's threads look for work for a while after each
/// region, and polar's pool threads would take turns with them on the
/// cores; with one set of threads there is nothing to take turns with. The
/// GPT example's training step took 1.6 times as long with two sets
/// (docs/threads.md). Without OpenMP in the translation unit it has no
/// effect.
inline void use_openmp_threads(bool on) { detail::host::openmp_everywhere().store(on); }

/// Limits the threads polar uses for calls made from this thread while the
/// object lives (for example 1 in each of several worker threads, or in a
/// process that shares its cores with others). Scopes nest; the innermost
/// holds. Not copyable.
class thread_limit {
 public:
  /// n >= 1; throws value_error otherwise.
  explicit thread_limit(int n) : previous_(detail::host::scoped_threads()) {
    if (n < 1) detail::raise<value_error>("polar::thread_limit", "the thread count must be >= 1, got ", n);
    detail::host::scoped_threads() = n;
  }
  ~thread_limit() { detail::host::scoped_threads() = previous_; }
  thread_limit(const thread_limit&) = delete;
  thread_limit& operator=(const thread_limit&) = delete;

 private:
  int previous_;
};

namespace detail::host {

/// While it lives, OpenMP's thread count on this thread is t (what
/// omp_get_max_threads() reports, and the team of the regions it opens);
/// then what the caller had. Without OpenMP it does nothing.
class openmp_count {
 public:
  explicit openmp_count([[maybe_unused]] int t) {
#if defined(_OPENMP)
    previous_ = omp_get_max_threads();
    if (t != previous_) omp_set_num_threads(t);
#endif
  }
  ~openmp_count() {
#if defined(_OPENMP)
    if (omp_get_max_threads() != previous_) omp_set_num_threads(previous_);
#endif
  }
  openmp_count(const openmp_count&) = delete;
  openmp_count& operator=(const openmp_count&) = delete;

 private:
  [[maybe_unused]] int previous_ = 1;
};

/// While it lives, OpenMP's thread count on this thread is 1, so that
/// Eigen's GEMM, which asks omp_get_max_threads() how many threads to start,
/// runs on the calling thread alone. Restores the count it found.
class serial_eigen : openmp_count {
 public:
  serial_eigen() : openmp_count(1) {}
};

/// How a thread that has nothing to do waits (a pool thread after its
/// tasks, for the next job; a caller after its own tasks, for the others):
/// it looks for work without pause for idle_spin, then gives its core to
/// any other runnable thread (std::this_thread::yield) between looks until
/// idle_poll, then sleeps on a condition variable.
///
/// Measured on 2 cores beside 2 busy processes (bench_load, docs/threads.md):
/// sleeping at once made the quiet Muon step on 256 x 1024 (about 40 jobs
/// tens of microseconds apart) 1.3 times slower, since waking an idle core
/// of this virtual machine takes about 100 us; yielding from the first look
/// let the busy process keep the core until the scheduler's next tick (4 ms)
/// and took that step from 2.5 to 4-5 times its quiet time under load; a
/// look of 50 us left the MD-AdamW step at 2.4-3.0 times, one of 500 us
/// brought every step to 2.5 times or less. A look of 500 us catches a
/// partner that is running; a partner that has been descheduled is waited
/// for by yielding, then sleeping. OpenMP's runtime (libgomp) looks 300,000
/// times before it sleeps (4.5 ms on the development machine), and Eigen's
/// threaded GEMM without bound.
inline constexpr auto idle_spin = std::chrono::microseconds(500);
/// See idle_spin.
inline constexpr auto idle_poll = std::chrono::microseconds(1000);

/// A pool of threads that run the tasks 0..n-1 of one job at a time beside
/// the caller. Each thread takes the next task from a shared counter, so a
/// thread that the system deschedules holds up at most the task it has
/// taken, and the others take the rest. A thread with nothing to do waits
/// as idle_spin says.
class pool {
 public:
  pool() = default;
  ~pool() {
#if defined(__unix__) || defined(__APPLE__)
    // In a child of fork() the threads were not copied: leave their handles
    // alone (the child's jobs ran on its calling thread, which takes every
    // task nobody else takes).
    if (::getpid() != owner_) {
      new std::vector<std::thread>(std::move(workers_));
      return;
    }
#endif
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      stop_flag_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// The pool shared by polar's host code in this process.
  static pool& shared() {
    static pool p;
    return p;
  }

  /// Runs f(i) for i in [0, n) on up to `team` threads (the caller and
  /// team - 1 of the pool's), and returns when all have run. Runs them in
  /// order on the caller when team or n is 1, on a pool thread, inside an
  /// OpenMP region, or while another thread's job holds the pool. The first
  /// exception a task throws is rethrown here once all tasks have ended.
  template <class F>
  void run(int team, index n, F&& f) {
    run_erased(team, n, [](void* p, index i) { (*static_cast<std::remove_reference_t<F>*>(p))(i); },
               const_cast<void*>(static_cast<const void*>(&f)));
  }

  /// run() with the task as call(f, i): one function for every kind of task,
  /// so each call site instantiates only its small thunk.
  void run_erased(int team, index n, void (*call)(void*, index), void* f) {
    if (n <= 0) return;
    job j;
    j.call = call;
    j.f = f;
    j.n = n;
    if (team > 1 && n > 1 && !on_pool_thread() && !in_openmp_region()) {
#if defined(_OPENMP)
      if (openmp_everywhere().load(std::memory_order_relaxed)) {
        run_openmp(int(std::min<index>(team, n)), j);
        return;
      }
#endif
      std::unique_lock<std::mutex> busy(run_, std::try_to_lock);
      if (busy.owns_lock()) {
        run_shared(int(std::min<index>(team, n)), j);
        return;
      }
    }
    const serial_eigen one;
    for (index i = 0; i < n; ++i) call(f, i);
  }

  /// Threads the pool has started (they are started when a job first needs
  /// them and kept until the process ends).
  int started() const {
    std::lock_guard<std::mutex> lk(m_);
    return int(workers_.size());
  }

 private:
  struct job {
    void (*call)(void*, index) = nullptr;
    void* f = nullptr;
    index n = 0;
    std::atomic<index> next{0};
    std::mutex error_mutex;
    std::exception_ptr error;

    void work() noexcept {
      for (index i = next.fetch_add(1, std::memory_order_relaxed); i < n;
           i = next.fetch_add(1, std::memory_order_relaxed)) {
        try {
          call(f, i);
        } catch (...) {
          std::lock_guard<std::mutex> lk(error_mutex);
          if (!error) error = std::current_exception();
        }
      }
    }
  };

#if defined(_OPENMP)
  /// The tasks on a team of OpenMP's threads, taken from a shared counter.
  static void run_openmp(int team, job& j) {
#pragma omp parallel num_threads(team)
    {
      const serial_eigen one;
      j.work();
    }
    if (j.error) std::rethrow_exception(j.error);
  }
#endif

  void run_shared(int team, job& j) {
    {
      std::lock_guard<std::mutex> lk(m_);
      while (int(workers_.size()) < team - 1) {
        const int id = int(workers_.size());
        workers_.emplace_back([this, id] { worker(id); });
      }
      job_ = &j;
      helpers_ = team - 1;
      ++generation_;
    }
    wake_.notify_all();
    {
      // The caller is one of the job's threads while it works: what its
      // tasks call runs on it alone.
      const serial_eigen one;
      on_pool_thread() = true;
      j.work();
      on_pool_thread() = false;
    }
    {
      // Close the job to threads that have not joined yet, then wait for
      // those that did to finish their tasks.
      std::unique_lock<std::mutex> lk(m_);
      job_ = nullptr;
      if (active_ != 0) {
        lk.unlock();
        poll_until([&] { return active_.load(std::memory_order_acquire) == 0; });
        lk.lock();
        done_.wait(lk, [&] { return active_ == 0; });
      }
    }
    if (j.error) std::rethrow_exception(j.error);
  }

  /// Looks at done() for idle_poll: without pause for idle_spin, then
  /// yielding between looks; true if it came to hold.
  template <class D>
  static bool poll_until(D&& done) {
    const auto t0 = std::chrono::steady_clock::now();
    for (unsigned k = 0;; ++k) {
      if (done()) return true;
      if ((k & 15) == 15) {
        const auto waited = std::chrono::steady_clock::now() - t0;
        if (waited > idle_poll) return false;
        if (waited > idle_spin) std::this_thread::yield();
      }
    }
  }

  void worker(int id) {
    on_pool_thread() = true;
#if defined(_OPENMP)
    omp_set_num_threads(1);
#endif
    std::unique_lock<std::mutex> lk(m_);
    std::uint64_t seen = generation_;
    bool helped = true;  // whether the last job took this thread: then the next may follow soon
    for (;;) {
      if (helped && !stop_ && generation_.load(std::memory_order_relaxed) == seen) {
        lk.unlock();
        poll_until([&] { return generation_.load(std::memory_order_acquire) != seen || stop_flag_.load(std::memory_order_relaxed); });
        lk.lock();
      }
      wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      helped = job_ && id < helpers_;
      if (!helped) continue;
      job* j = job_;
      ++active_;
      lk.unlock();
      j->work();
      lk.lock();
      if (--active_ == 0) done_.notify_one();
    }
  }

  mutable std::mutex m_;
  std::mutex run_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  job* job_ = nullptr;
  int helpers_ = 0;
  // Written under m_; also read without it while polling.
  std::atomic<int> active_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stop_flag_{false};
  bool stop_ = false;
#if defined(__unix__) || defined(__APPLE__)
  pid_t owner_ = ::getpid();
#endif
};

/// Runs f(i) for i in [0, n) on polar::threads() threads of the shared pool.
template <class F>
void parallel_tasks(index n, F&& f) {
  pool::shared().run(threads(), n, f);
}

/// The most parts a loop is cut into.
inline constexpr index max_loop_parts = 64;

/// The parts a loop over n items that touches `work` elements is cut into:
/// one below parallel_threshold elements, otherwise one per 16384 elements
/// or so, at least 2 and at most max_loop_parts and n. The parts depend on
/// the sizes alone, never on the thread count, so a reduction that adds its
/// parts' results in order gives the same bits on any number of threads;
/// and there are several per thread, so that a thread the system
/// deschedules holds up little of the loop.
inline index loop_parts(index n, index work) {
  if (work < parallel_threshold || n < 2) return 1;
  return std::min<index>(std::min<index>(n, max_loop_parts), std::max<index>(2, work / 16384));
}

/// f(lo, hi) for part p = [lo, hi) of [0, n) cut into `parts`, or
/// f(lo, hi, p) where f takes the part's number too.
template <class F>
decltype(auto) call_part(F& f, index parts, index n, index p) {
  const index lo = n * p / parts, hi = n * (p + 1) / parts;
  if constexpr (std::is_invocable_v<F&, index, index, index>)
    return f(lo, hi, p);
  else
    return f(lo, hi);
}

/// f(lo, hi) (or f(lo, hi, p)) for each part [lo, hi) of [0, n) cut into
/// `parts`, on polar::threads() threads (the parts of one call may run at
/// once, in any order).
template <class F>
void for_parts(index parts, index n, F&& f) {
  if (parts <= 1) {
    call_part(f, 1, n, 0);
    return;
  }
  parallel_tasks(parts, [&](index p) { call_part(f, parts, n, p); });
}

/// combine(...combine(combine(init, r0), r1)..., r_last) for r_p = f(lo, hi)
/// (or f(lo, hi, p)) over the parts of [0, n), added in the parts' order.
/// At most max_loop_parts parts.
template <class R, class F, class C>
R reduce_parts(index parts, index n, R init, F&& f, C&& combine) {
  if (parts <= 1) return combine(init, call_part(f, 1, n, 0));
  R partial[max_loop_parts];
  parallel_tasks(parts, [&](index p) { partial[p] = call_part(f, parts, n, p); });
  R r = init;
  for (index p = 0; p < parts; ++p) r = combine(r, partial[p]);
  return r;
}

}  // namespace detail::host

}  // namespace polar
