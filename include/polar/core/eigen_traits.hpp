// polar/core/eigen_traits.hpp: Eigen's dense types as polar tensors.
//
// Any Eigen dense object with direct memory access is a tensor: Matrix and
// Array of either storage order, Map (with any Stride), Ref, and blocks of
// those. Expressions without storage (A * 2, A.transpose() of a temporary)
// are not, and make_view rejects them at compile time.
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "polar/core/tensor_traits.hpp"

namespace polar {
namespace detail {
template <class T, class = void>
struct is_eigen_direct : std::false_type {};
template <class T>
struct is_eigen_direct<T, std::enable_if_t<std::is_base_of_v<Eigen::DenseBase<T>, T>>>
    : std::bool_constant<(Eigen::internal::traits<T>::Flags & Eigen::DirectAccessBit) != 0> {};
/// Eigen expressions without storage (A * 2, A + B, A * B): make_view says
/// to evaluate them.
template <class T>
struct is_unevaluated_expression<T, std::enable_if_t<std::is_base_of_v<Eigen::DenseBase<T>, T> &&
                                                     !is_eigen_direct<T>::value>> : std::true_type {};
}  // namespace detail

/// Eigen dense types with direct access (Matrix, Array, Map, Ref, Block).
template <class Derived>
struct tensor_traits<Derived, std::enable_if_t<detail::is_eigen_direct<Derived>::value>> {
  using scalar = typename Derived::Scalar;
  /// Blocks, maps and refs point into memory owned elsewhere; a Matrix or
  /// Array owns its elements.
  static constexpr bool borrowed = !std::is_base_of_v<Eigen::PlainObjectBase<Derived>, Derived>;

  template <class D>
  static auto view(D& m) noexcept {
    using ptr = std::remove_pointer_t<decltype(m.data())>;
    const index inner = m.innerStride();
    const index outer = m.outerStride();
    if constexpr (Derived::IsRowMajor)
      return matrix_view<ptr>(m.data(), m.rows(), m.cols(), outer, inner);
    else
      return matrix_view<ptr>(m.data(), m.rows(), m.cols(), inner, outer);
  }
};

}  // namespace polar
