// polar/dist/mpi.hpp: polar over MPI. Needs <mpi.h>: link the CMake target
// polar::mpi, which polar provides where find_package(MPI) finds MPI.
//
// mpi_communicator: the communicator of the sharded optimizer
// (dist/communicator.hpp, dist/sharded_optimizer.hpp) over host memory.
// Collectives are MPI's non-blocking ones (MPI_Ialltoallv,
// MPI_Iallgatherv, MPI_Ibcast, MPI_Ibarrier); wait() tests the request
// until it completes or the timeout passes. While it waits it yields the
// core and then sleeps between tests, so a rank that waits leaves the core
// to the ranks that work. A timeout cannot cancel MPI's request: the
// communicator refuses every later call, and the program should end with
// MPI_Abort.
//
// mpi_transport: the transport of decentralized SPSA
// (estimator/decentralized.hpp).
//
// Machine m is rank m of the communicator. Every rank calls exchange() once
// per step, in the same order of steps (MPI's collectives keep them in lock
// step), each sending one byte: its code of the projected gradient, or
// byte_code::absent when it sits the step out (it has not joined yet, or has
// left, or its estimate failed). One MPI_Allgather moves the bytes: each
// rank sends 1 byte and receives one per rank. The step number itself is not
// sent.
#pragma once

// polar uses MPI's C interface only; the deprecated C++ bindings of Open MPI
// and MPICH are left out (they do not compile cleanly with -Wextra).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>  // MPIX_Query_cuda_support
#endif

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "polar/core/error.hpp"
#include "polar/core/view.hpp"
#include "polar/dist/communicator.hpp"
#include "polar/estimator/decentralized.hpp"

namespace polar::dist {

/// One rank of an MPI communicator (see the communicator concept in
/// dist/communicator.hpp). Space is where the collectives' buffers are:
/// host memory (mpi_communicator), or device memory for a CUDA-aware MPI
/// (cuda_aware_mpi_communicator), so that the sharded optimizer hands MPI
/// the device buffers of a CUDA backend instead of staging them through the
/// host.
template <memory_space Space>
class basic_mpi_communicator {
 public:
  /// Where the buffers of collectives live.
  static constexpr memory_space space = Space;

  /// A started collective.
  struct request {
    MPI_Request r = MPI_REQUEST_NULL;  ///< MPI's request
    const char* what = "";             ///< the MPI call, for messages
    // MPI's int counts and offsets, kept alive until the wait.
    std::vector<int> counts;   ///< bytes sent to each rank
    std::vector<int> displs;   ///< where each rank's part starts in the send buffer
    std::vector<int> counts2;  ///< bytes received from each rank
    std::vector<int> displs2;  ///< where each rank's part lands in the receive buffer
  };

  /// How long a collective waits for the other ranks.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);

  /// Uses `comm`, which must outlive the communicator; MPI must be initialized.
  /// @throws unsupported_error for device memory where the MPI is not
  ///         CUDA-aware (Open MPI's MPIX_Query_cuda_support says so; another
  ///         MPI is taken at its word).
  explicit basic_mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    if (Space == memory_space::device && !cuda_aware())
      detail::raise<unsupported_error>("polar::dist::cuda_aware_mpi_communicator", "this MPI is not CUDA-aware "
                                       "(MPIX_Query_cuda_support() is 0); use mpi_communicator, which stages "
                                       "device tensors through the host, or nccl_communicator");
  }

  /// Whether the MPI library says it takes device pointers (Open MPI);
  /// true where it has no way to say.
  static bool cuda_aware() {
#if defined(MPIX_CUDA_AWARE_SUPPORT)
    return MPIX_Query_cuda_support() != 0;
#else
    return true;
#endif
  }

  /// An all-gather of host bytes (MPI takes host memory whatever Space is).
  void host_all_gather(const void* send, std::size_t bytes, void* recv, const std::size_t* recv_bytes) {
    auto q = start_all_gather(send, bytes, recv, recv_bytes);
    wait(q);
  }

  /// This rank, 0 to size() - 1.
  int rank() const noexcept { return rank_; }
  /// The number of ranks.
  int size() const noexcept { return size_; }
  /// What this rank moved so far.
  const traffic& counted() const noexcept { return traffic_; }

