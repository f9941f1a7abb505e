// polar/core/error.hpp: the exceptions polar throws.
//
// Every run-time failure is a polar::error. The subclasses say what kind of
// failure it is, so callers can catch the ones they can handle (a
// non_finite_error from one bad batch) and let the rest propagate (a
// shape_error is a bug in the caller). Each message starts with the operation
// that failed and names the shapes and values involved, for example
//
//   polar::gemm: A is 3x4 and B is 5x2; the inner dimensions 4 and 5 differ
//
// Operations check their arguments before they write anything, so a throwing
// call leaves its outputs as they were.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace polar {

/// Base of every exception polar throws.
class error : public std::runtime_error {
 public:
  /// @param operation the public operation that failed, e.g. "polar::gemm"
  /// @param what_failed a sentence naming the shapes and values involved
  error(std::string operation, const std::string& what_failed)
      : std::runtime_error(operation + ": " + what_failed),
        operation_(std::move(operation)) {}

  /// The operation that failed, e.g. "polar::gemm".
  const std::string& operation() const noexcept { return operation_; }

 private:
  std::string operation_;
};

/// Shapes that do not fit together, negative extents, or strides under which
/// two elements of a view would share memory.
class shape_error : public error {
 public:
  using error::error;
};

/// Memory in the wrong place: host memory given to a device backend, or two
/// operands in different memory spaces.
class memory_space_error : public error {
 public:
  using error::error;
};

/// A NaN or an infinity where finite values are required.
class non_finite_error : public error {
 public:
  using error::error;
};

/// An option or combination the library does not support (yet, or on this
/// backend).
class unsupported_error : public error {
 public:
  using error::error;
};

/// An argument value outside its valid range: a null pointer with a
/// non-zero shape, a negative learning rate, a sample index out of range.
class value_error : public error {
 public:
  using error::error;
};

/// A numerical failure: a singular system, a factorization that did not
/// converge.
class numerical_error : public error {
 public:
  using error::error;
};

/// A failure reported by the device runtime or a vendor library (the CUDA
/// runtime, cuBLAS, cuSOLVER): out of device memory, a launch failure.
class device_error : public error {
 public:
  using error::error;
};

/// Bytes read from a file or received from another machine that are not
/// what they claim to be: truncated, a bad checksum, a wrong magic number or
/// version, a gap or a duplicate in a sequence.
class format_error : public error {
 public:
  using error::error;
};

/// A failure of a transport between machines: the MPI library reported an
/// error, or a machine did not publish its part of a step in time.
class transport_error : public error {
 public:
  using error::error;
};

namespace detail {

/// Streams every argument into one string; used to build error messages.
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  out.precision(9);
  (out << ... << args);
  return out.str();
}

/// Throws E with the operation name and a message built from the arguments.
template <class E, class... Args>
[[noreturn]] void raise(const char* operation, const Args&... args) {
  throw E(operation, concat(args...));
}

}  // namespace detail
}  // namespace polar
