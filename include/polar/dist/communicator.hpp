// polar/dist/communicator.hpp: what the sharded optimizer needs of an engine
// that moves bytes between ranks, the counts of what it moved, collectives
// built on it with a fixed order of summation, and an in-process
// communicator (ranks as threads) for tests and for simulating ranks.
//
// A communicator C is one rank's handle on a group of size() ranks:
//
//   int C::rank() const, C::size() const
//   C::request C::start_all_to_all(const void* send, const std::size_t* send_bytes,
//                                  void* recv, const std::size_t* recv_bytes)
//       rank r sends send_bytes[q] bytes to each rank q, packed in rank order
//       in send, and receives recv_bytes[q] bytes from each rank q, packed in
//       rank order in recv (its own part is copied);
//   C::request C::start_all_gather(const void* send, std::size_t bytes,
//                                  void* recv, const std::size_t* recv_bytes)
//       every rank q's `bytes` (recv_bytes[q] of them) land in recv in rank order;
//   void C::wait(C::request&)
//       completes a started collective; both buffers must stay valid until
//       then; collectives complete in the order they were started;
//   void C::broadcast(void* data, std::size_t bytes, int root), void C::barrier()
//   const traffic& C::counted() const
//       bytes this rank sent to and received from other ranks (its own part
//       is not counted), and collectives called;
//   std::chrono::milliseconds C::timeout
//       how long a wait may take: past it the call throws transport_error
//       naming the collective (and, where the engine can tell, the ranks that
//       did not arrive), and every later call throws at once: a rank that
//       died or fell out of step is an error in bounded time, not a hang;
//   static constexpr memory_space C::space (optional: host when absent)
//       where the collectives' buffers are;
//   void C::host_all_gather(send, bytes, recv, recv_bytes) (where space is
//       device) an all-gather of host bytes.
//
// Every rank starts the same collectives in the same order. Implementations:
// local_communicator (below), mpi_communicator and cuda_aware_mpi_communicator
// (dist/mpi.hpp), nccl_communicator (dist/nccl.hpp, device memory).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "polar/core/error.hpp"

namespace polar::dist {

/// What a communicator moved: the figures the bars of docs/distributed.md count.
struct traffic {
  std::uint64_t bytes_sent = 0;      ///< to other ranks
  std::uint64_t bytes_received = 0;  ///< from other ranks
  std::uint64_t collectives = 0;     ///< collectives started

  /// Counts rank `me`'s part of an all-to-all among n ranks.
  void all_to_all(int me, int n, const std::size_t* send_bytes, const std::size_t* recv_bytes) noexcept {
    for (int r = 0; r < n; ++r)
      if (r != me) {
        bytes_sent += send_bytes[r];
        bytes_received += recv_bytes[r];
      }
    ++collectives;
  }
  /// Counts rank `me`'s part of an all-gather of `bytes` per rank.
  void all_gather(int me, int n, std::size_t bytes, const std::size_t* recv_bytes) noexcept {
    for (int r = 0; r < n; ++r)
      if (r != me) {
        bytes_sent += bytes;
        bytes_received += recv_bytes[r];
      }
    ++collectives;
  }
  /// Counts rank `me`'s part of a broadcast of `bytes` from root.
  void broadcast(int me, int n, std::size_t bytes, int root) noexcept {
    if (me == root)
      bytes_sent += bytes * std::size_t(n - 1);
    else
      bytes_received += bytes;
    ++collectives;
  }
};

/// Blocking all-to-all: start and wait.
template <class Comm>
void all_to_all(Comm& c, const void* send, const std::size_t* send_bytes, void* recv, const std::size_t* recv_bytes) {
  auto r = c.start_all_to_all(send, send_bytes, recv, recv_bytes);
  c.wait(r);
}

/// Blocking all-gather of `bytes` per rank (recv_bytes[q] from rank q).
template <class Comm>
void all_gather(Comm& c, const void* send, std::size_t bytes, void* recv, const std::size_t* recv_bytes) {
  auto r = c.start_all_gather(send, bytes, recv, recv_bytes);
  c.wait(r);
}

/// data[i] = the sum over ranks of data[i], added in rank order
/// (((x_0 + x_1) + x_2) + ...), the same bits on every rank and in every
/// run: an all-gather of n values per rank, then the sums on each rank.
template <class T, class Comm>
void all_reduce_sum(Comm& c, T* data, std::size_t n) {
  const int p = c.size();
  std::vector<T> all(n * std::size_t(p));
  std::vector<std::size_t> counts(static_cast<std::size_t>(p), n * sizeof(T));
  all_gather(c, data, n * sizeof(T), all.data(), counts.data());
  for (std::size_t i = 0; i < n; ++i) {
    T s = all[i];
    for (int q = 1; q < p; ++q) s += all[std::size_t(q) * n + i];
    data[i] = s;
  }
}

/// Rank r receives, for its part [offsets[r], offsets[r + 1]) of n values,
/// the sum over ranks of every rank's values there, added in rank order:
/// an all-to-all of the parts, then the sums on the owner. out holds
/// offsets[r + 1] - offsets[r] values. Each rank sends n - its part's
/// values and receives (size() - 1) times its part: the bytes of a
/// reduce-scatter, with an order of summation fixed by the ranks.
template <class T, class Comm>
void reduce_scatter_sum(Comm& c, const T* data, const std::size_t* offsets, T* out) {
  const int p = c.size(), me = c.rank();
  const std::size_t mine = offsets[me + 1] - offsets[me];
  std::vector<std::size_t> send(static_cast<std::size_t>(p)), recv(static_cast<std::size_t>(p), mine * sizeof(T));
  for (int q = 0; q < p; ++q) send[std::size_t(q)] = (offsets[q + 1] - offsets[q]) * sizeof(T);
  std::vector<T> got(mine * std::size_t(p));
  all_to_all(c, data, send.data(), got.data(), recv.data());
  for (std::size_t i = 0; i < mine; ++i) {
    T s = got[i];
    for (int q = 1; q < p; ++q) s += got[std::size_t(q) * mine + i];
    out[i] = s;
  }
}

class local_communicator;

/// Ranks as threads of one process: make a group of n, give each thread
/// rank(r), and run the same program on each (tests of the sharded
/// optimizer without MPI, under the sanitizers).
class local_group {
 public:
  /// A group of n ranks.
  /// @throws value_error when n < 1.
  explicit local_group(int n) : n_(n) {
    if (n < 1) detail::raise<value_error>("polar::dist::local_group", "a group needs at least 1 rank, got ", n);
    posts_.resize(std::size_t(n));
    done_.assign(std::size_t(n), 0);
  }
  local_group(const local_group&) = delete;
  local_group& operator=(const local_group&) = delete;