  /// Starts an all-to-all (see the concept in dist/communicator.hpp).
  request start_all_to_all(const void* send, const std::size_t* send_bytes, void* recv, const std::size_t* recv_bytes) {
    usable("MPI_Ialltoallv");
    request q;
    q.what = "MPI_Ialltoallv";
    q.counts = ints(q.what, send_bytes);
    q.displs = offsets(q.what, q.counts);
    q.counts2 = ints(q.what, recv_bytes);
    q.displs2 = offsets(q.what, q.counts2);
    check(MPI_Ialltoallv(send, q.counts.data(), q.displs.data(), MPI_BYTE, recv, q.counts2.data(), q.displs2.data(),
                         MPI_BYTE, comm_, &q.r),
          q.what);
    traffic_.all_to_all(rank_, size_, send_bytes, recv_bytes);
    return q;
  }
  /// Starts an all-gather (see the concept in dist/communicator.hpp).
  request start_all_gather(const void* send, std::size_t bytes, void* recv, const std::size_t* recv_bytes) {
    usable("MPI_Iallgatherv");
    request q;
    q.what = "MPI_Iallgatherv";
    q.counts2 = ints(q.what, recv_bytes);
    q.displs2 = offsets(q.what, q.counts2);
    if (bytes != recv_bytes[rank_])
      detail::raise<value_error>("polar::dist::mpi_communicator", "all_gather sends ", bytes, " bytes but expects ",
                                 recv_bytes[rank_], " from itself");
    check(MPI_Iallgatherv(send, int(bytes), MPI_BYTE, recv, q.counts2.data(), q.displs2.data(), MPI_BYTE, comm_,
                          &q.r),
          q.what);
    traffic_.all_gather(rank_, size_, bytes, recv_bytes);
    return q;
  }
  /// Completes a started collective. @throws transport_error past the timeout.
  void wait(request& q) {
    if (q.r == MPI_REQUEST_NULL) return;
    const auto start = std::chrono::steady_clock::now();
    for (int tries = 0;; ++tries) {
      int done = 0;
      check(MPI_Test(&q.r, &done, MPI_STATUS_IGNORE), q.what);
      if (done) return;
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited > timeout) {
        broken_ = std::string(q.what) + " did not complete within " + std::to_string(timeout.count()) +
                  " ms (a rank died, is out of step or stopped calling)";
        detail::raise<transport_error>("polar::dist::mpi_communicator", "rank ", rank_, " of ", size_, ": ",
                                       broken_);
      }
      if (waited < std::chrono::microseconds(200))
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(waited < std::chrono::milliseconds(5) ? 20 : 200));
    }
  }
  /// Root's bytes at data on every rank.
  void broadcast(void* data, std::size_t bytes, int root) {
    usable("MPI_Ibcast");
    request q;
    q.what = "MPI_Ibcast";
    if (bytes > std::size_t(INT_MAX))
      detail::raise<value_error>("polar::dist::mpi_communicator", "broadcast of ", bytes, " bytes: MPI counts are int");
    check(MPI_Ibcast(data, int(bytes), MPI_BYTE, root, comm_, &q.r), q.what);
    traffic_.broadcast(rank_, size_, bytes, root);
    wait(q);
  }
  /// Returns when every rank has called it.
  void barrier() {
    usable("MPI_Ibarrier");
    request q;
    q.what = "MPI_Ibarrier";
    check(MPI_Ibarrier(comm_, &q.r), q.what);
    ++traffic_.collectives;
    wait(q);
  }

 private:
  void usable(const char* call) const {
    if (!broken_.empty())
      detail::raise<transport_error>("polar::dist::mpi_communicator", "rank ", rank_, ": ", call,
                                     " after an earlier collective failed: ", broken_);
  }
  std::vector<int> ints(const char* call, const std::size_t* bytes) const {
    std::vector<int> out(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      if (bytes[r] > std::size_t(INT_MAX))
        detail::raise<value_error>("polar::dist::mpi_communicator", call, ": ", bytes[r], " bytes for rank ", r,
                                   " (MPI counts are int; make the buckets smaller)");
      out[std::size_t(r)] = int(bytes[r]);
    }
    return out;
  }
  static std::vector<int> offsets(const char* call, const std::vector<int>& counts) {
    std::vector<int> out(counts.size());
    long long at = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      if (at > INT_MAX)
        detail::raise<value_error>("polar::dist::mpi_communicator", call, ": ", at,
                                   " bytes in one call (MPI offsets are int; make the buckets smaller)");
      out[r] = int(at);
      at += counts[r];
    }
    return out;
  }
  void check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    broken_ = std::string(call) + " failed: " + std::string(text, std::size_t(len));
    detail::raise<transport_error>("polar::dist::mpi_communicator", "rank ", rank_, ": ", broken_);
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  traffic traffic_;
  std::string broken_;
};

