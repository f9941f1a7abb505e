// polar/core/param_view.hpp: a model's parameter or gradient, a matrix view
// (any strides) or a contiguous tensor of rank 0 to 5, as the model-level
// optimizer (polar/optimizer.hpp) takes them.
#pragma once

#include <string>
#include <type_traits>

#include "polar/core/error.hpp"
#include "polar/core/tensor.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// A parameter or gradient: a matrix view (any strides) or a contiguous
/// tensor of rank 0 to 5. Converts implicitly from both.
template <class T>
class param_view {
 public:
  param_view() = default;
  /// A matrix parameter.
  param_view(matrix_view<T> m) : matrix_(m), is_tensor_(false) {}  // NOLINT: implicit by design
  /// A tensor parameter.
  param_view(tensor_view<T> t) : tensor_(t), is_tensor_(true) {}   // NOLINT
  /// A read-only view of a writable one.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  param_view(const param_view<U>& o)  // NOLINT
      : matrix_(o.matrix()), tensor_(o.tensor()), is_tensor_(o.is_tensor()) {}
  /// A read-only view of a writable matrix.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  param_view(matrix_view<U> m) : param_view(matrix_view<T>(m)) {}  // NOLINT
  /// A read-only view of a writable tensor.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  param_view(tensor_view<U> t) : param_view(tensor_view<T>(t)) {}  // NOLINT

  /// Refuses, with one sentence, a matrix of another scalar type or a
  /// read-only matrix where the weights must be written.
  template <class U, class = std::enable_if_t<!std::is_same_v<U, T> && !std::is_same_v<const U, T>>, class = void>
  param_view(matrix_view<U>) {  // NOLINT
    refuse<U>();
  }
  /// The same for tensors.
  template <class U, class = std::enable_if_t<!std::is_same_v<U, T> && !std::is_same_v<const U, T>>, class = void>
  param_view(tensor_view<U>) {  // NOLINT
    refuse<U>();
  }

  /// Whether it holds a tensor (else a matrix).
  bool is_tensor() const noexcept { return is_tensor_; }
  /// The matrix (when !is_tensor()).
  matrix_view<T> matrix() const noexcept { return matrix_; }
  /// The tensor (when is_tensor()).
  tensor_view<T> tensor() const noexcept { return tensor_; }

  /// True when the automatic route sends it to the matrix direction: a
  /// matrix, stack or kernel with at least two rows and two columns.
  bool matrix_like() const {
    if (is_tensor_ && tensor_.rank() < 2) return false;
    const auto b = stack("polar::param_view");
    return b.rows() >= 2 && b.cols() >= 2;
  }
  /// The stack of matrices the matrix direction sees.
  batch_view<T> stack(const char* op) const { return is_tensor_ ? as_matrix_stack(op, tensor_) : as_batch(matrix_); }
  /// The elementwise view the other direction sees.
  matrix_view<T> elements() const noexcept { return is_tensor_ ? tensor_.flat() : matrix_; }
  /// "64x32x3x3" or "64x32".
  std::string shape_string() const {
    return is_tensor_ ? tensor_.shape_string() : detail::concat(matrix_.rows(), "x", matrix_.cols());
  }
  /// Whether both are matrices of one shape or tensors of one shape.
  template <class U>
  bool same_shape_as(const param_view<U>& o) const {
    if (is_tensor_ != o.is_tensor()) return false;
    if (is_tensor_) return same_shape(tensor_, o.tensor());
    return matrix_.rows() == o.matrix().rows() && matrix_.cols() == o.matrix().cols();
  }

 private:
  template <class U>
  static void refuse() {
    static_assert(std::is_same_v<std::remove_const_t<U>, std::remove_const_t<T>>,
                  "polar::optimizer: this tensor's scalar type is not the optimizer's; make the optimizer for "
                  "that type, or convert the gradient into a matrix of the weights' type (Eigen: "
                  "G.cast<float>() assigned to a Matrix) and pass that");
    static_assert(!std::is_const_v<U> || std::is_const_v<T>,
                  "polar::optimizer: these weights are read-only (a view of a const tensor); the optimizer "
                  "writes the weights, so pass the tensor itself, not a const reference to it");
  }

  matrix_view<T> matrix_{};
  tensor_view<T> tensor_{};
  bool is_tensor_ = false;
};

}  // namespace polar