  /// The number of ranks.
  int size() const noexcept { return n_; }
  /// The communicator of rank r (one per rank; each used by one thread).
  local_communicator rank(int r);

 private:
  friend class local_communicator;
  enum class kind { all_to_all, all_gather, broadcast, barrier };
  static const char* name(kind k) {
    switch (k) {
      case kind::all_to_all: return "all_to_all";
      case kind::all_gather: return "all_gather";
      case kind::broadcast: return "broadcast";
      default: return "barrier";
    }
  }
  struct post {
    std::uint64_t seq = 0;  // the collective's number on its rank
    kind k{};
    const void* send = nullptr;
    const std::size_t* counts = nullptr;  // all_to_all: bytes to each rank
    std::size_t bytes = 0;                // all_gather, broadcast
    int root = 0;
  };

  // Collective number seq on rank r: post, wait for every rank's post of
  // seq, copy (f), then wait until every rank has copied before the send
  // buffer may go.
  template <class F>
  void run(int r, std::uint64_t seq, const post& p, std::chrono::milliseconds timeout, F&& f) {
    std::unique_lock<std::mutex> lock(m_);
    if (broken_) fail(r, "a rank gave up earlier: " + broken_why_);
    posts_[std::size_t(r)] = p;
    posts_[std::size_t(r)].seq = seq;
    cv_.notify_all();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const auto arrived = [&] {
      for (const auto& q : posts_)
        if (q.seq < seq) return false;
      return true;
    };
    if (!cv_.wait_until(lock, deadline, [&] { return broken_ || arrived(); })) {
      std::vector<int> missing;
      for (int q = 0; q < n_; ++q)
        if (posts_[std::size_t(q)].seq < seq) missing.push_back(q);
      give_up(r, std::string(name(p.k)) + " number " + std::to_string(seq) + ": rank(s) " +
                     rank_list(missing) + " did not arrive within " + std::to_string(timeout.count()) + " ms");
    }
    if (broken_) fail(r, "a rank gave up: " + broken_why_);
    for (int q = 0; q < n_; ++q)
      if (posts_[std::size_t(q)].k != p.k || posts_[std::size_t(q)].root != p.root)
        give_up(r, std::string("collective number ") + std::to_string(seq) + " is " + name(p.k) + " on rank " +
                       std::to_string(r) + " but " + name(posts_[std::size_t(q)].k) + " on rank " + std::to_string(q) +
                       " (the ranks are out of step)");
    lock.unlock();
    f(posts_);
    lock.lock();
    done_[std::size_t(r)] = seq;
    cv_.notify_all();
    if (!cv_.wait_until(lock, deadline, [&] {
          if (broken_) return true;
          for (auto d : done_)
            if (d < seq) return false;
          return true;
        })) {
      std::vector<int> missing;
      for (int q = 0; q < n_; ++q)
        if (done_[std::size_t(q)] < seq) missing.push_back(q);
      give_up(r, std::string(name(p.k)) + " number " + std::to_string(seq) + ": rank(s) " +
                     rank_list(missing) + " did not finish within " + std::to_string(timeout.count()) + " ms");
    }
    if (broken_) fail(r, "a rank gave up: " + broken_why_);
  }
  static std::string rank_list(const std::vector<int>& ranks) {
    std::string s;
    for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
    return s;
  }
  [[noreturn]] void give_up(int r, const std::string& why) {
    broken_ = true;
    broken_why_ = why;
    cv_.notify_all();
    fail(r, why);
  }
  [[noreturn]] static void fail(int r, const std::string& why) {
    detail::raise<transport_error>("polar::dist::local_communicator", "rank ", r, ": ", why);
  }

