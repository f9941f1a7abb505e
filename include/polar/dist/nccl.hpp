// polar/dist/nccl.hpp: the sharded optimizer's communicator over NCCL, for
// tensors in device memory (the Thrust backend's CUDA system). Needs
// <nccl.h> and the CUDA runtime: link the CMake target polar::nccl, which
// polar provides in its CUDA configuration where NCCL is found
// (scripts/install-deps unpacks PyPI's nvidia-nccl-cu13 into .deps/nccl).
//
// Every collective is enqueued on the communicator's CUDA stream:
//   all-to-all   ncclSend/ncclRecv to every other rank in one group (NCCL
//                has no all-to-all-v), the rank's own part a device copy;
//   all-gather   ncclAllGather where every rank sends the same bytes, else
//                one ncclBroadcast per rank in one group;
//   broadcast    ncclBroadcast; barrier: an ncclAllReduce of one int.
// wait() polls an event recorded after the collective and NCCL's
// asynchronous error, sleeping between polls; past the timeout it aborts
// the NCCL communicator (ncclCommAbort: a rank that died leaves the others'
// kernels waiting on the GPU, which only an abort frees) and throws
// transport_error. Every later call throws too.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "polar/core/error.hpp"
#include "polar/core/view.hpp"
#include "polar/dist/communicator.hpp"

namespace polar::dist {

/// One rank of an NCCL communicator (see the communicator concept in
/// dist/communicator.hpp); buffers are in device memory.
class nccl_communicator {
 public:
  /// Where the buffers of collectives live.
  static constexpr memory_space space = memory_space::device;

  /// A started collective: an event recorded after it on the stream.
  struct request {
    cudaEvent_t done = nullptr;  ///< recorded on the stream after the collective
    const char* what = "";       ///< the collective, for messages
  };

  /// How long a collective waits for the other ranks.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);

  /// Uses comm (made with ncclCommInitRank or ncclCommInitAll, which must
  /// outlive the communicator) on stream.
  explicit nccl_communicator(ncclComm_t comm, cudaStream_t stream = nullptr) : comm_(comm), stream_(stream) {
    nccl(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    nccl(ncclCommCount(comm_, &size_), "ncclCommCount");
  }
  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;
  ~nccl_communicator() {
    if (scratch_) cudaFree(scratch_);
  }

  /// This rank, 0 to size() - 1.
  int rank() const noexcept { return rank_; }
  /// The number of ranks.
  int size() const noexcept { return size_; }
  /// What this rank moved so far.
  const traffic& counted() const noexcept { return traffic_; }
  /// The CUDA stream the collectives run on.
  cudaStream_t stream() const noexcept { return stream_; }

  /// Starts an all-to-all (see the concept in dist/communicator.hpp).
  request start_all_to_all(const void* send, const std::size_t* send_bytes, void* recv, const std::size_t* recv_bytes) {
    usable("all_to_all");
    const auto* s = static_cast<const unsigned char*>(send);
    auto* r = static_cast<unsigned char*>(recv);
    std::size_t so = 0, ro = 0;
    nccl(ncclGroupStart(), "ncclGroupStart");
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) {
        if (send_bytes[q] != recv_bytes[q])
          detail::raise<value_error>("polar::dist::nccl_communicator", "all_to_all: rank ", rank_, " sends itself ",
                                     send_bytes[q], " bytes but expects ", recv_bytes[q]);
        if (send_bytes[q]) cuda(cudaMemcpyAsync(r + ro, s + so, send_bytes[q], cudaMemcpyDeviceToDevice, stream_),
                                "cudaMemcpyAsync");
      } else {
        if (send_bytes[q]) nccl(ncclSend(s + so, send_bytes[q], ncclUint8, q, comm_, stream_), "ncclSend");
        if (recv_bytes[q]) nccl(ncclRecv(r + ro, recv_bytes[q], ncclUint8, q, comm_, stream_), "ncclRecv");
      }
      so += send_bytes[q];
      ro += recv_bytes[q];
    }
    nccl(ncclGroupEnd(), "ncclGroupEnd");
    traffic_.all_to_all(rank_, size_, send_bytes, recv_bytes);
    return record("all_to_all");
  }