/// MPI over host memory.
using mpi_communicator = basic_mpi_communicator<memory_space::host>;
/// MPI over device memory, for a CUDA-aware MPI.
using cuda_aware_mpi_communicator = basic_mpi_communicator<memory_space::device>;

/// Machines as MPI ranks: one MPI_Allgather per step of each rank's byte
/// and the low byte of its step number (so a rank 1 to 255 steps out of
/// step with the others is found), and broadcasts for a late rank's byte
/// log (docs/decentralized.md).
class mpi_transport {
 public:
  /// Uses `comm`, which must outlive the transport; MPI must be initialized.
  /// With check_steps false each rank sends its byte alone (1 byte a step
  /// instead of 2) and ranks out of step go unnoticed.
  explicit mpi_transport(MPI_Comm comm = MPI_COMM_WORLD, bool check_steps = true)
      : comm_(comm), check_steps_(check_steps) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    all_.resize(std::size_t(size_) * 2);
  }

  /// This rank: the machine id it publishes as.
  std::uint32_t machine() const noexcept { return std::uint32_t(rank_); }
  /// The number of ranks.
  int size() const noexcept { return size_; }

  /// Sends this rank's byte and returns the step's records of every rank
  /// that sent one other than absent, in increasing order of rank.
  /// @throws value_error when machine is not this rank; transport_error when
  ///         MPI reports an error, or (with check_steps) when another rank
  ///         sent a byte for another step: every rank throws then.
  std::vector<byte_record> exchange(std::uint32_t step, std::uint32_t machine, std::uint8_t byte) {
    constexpr const char* op = "polar::dist::mpi_transport::exchange";
    if (machine != std::uint32_t(rank_))
      detail::raise<value_error>(op, "machine ", machine, " publishes through rank ", rank_, " at step ", step,
                                 "; the machine id is the rank");
    const int k = check_steps_ ? 2 : 1;
    const std::uint8_t mine[2] = {byte, std::uint8_t(step & 0xffu)};
    check(MPI_Allgather(mine, k, MPI_BYTE, all_.data(), k, MPI_BYTE, comm_), "MPI_Allgather");
    sent_ += std::uint64_t(k);
    received_ += std::uint64_t(k) * std::uint64_t(size_);
    if (check_steps_)
      for (int r = 0; r < size_; ++r)
        if (all_[std::size_t(2 * r + 1)] != mine[1])
          detail::raise<transport_error>(op, "rank ", r, " sent its byte for a step = ",
                                         int(all_[std::size_t(2 * r + 1)]), " (mod 256) while rank ", rank_,
                                         " is at step ", step, " = ", int(mine[1]),
                                         " (mod 256): the ranks are out of step");
    std::vector<byte_record> out;
    for (int r = 0; r < size_; ++r)
      if (all_[std::size_t(k * r)] != byte_code::absent) out.push_back({std::uint32_t(r), all_[std::size_t(k * r)]});
    return out;
  }

  /// Root's bytes on every rank (for example a serialized byte_log for a
  /// rank that joins late): every rank calls it; `data` is read on root.
  std::vector<std::uint8_t> broadcast(std::vector<std::uint8_t> data, int root) {
    unsigned long long n = data.size();
    check(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm_), "MPI_Bcast");
    data.resize(std::size_t(n));
    for (std::size_t at = 0; at < data.size();) {  // MPI counts are int
      const int part = int(std::min<std::size_t>(data.size() - at, 1u << 30));
      check(MPI_Bcast(data.data() + at, part, MPI_BYTE, root, comm_), "MPI_Bcast");
      at += std::size_t(part);
    }
    return data;
  }

  /// Bytes this rank sent in exchange() so far (2 a step, 1 without the step check).
  std::uint64_t bytes_sent() const noexcept { return sent_; }
  /// Bytes received from the other ranks so far.
  std::uint64_t bytes_received() const noexcept { return received_; }

 private:
  static void check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    detail::raise<transport_error>("polar::dist::mpi_transport", call, " failed: ", std::string(text, std::size_t(len)));
  }

  MPI_Comm comm_;
  bool check_steps_ = true;
  int rank_ = 0, size_ = 1;
  std::vector<std::uint8_t> all_;
  std::uint64_t sent_ = 0, received_ = 0;
};

}  // namespace polar::dist
