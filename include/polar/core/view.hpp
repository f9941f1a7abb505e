// polar/core/view.hpp: non-owning views of matrices, vectors and stacks of
// matrices.
//
// Every algorithm in polar works on views, never on the caller's tensor types:
// a view is a pointer, a shape, strides counted in elements, and the memory
// space the pointer lives in. Element (i, j) of a matrix view is at
// data + i * row_stride + j * col_stride, so row-major, column-major, padded
// (a leading dimension larger than the extent) and general strided layouts
// are all the same type. Views are cheap to copy and usable in device code.
//
// Strides are never negative. A view that is written to must not have two
// elements at the same address; polar::check_output (core/check.hpp) verifies
// that before an operation writes.
#pragma once

#include <ostream>
#include <type_traits>

#include "polar/core/config.hpp"

namespace polar {

/// Where the memory behind a view lives.
enum class memory_space : unsigned char {
  host,    ///< ordinary host memory (also pinned or managed memory read on the host)
  device,  ///< memory of a CUDA device
};

/// The name of a memory space, for messages.
inline const char* to_string(memory_space s) noexcept {
  return s == memory_space::host ? "host" : "device";
}

/// Writes the name of a memory space.
inline std::ostream& operator<<(std::ostream& out, memory_space s) { return out << to_string(s); }

template <class T>
class vector_view;

/// A non-owning, strided view of a rows x cols matrix.
///
/// @tparam T the element type; `const T` for a read-only view. A
///           matrix_view<T> converts to matrix_view<const T>.
template <class T>
class matrix_view {
 public:
  using element_type = T;                        ///< T, possibly const
  using value_type = std::remove_cv_t<T>;        ///< T without const

  /// An empty 0x0 view.
  constexpr matrix_view() noexcept = default;

  /// @param data address of element (0, 0)
  /// @param rows number of rows
  /// @param cols number of columns
  /// @param row_stride elements between (i, j) and (i + 1, j)
  /// @param col_stride elements between (i, j) and (i, j + 1)
  /// @param space where `data` lives
  POLAR_HOST_DEVICE constexpr matrix_view(T* data, index rows, index cols,
                                          index row_stride, index col_stride,
                                          memory_space space = memory_space::host) noexcept
      : data_(data),
        rows_(rows),
        cols_(cols),
        row_stride_(row_stride),
        col_stride_(col_stride),
        space_(space) {}

  /// A read-write view converts to a read-only one.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> &&
                                              !std::is_same_v<U, T>>>
  POLAR_HOST_DEVICE constexpr matrix_view(const matrix_view<U>& other) noexcept
      : matrix_view(other.data(), other.rows(), other.cols(), other.row_stride(),
                    other.col_stride(), other.space()) {}

  /// The first element.
  POLAR_HOST_DEVICE constexpr T* data() const noexcept { return data_; }
  /// The number of rows.
  POLAR_HOST_DEVICE constexpr index rows() const noexcept { return rows_; }
  /// The number of columns.
  POLAR_HOST_DEVICE constexpr index cols() const noexcept { return cols_; }
  /// Elements from one row to the next.
  POLAR_HOST_DEVICE constexpr index row_stride() const noexcept { return row_stride_; }
  /// Elements from one column to the next.
  POLAR_HOST_DEVICE constexpr index col_stride() const noexcept { return col_stride_; }
  /// Where the elements live.
  POLAR_HOST_DEVICE constexpr memory_space space() const noexcept { return space_; }
  /// rows * cols.
  POLAR_HOST_DEVICE constexpr index size() const noexcept { return rows_ * cols_; }
  /// True when the view has no elements.
  POLAR_HOST_DEVICE constexpr bool empty() const noexcept { return rows_ == 0 || cols_ == 0; }

  /// Reference to element (i, j); no bounds check.
  POLAR_HOST_DEVICE constexpr T& operator()(index i, index j) const noexcept {
    return data_[i * row_stride_ + j * col_stride_];
  }

  /// Elements of a row are adjacent (column stride 1, or a single column):
  /// the view is a row-major matrix with leading dimension row_stride().
  POLAR_HOST_DEVICE constexpr bool rows_contiguous() const noexcept {
    return col_stride_ == 1 || cols_ <= 1;
  }
  /// Elements of a column are adjacent: a column-major matrix with leading
  /// dimension col_stride().
  POLAR_HOST_DEVICE constexpr bool cols_contiguous() const noexcept {
    return row_stride_ == 1 || rows_ <= 1;
  }
  /// The elements fill rows*cols consecutive addresses, in either order.
  POLAR_HOST_DEVICE constexpr bool is_contiguous() const noexcept {
    return (rows_contiguous() && (rows_ <= 1 || row_stride_ == cols_)) ||
           (cols_contiguous() && (cols_ <= 1 || col_stride_ == rows_));
  }
  /// One past the largest element offset (0 for an empty view).
  POLAR_HOST_DEVICE constexpr index span() const noexcept {
    return empty() ? 0 : (rows_ - 1) * row_stride_ + (cols_ - 1) * col_stride_ + 1;
  }