  int n_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<post> posts_;
  std::vector<std::uint64_t> done_;
  bool broken_ = false;
  std::string broken_why_;
};

/// One rank of a local_group (see the communicator concept above).
class local_communicator {
 public:
  /// A started collective: local collectives run when waited for.
  struct request {
    local_group::post p;                      ///< what this rank posts
    void* recv = nullptr;                     ///< where its bytes go
    const std::size_t* recv_counts = nullptr;  ///< bytes from each rank
    bool pending = false;                     ///< not yet waited for
  };

  /// How long a collective waits for the other ranks.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);

  /// This rank, 0 to size() - 1.
  int rank() const noexcept { return rank_; }
  /// The number of ranks.
  int size() const noexcept { return g_->n_; }
  /// What this rank moved so far.
  const traffic& counted() const noexcept { return traffic_; }

  /// Starts an all-to-all (see the concept in dist/communicator.hpp).
  request start_all_to_all(const void* send, const std::size_t* send_bytes, void* recv, const std::size_t* recv_bytes) {
    traffic_.all_to_all(rank_, size(), send_bytes, recv_bytes);
    return started(local_group::kind::all_to_all, send, send_bytes, 0, recv, recv_bytes);
  }
  /// Starts an all-gather (see the concept in dist/communicator.hpp).
  request start_all_gather(const void* send, std::size_t bytes, void* recv, const std::size_t* recv_bytes) {
    traffic_.all_gather(rank_, size(), bytes, recv_bytes);
    return started(local_group::kind::all_gather, send, nullptr, bytes, recv, recv_bytes);
  }
  /// Completes a started collective. @throws transport_error past the timeout.
  void wait(request& q) {
    if (!q.pending) return;
    q.pending = false;
    const int me = rank_;
    g_->run(me, ++seq_, q.p, timeout, [&](const std::vector<local_group::post>& posts) {
      auto* out = static_cast<unsigned char*>(q.recv);
      std::size_t at = 0;
      for (int r = 0; r < size(); ++r) {
        const auto& from = posts[std::size_t(r)];
        std::size_t n = 0;
        const unsigned char* src = nullptr;
        if (q.p.k == local_group::kind::all_to_all) {
          std::size_t off = 0;
          for (int t = 0; t < me; ++t) off += from.counts[t];
          n = from.counts[me];
          src = static_cast<const unsigned char*>(from.send) + off;
        } else {
          n = from.bytes;
          src = static_cast<const unsigned char*>(from.send);
        }
        if (n != q.recv_counts[r])
          local_group::fail(me, std::string(local_group::name(q.p.k)) + ": rank " + std::to_string(r) + " sends " +
                                    std::to_string(n) + " bytes where " + std::to_string(q.recv_counts[r]) +
                                    " are expected");
        if (n) std::memcpy(out + at, src, n);
        at += n;
      }
    });
  }
  /// Root's bytes at data on every rank.
  void broadcast(void* data, std::size_t bytes, int root) {
    local_group::post p;
    p.k = local_group::kind::broadcast;
    p.send = data;
    p.bytes = bytes;
    p.root = root;
    traffic_.broadcast(rank_, size(), bytes, root);
    const int me = rank_;
    g_->run(me, ++seq_, p, timeout, [&](const std::vector<local_group::post>& posts) {
      const auto& from = posts[std::size_t(root)];
      if (from.bytes != bytes)
        local_group::fail(me, "broadcast: the root sends " + std::to_string(from.bytes) + " bytes where " +
                                  std::to_string(bytes) + " are expected");
      if (me != root && bytes) std::memcpy(data, from.send, bytes);
    });
  }
  /// Returns when every rank has called it.
  void barrier() {
    local_group::post p;
    p.k = local_group::kind::barrier;
    ++traffic_.collectives;
    g_->run(rank_, ++seq_, p, timeout, [](const std::vector<local_group::post>&) {});
  }

 private:
  friend class local_group;
  local_communicator(local_group& g, int r) : g_(&g), rank_(r) {}
  // A collective to run at wait().
  static request started(local_group::kind k, const void* send, const std::size_t* counts, std::size_t bytes,
                         void* recv, const std::size_t* recv_counts) {
    request q;
    q.p.k = k;
    q.p.send = send;
    q.p.counts = counts;
    q.p.bytes = bytes;
    q.recv = recv;
    q.recv_counts = recv_counts;
    q.pending = true;
    return q;
  }
  local_group* g_;
  int rank_;
  std::uint64_t seq_ = 0;
  traffic traffic_;
};

inline local_communicator local_group::rank(int r) {
  if (r < 0 || r >= n_)
    detail::raise<value_error>("polar::dist::local_group::rank", "rank ", r, " of a group of ", n_);
  return local_communicator(*this, r);
}

}  // namespace polar::dist
