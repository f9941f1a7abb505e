// polar/backend/detail/host_buffer.hpp: an aligned, uninitialized host
// allocation, the buffer type of the host backends.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>

#include "polar/core/config.hpp"
#include "polar/core/error.hpp"

namespace polar {

/// An owning, uninitialized, 64-byte aligned array of trivially copyable T
/// in host memory. Movable, not copyable.
template <class T>
class host_buffer {
  static_assert(std::is_trivially_copyable_v<T>,
                "polar::host_buffer holds trivially copyable scalars only");

 public:
  /// Bytes of alignment of every allocation (one cache line, one AVX-512 vector).
  static constexpr std::size_t alignment = 64;

  host_buffer() noexcept = default;
  /// Allocates n elements; throws value_error for a negative n.
  explicit host_buffer(index n) : size_(n) {
    if (n < 0) detail::raise<value_error>("polar::host_buffer", "negative size ", n);
    if (n > 0)
      data_.reset(static_cast<T*>(
          ::operator new(static_cast<std::size_t>(n) * sizeof(T), std::align_val_t(alignment))));
  }

  T* data() const noexcept { return data_.get(); }
  index size() const noexcept { return size_; }

 private:
  struct deleter {
    void operator()(T* p) const noexcept { ::operator delete(p, std::align_val_t(alignment)); }
  };
  std::unique_ptr<T, deleter> data_;
  index size_ = 0;
};

}  // namespace polar