  /// Starts an all-gather (see the concept in dist/communicator.hpp).
  request start_all_gather(const void* send, std::size_t bytes, void* recv, const std::size_t* recv_bytes) {
    usable("all_gather");
    if (bytes != recv_bytes[rank_])
      detail::raise<value_error>("polar::dist::nccl_communicator", "all_gather sends ", bytes, " bytes but expects ",
                                 recv_bytes[rank_], " from itself");
    bool equal = true;
    for (int q = 0; q < size_; ++q) equal = equal && recv_bytes[q] == bytes;
    auto* r = static_cast<unsigned char*>(recv);
    if (equal) {
      if (bytes) nccl(ncclAllGather(send, recv, bytes, ncclUint8, comm_, stream_), "ncclAllGather");
    } else {
      std::size_t at = 0;
      nccl(ncclGroupStart(), "ncclGroupStart");
      for (int q = 0; q < size_; ++q) {
        if (recv_bytes[q])
          nccl(ncclBroadcast(q == rank_ ? send : r + at, r + at, recv_bytes[q], ncclUint8, q, comm_, stream_),
               "ncclBroadcast");
        at += recv_bytes[q];
      }
      nccl(ncclGroupEnd(), "ncclGroupEnd");
    }
    traffic_.all_gather(rank_, size_, bytes, recv_bytes);
    return record("all_gather");
  }

  /// Completes a started collective. @throws transport_error past the timeout.
  void wait(request& q) {
    if (!q.done) return;
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t e = cudaEventQuery(q.done);
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) cuda(e, "cudaEventQuery");
      ncclResult_t async = ncclSuccess;
      nccl(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
      if (async != ncclSuccess && async != ncclInProgress) fail(q.what, std::string("NCCL: ") + ncclGetErrorString(async));
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited > timeout)
        fail(q.what, "did not complete within " + std::to_string(timeout.count()) +
                         " ms (a rank died, is out of step or stopped calling); the NCCL communicator was aborted");
      std::this_thread::sleep_for(std::chrono::microseconds(waited < std::chrono::milliseconds(1) ? 10 : 200));
    }
    cudaEventDestroy(q.done);
    q.done = nullptr;
  }

  /// Root's bytes at data (device memory) on every rank.
  void broadcast(void* data, std::size_t bytes, int root) {
    usable("broadcast");
    if (bytes) nccl(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    traffic_.broadcast(rank_, size_, bytes, root);
    auto q = record("broadcast");
    wait(q);
  }
  /// Returns when every rank has called it.
  void barrier() {
    usable("barrier");
    void* one = device_scratch(sizeof(int));
    nccl(ncclAllReduce(one, one, 1, ncclInt32, ncclSum, comm_, stream_), "ncclAllReduce");
    ++traffic_.collectives;
    auto q = record("barrier");
    wait(q);
  }

  /// An all-gather of host bytes, staged through device memory (the
  /// sharded optimizer's headers and measures: a few bytes per tensor).
  void host_all_gather(const void* send, std::size_t bytes, void* recv, const std::size_t* recv_bytes) {
    std::size_t total = 0;
    for (int q = 0; q < size_; ++q) total += recv_bytes[q];
    auto* d = static_cast<unsigned char*>(device_scratch(total + bytes));
    if (bytes) cuda(cudaMemcpyAsync(d + total, send, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
    auto q = start_all_gather(d + total, bytes, d, recv_bytes);
    wait(q);
    if (total) cuda(cudaMemcpy(recv, d, total, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }

 private:
  request record(const char* what) {
    request q;
    q.what = what;
    cuda(cudaEventCreateWithFlags(&q.done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    cuda(cudaEventRecord(q.done, stream_), "cudaEventRecord");
    return q;
  }
  void* device_scratch(std::size_t bytes) {
    if (bytes > scratch_bytes_) {
      if (scratch_) cuda(cudaFree(scratch_), "cudaFree");
      scratch_ = nullptr;
      cuda(cudaMalloc(&scratch_, bytes), "cudaMalloc");
      scratch_bytes_ = bytes;
    }
    return scratch_;
  }
  void usable(const char* call) const {
    if (!broken_.empty())
      detail::raise<transport_error>("polar::dist::nccl_communicator", "rank ", rank_, ": ", call,
                                     " after an earlier collective failed: ", broken_);
  }
  [[noreturn]] void fail(const char* what, const std::string& why) {
    broken_ = std::string(what) + " " + why;
    ncclCommAbort(comm_);
    detail::raise<transport_error>("polar::dist::nccl_communicator", "rank ", rank_, " of ", size_, ": ", broken_);
  }
  void nccl(ncclResult_t rc, const char* call) {
    if (rc == ncclSuccess || rc == ncclInProgress) return;
    broken_ = std::string(call) + " failed: " + ncclGetErrorString(rc);
    detail::raise<transport_error>("polar::dist::nccl_communicator", "rank ", rank_, ": ", broken_);
  }
  void cuda(cudaError_t rc, const char* call) {
    if (rc == cudaSuccess) return;
    detail::raise<device_error>("polar::dist::nccl_communicator", call, " failed: ", cudaGetErrorString(rc));
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_ = 0, size_ = 1;
  traffic traffic_;
  std::string broken_;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

}  // namespace polar::dist
