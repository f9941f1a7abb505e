// polar/core/tensor.hpp: a view of a dense tensor of rank 0 to 5, for
// parameters that are not matrices (biases, stacks of matrices, convolution
// kernels).
//
// A tensor_view is a pointer, a shape in C order (the last extent varies
// fastest) and a memory space; its elements are contiguous. The optimizers
// read the rank to decide what a tensor is:
//
//   rank 0, 1     a scalar or a vector (AdamW, SGD; Muon rejects it)
//   rank 2        a matrix
//   rank 3        a stack of matrices (experts, heads): (count, rows, cols)
//   rank 4, 5     a convolution kernel (out, in, kh, kw[, kd]), flattened to
//                 the matrix (out, in * kh * kw ...)
#pragma once

#include <initializer_list>
#include <string>
#include <type_traits>

#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// A non-owning view of a contiguous, C-ordered tensor.
template <class T>
class tensor_view {
 public:
  static constexpr int max_rank = 5;  ///< the most extents a view holds

  constexpr tensor_view() noexcept = default;
  /// A view of the elements at data, of the given shape, in memory space.
  /// @param data the first element
  /// @param shape extents in C order, at most max_rank of them
  /// @param space where the elements live
  /// @throws shape_error for a negative extent or more than max_rank extents
  tensor_view(T* data, std::initializer_list<index> shape, memory_space space = memory_space::host)
      : data_(data), space_(space) {
    if (shape.size() > std::size_t(max_rank))
      detail::raise<shape_error>("polar::tensor_view", "a tensor has at most ", max_rank, " extents, got ",
                                 shape.size());
    for (index e : shape) {
      if (e < 0) detail::raise<shape_error>("polar::tensor_view", "extent ", rank_, " is negative: ", e);
      extent_[rank_++] = e;
    }
  }
  /// A contiguous matrix as a rank-2 tensor; throws shape_error when the
  /// matrix is not contiguous row-major.
  explicit tensor_view(matrix_view<T> m) : tensor_view(m.data(), {m.rows(), m.cols()}, m.space()) {
    if (m.size() > 1 && !(m.col_stride() == 1 && (m.row_stride() == m.cols() || m.rows() == 1)))
      detail::raise<shape_error>("polar::tensor_view", "a ", m.rows(), "x", m.cols(), " matrix with strides ",
                                 m.row_stride(), ",", m.col_stride(), " is not contiguous row-major");
  }
  /// A read-only view of a writable one.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  tensor_view(const tensor_view<U>& o) noexcept : data_(o.data()), rank_(o.rank()), space_(o.space()) {
    for (int d = 0; d < rank_; ++d) extent_[d] = o.extent(d);
  }

  /// The first element.
  T* data() const noexcept { return data_; }
  /// The number of extents.
  int rank() const noexcept { return rank_; }
  /// Extent d (0 is the slowest-varying).
  index extent(int d) const noexcept { return extent_[d]; }
  /// Where the elements live.
  memory_space space() const noexcept { return space_; }
  /// The number of elements: the product of the extents.
  index size() const noexcept {
    index n = 1;
    for (int d = 0; d < rank_; ++d) n *= extent_[d];
    return n;
  }
  /// All elements as one 1 x size row.
  matrix_view<T> flat() const noexcept { return matrix_view<T>(data_, 1, size(), size(), 1, space_); }
  /// "64x32x3x3".
  std::string shape_string() const {
    if (rank_ == 0) return "scalar";
    std::string s;
    for (int d = 0; d < rank_; ++d) s += (d ? "x" : "") + std::to_string(extent_[d]);
    return s;
  }

 private:
  T* data_ = nullptr;
  int rank_ = 0;
  index extent_[max_rank] = {};
  memory_space space_ = memory_space::host;
};

/// True when two tensors have the same rank and extents.
template <class A, class B>
bool same_shape(const tensor_view<A>& a, const tensor_view<B>& b) noexcept {
  if (a.rank() != b.rank()) return false;
  for (int d = 0; d < a.rank(); ++d)
    if (a.extent(d) != b.extent(d)) return false;
  return true;
}

/// The stack of matrices a tensor of rank 2 to 5 stands for (see the header
/// comment); throws unsupported_error for rank 0 and 1.
template <class T>
batch_view<T> as_matrix_stack(const char* op, const tensor_view<T>& t) {
  const memory_space sp = t.space();
  switch (t.rank()) {
    case 2: return as_batch(row_major_view(t.data(), t.extent(0), t.extent(1), -1, sp));
    case 3: return row_major_batch(t.data(), t.extent(0), t.extent(1), t.extent(2), sp);
    case 4:
    case 5: {
      const index rows = t.extent(0), cols = rows == 0 ? 0 : t.size() / rows;
      return as_batch(row_major_view(t.data(), rows, cols, -1, sp));
    }
    default:
      detail::raise<unsupported_error>(op, "a ", t.rank(), "-D tensor (", t.shape_string(),
                                       ") is not a matrix; give 1-D parameters (biases, gains, norms) "
                                       "to AdamW");
  }
}

}  // namespace polar