  /// The transpose, as a view of the same memory.
  POLAR_HOST_DEVICE constexpr matrix_view transpose() const noexcept {
    return matrix_view(data_, cols_, rows_, col_stride_, row_stride_, space_);
  }
  /// The r x c block whose first element is (i, j); no bounds check.
  POLAR_HOST_DEVICE constexpr matrix_view block(index i, index j, index r, index c) const noexcept {
    return matrix_view(data_ + i * row_stride_ + j * col_stride_, r, c, row_stride_,
                       col_stride_, space_);
  }
  /// Row i as a vector.
  POLAR_HOST_DEVICE constexpr vector_view<T> row(index i) const noexcept;
  /// Column j as a vector.
  POLAR_HOST_DEVICE constexpr vector_view<T> col(index j) const noexcept;

 private:
  T* data_ = nullptr;
  index rows_ = 0;
  index cols_ = 0;
  index row_stride_ = 0;
  index col_stride_ = 0;
  memory_space space_ = memory_space::host;
};

/// A non-owning, strided view of a vector.
template <class T>
class vector_view {
 public:
  /// The element type, const-qualified for a read-only view.
  using element_type = T;
  /// The element type without qualifiers.
  using value_type = std::remove_cv_t<T>;

  constexpr vector_view() noexcept = default;
  /// @param data address of element 0
  /// @param size number of elements
  /// @param stride elements between i and i + 1
  /// @param space where `data` lives
  POLAR_HOST_DEVICE constexpr vector_view(T* data, index size, index stride = 1,
                                          memory_space space = memory_space::host) noexcept
      : data_(data), size_(size), stride_(stride), space_(space) {}

  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> &&
                                              !std::is_same_v<U, T>>>
  /// A read-only view of a writable one.
  POLAR_HOST_DEVICE constexpr vector_view(const vector_view<U>& other) noexcept
      : vector_view(other.data(), other.size(), other.stride(), other.space()) {}

  /// The first element.
  POLAR_HOST_DEVICE constexpr T* data() const noexcept { return data_; }
  /// The number of elements.
  POLAR_HOST_DEVICE constexpr index size() const noexcept { return size_; }
  /// Elements from one entry to the next.
  POLAR_HOST_DEVICE constexpr index stride() const noexcept { return stride_; }
  /// Where the elements live.
  POLAR_HOST_DEVICE constexpr memory_space space() const noexcept { return space_; }
  /// Whether the view has no elements.
  POLAR_HOST_DEVICE constexpr bool empty() const noexcept { return size_ == 0; }
  /// Element i (host memory only).
  POLAR_HOST_DEVICE constexpr T& operator[](index i) const noexcept { return data_[i * stride_]; }
  /// The vector as a size x 1 matrix.
  POLAR_HOST_DEVICE constexpr matrix_view<T> as_column() const noexcept {
    return matrix_view<T>(data_, size_, 1, stride_, 1, space_);
  }
  /// The vector as a 1 x size matrix.
  POLAR_HOST_DEVICE constexpr matrix_view<T> as_row() const noexcept {
    return matrix_view<T>(data_, 1, size_, 1, stride_, space_);
  }

 private:
  T* data_ = nullptr;
  index size_ = 0;
  index stride_ = 1;
  memory_space space_ = memory_space::host;
};

template <class T>
POLAR_HOST_DEVICE constexpr vector_view<T> matrix_view<T>::row(index i) const noexcept {
  // An empty row addresses nothing: its data may be null, with no offset.
  return vector_view<T>(cols_ == 0 ? data_ : data_ + i * row_stride_, cols_, col_stride_, space_);
}
template <class T>
POLAR_HOST_DEVICE constexpr vector_view<T> matrix_view<T>::col(index j) const noexcept {
  return vector_view<T>(rows_ == 0 ? data_ : data_ + j * col_stride_, rows_, row_stride_, space_);
}

/// A stack of `count` matrices of one shape, `batch_stride` elements apart:
/// a 3-D tensor (experts, heads) or any uniformly strided set of matrices.
template <class T>
class batch_view {
 public:
  /// The element type, const-qualified for a read-only view.
  using element_type = T;
  /// The element type without qualifiers.
  using value_type = std::remove_cv_t<T>;

  constexpr batch_view() noexcept = default;
  /// @param first the first matrix; its shape and strides are every matrix's
  /// @param count number of matrices
  /// @param batch_stride elements between element (i, j) of matrix k and of
  ///        matrix k + 1
  POLAR_HOST_DEVICE constexpr batch_view(matrix_view<T> first, index count,
                                         index batch_stride) noexcept
      : first_(first), count_(count), batch_stride_(batch_stride) {}

  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> &&
                                              !std::is_same_v<U, T>>>
  /// A read-only view of a writable one.
  POLAR_HOST_DEVICE constexpr batch_view(const batch_view<U>& other) noexcept
      : batch_view(matrix_view<T>(other.matrix(0)), other.count(), other.batch_stride()) {}

