// polar/dist/mpi.hpp: the MPI transport of decentralized SPSA
// (estimator/decentralized.hpp). Needs <mpi.h>: link the CMake target
// polar::mpi, which polar provides where find_package(MPI) finds MPI.
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

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "polar/core/error.hpp"
#include "polar/estimator/decentralized.hpp"

namespace polar::dist {

/// Machines as MPI ranks: one MPI_Allgather of one byte per rank per step,
/// and broadcasts for a late rank's byte log (docs/decentralized.md).
class mpi_transport {
 public:
  /// Uses `comm`, which must outlive the transport; MPI must be initialized.
  explicit mpi_transport(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    all_.resize(std::size_t(size_));
  }

  /// This rank: the machine id it publishes as.
  std::uint32_t machine() const noexcept { return std::uint32_t(rank_); }
  /// The number of ranks.
  int size() const noexcept { return size_; }

  /// Sends this rank's byte and returns the step's records of every rank
  /// that sent one other than absent, in increasing order of rank.
  /// @throws value_error when machine is not this rank; transport_error when
  ///         MPI reports an error.
  std::vector<byte_record> exchange(std::uint32_t step, std::uint32_t machine, std::uint8_t byte) {
    if (machine != std::uint32_t(rank_))
      detail::raise<value_error>("polar::dist::mpi_transport::exchange", "machine ", machine,
                                 " publishes through rank ", rank_, " at step ", step, "; the machine id is the rank");
    check(MPI_Allgather(&byte, 1, MPI_BYTE, all_.data(), 1, MPI_BYTE, comm_), "MPI_Allgather");
    sent_ += 1;
    received_ += std::uint64_t(size_);
    std::vector<byte_record> out;
    for (int r = 0; r < size_; ++r)
      if (all_[std::size_t(r)] != byte_code::absent) out.push_back({std::uint32_t(r), all_[std::size_t(r)]});
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

  /// Bytes this rank sent and received in exchange() so far.
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
  int rank_ = 0, size_ = 1;
  std::vector<std::uint8_t> all_;
  std::uint64_t sent_ = 0, received_ = 0;
};

}  // namespace polar::dist