  /// Matrix k of the stack; no bounds check.
  POLAR_HOST_DEVICE constexpr matrix_view<T> matrix(index k) const noexcept {
    return matrix_view<T>(first_.data() + k * batch_stride_, first_.rows(), first_.cols(),
                          first_.row_stride(), first_.col_stride(), first_.space());
  }
  /// Matrix k of the stack.
  POLAR_HOST_DEVICE constexpr matrix_view<T> operator[](index k) const noexcept { return matrix(k); }
  /// The number of matrices.
  POLAR_HOST_DEVICE constexpr index count() const noexcept { return count_; }
  /// The rows of each matrix.
  POLAR_HOST_DEVICE constexpr index rows() const noexcept { return first_.rows(); }
  /// The columns of each matrix.
  POLAR_HOST_DEVICE constexpr index cols() const noexcept { return first_.cols(); }
  /// Elements from one matrix to the next.
  POLAR_HOST_DEVICE constexpr index batch_stride() const noexcept { return batch_stride_; }
  /// Where the elements live.
  POLAR_HOST_DEVICE constexpr memory_space space() const noexcept { return first_.space(); }
  /// The first element of the first matrix.
  POLAR_HOST_DEVICE constexpr T* data() const noexcept { return first_.data(); }
  /// Total number of elements over the stack.
  POLAR_HOST_DEVICE constexpr index size() const noexcept { return count_ * first_.size(); }
  /// Every matrix transposed.
  POLAR_HOST_DEVICE constexpr batch_view transpose() const noexcept {
    return batch_view(first_.transpose(), count_, batch_stride_);
  }

 private:
  matrix_view<T> first_;
  index count_ = 0;
  index batch_stride_ = 0;
};

/// A stack seen as one matrix of count * rows rows, matrix k occupying rows
/// k * rows to (k + 1) * rows - 1; valid when stackable(b). Elementwise work
/// and row reductions over a whole stack then take a single call.
template <class T>
POLAR_HOST_DEVICE constexpr bool stackable(const batch_view<T>& b) noexcept {
  return b.count() <= 1 || b.rows() == 0 || b.batch_stride() == b.rows() * b.matrix(0).row_stride();
}
/// The stack as one (count * rows) x cols matrix; requires stackable(b).
template <class T>
POLAR_HOST_DEVICE constexpr matrix_view<T> stacked(const batch_view<T>& b) noexcept {
  const auto m = b.matrix(0);
  return matrix_view<T>(m.data(), b.count() * m.rows(), m.cols(), m.row_stride(), m.col_stride(),
                        m.space());
}
/// A single matrix as a stack of one.
template <class T>
POLAR_HOST_DEVICE constexpr batch_view<T> as_batch(matrix_view<T> m) noexcept {
  return batch_view<T>(m, 1, m.size());
}
/// A view of a row-major rows x cols matrix with leading dimension `ld`
/// (by default `cols`, the contiguous case).
template <class T>
POLAR_HOST_DEVICE constexpr matrix_view<T> row_major_view(T* data, index rows, index cols,
                                                          index ld = -1,
                                                          memory_space space = memory_space::host) noexcept {
  return matrix_view<T>(data, rows, cols, ld < 0 ? cols : ld, 1, space);
}

/// A view of a column-major rows x cols matrix with leading dimension `ld`
/// (by default `rows`, the contiguous case).
template <class T>
POLAR_HOST_DEVICE constexpr matrix_view<T> col_major_view(T* data, index rows, index cols,
                                                          index ld = -1,
                                                          memory_space space = memory_space::host) noexcept {
  return matrix_view<T>(data, rows, cols, 1, ld < 0 ? rows : ld, space);
}

/// A stack of `count` contiguous row-major rows x cols matrices, one after
/// another: the layout of a C-ordered (count, rows, cols) tensor.
template <class T>
POLAR_HOST_DEVICE constexpr batch_view<T> row_major_batch(T* data, index count, index rows,
                                                          index cols,
                                                          memory_space space = memory_space::host) noexcept {
  return batch_view<T>(matrix_view<T>(data, rows, cols, cols, 1, space), count, rows * cols);
}

/// A read-only view of the same memory.
template <class T>
POLAR_HOST_DEVICE constexpr matrix_view<const T> as_const(matrix_view<T> v) noexcept {
  return v;
}
template <class T>
POLAR_HOST_DEVICE constexpr vector_view<const T> as_const(vector_view<T> v) noexcept {
  return v;
}
template <class T>
POLAR_HOST_DEVICE constexpr batch_view<const T> as_const(batch_view<T> v) noexcept {
  return v;
}

}  // namespace polar
