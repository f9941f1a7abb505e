// polar/core/tensor_traits.hpp: how a tensor type describes its memory.
//
// polar never copies the caller's weights. A type takes part by
// specializing polar::tensor_traits, which turns an object into a
// matrix_view of the same memory. Specializations ship for polar's own views,
// for raw pointers with a shape (polar::shaped_pointer), for Eigen's dense
// types (core/eigen_traits.hpp) and for Thrust vectors with a shape (the
// Thrust backend). A user's own type joins the same way:
//
//   template <> struct polar::tensor_traits<my::tensor> {
//     using scalar = float;
//     static polar::matrix_view<float> view(my::tensor& t) {
//       return polar::row_major_view(t.data(), t.rows(), t.cols());
//     }
//     static polar::matrix_view<const float> view(const my::tensor& t) {
//       return polar::row_major_view(t.data(), t.rows(), t.cols());
//     }
//   };
//
// Algorithms then call polar::make_view(t).
#pragma once

#include <type_traits>
#include <utility>

#include "polar/core/view.hpp"

namespace polar {

/// Maps a tensor type to a matrix_view of its memory.
///
/// The primary template is empty: a type without a specialization is not a
/// tensor, and polar::make_view says so at compile time. A specialization
/// provides
///
/// @code
///   using scalar = S;                                     // element type
///   static matrix_view<S>       view(Tensor&);           // read-write
///   static matrix_view<const S> view(const Tensor&);     // read-only
/// @endcode
///
/// The view must describe the tensor's own memory (no copy), and stay valid
/// for as long as the tensor is neither destroyed nor resized. A type that
/// only refers to memory owned elsewhere (a block, a map) may also say
/// `static constexpr bool borrowed = true;`: make_view then takes its
/// temporaries too (make_view(w.block(0, 0, 4, 4))).
template <class Tensor, class Enable = void>
struct tensor_traits {};

namespace detail {
/// Specialized true for expressions that have no memory of their own (an
/// Eigen product or sum): make_view tells the user to evaluate them.
template <class T, class = void>
struct is_unevaluated_expression : std::false_type {};

template <class Tensor, class = void>
struct is_borrowed : std::false_type {};
template <class Tensor>
struct is_borrowed<Tensor, std::enable_if_t<tensor_traits<std::remove_cv_t<Tensor>>::borrowed>> : std::true_type {};

template <class Tensor, class = void>
struct has_tensor_traits : std::false_type {};
template <class Tensor>
struct has_tensor_traits<
    Tensor, std::void_t<typename tensor_traits<std::remove_cv_t<Tensor>>::scalar,
                        decltype(tensor_traits<std::remove_cv_t<Tensor>>::view(
                            std::declval<Tensor&>()))>> : std::true_type {};
}  // namespace detail

/// True when Tensor has a tensor_traits specialization.
template <class Tensor>
inline constexpr bool is_tensor_v = detail::has_tensor_traits<std::remove_reference_t<Tensor>>::value;

/// The element type of a tensor.
template <class Tensor>
using scalar_t = typename tensor_traits<std::remove_cv_t<std::remove_reference_t<Tensor>>>::scalar;

namespace detail {
/// The sentences make_view says when Tensor cannot be viewed (a temporary
/// when Temporary).
template <class Tensor, bool Temporary>
constexpr void check_viewable() {
  constexpr bool expression = is_unevaluated_expression<std::remove_cv_t<Tensor>>::value;
  static_assert(!expression,
                "polar::make_view: this is an expression without memory of its own (a product, a sum, a "
                "scaled matrix): evaluate it into a matrix first (Eigen: `.eval()` or assign it to a Matrix), "
                "then take the view of that matrix.");
  static_assert(!Temporary || !is_tensor_v<Tensor> || is_borrowed<std::remove_cv_t<Tensor>>::value,
                "polar::make_view: this temporary owns its elements, which are gone at the end of the statement; "
                "keep it in a named variable and take the view of that.");
  static_assert(is_tensor_v<Tensor> || expression,
                "polar::make_view: this type is not a polar tensor. Specialize "
                "polar::tensor_traits<T> with `using scalar = ...;` and static view(T&) and "
                "view(const T&) functions returning polar::matrix_view (see "
                "polar/core/tensor_traits.hpp and docs/views.md).");
}
}  // namespace detail

/// The matrix_view of a tensor's memory; read-only when the tensor is const.
template <class Tensor>
auto make_view(Tensor& t) {
  detail::check_viewable<Tensor, false>();
  if constexpr (is_tensor_v<Tensor>)
    return tensor_traits<std::remove_cv_t<Tensor>>::view(t);
  else
    return matrix_view<float>();  // not reached: the check above failed to compile
}

/// The view of a temporary that refers to memory owned elsewhere: an Eigen
/// block, map or ref (make_view(w.block(0, 0, 4, 4)), make_view(w.col(2))).
template <class Tensor, class = std::enable_if_t<!std::is_lvalue_reference_v<Tensor>>>
auto make_view(Tensor&& t) {
  detail::check_viewable<Tensor, true>();
  if constexpr (is_tensor_v<Tensor>)
    return tensor_traits<std::remove_cv_t<Tensor>>::view(t);
  else
    return matrix_view<float>();  // not reached: the check above failed to compile
}

template <class T>
struct shaped_pointer;

/// A shaped_pointer passed by value (polar::with_shape(p, r, c)) is a view of
/// memory the caller owns, so a temporary is fine.
template <class T>
auto make_view(const shaped_pointer<T>& p) {
  return tensor_traits<shaped_pointer<T>>::view(p);
}

/// A view is a tensor of itself.
template <class T>
matrix_view<T> make_view(const matrix_view<T>& v) noexcept {
  return v;
}

/// Views are tensors of themselves.
template <class T>
struct tensor_traits<matrix_view<T>> {
  /// The element type.
  using scalar = std::remove_cv_t<T>;
  /// A view refers to memory owned elsewhere.
  static constexpr bool borrowed = true;
  /// A view is its own view.
  static matrix_view<T> view(const matrix_view<T>& v) noexcept { return v; }
};

/// Memory order of a shaped_pointer.
enum class layout : unsigned char {
  row_major,  ///< C order: elements of a row are adjacent
  col_major,  ///< Fortran order: elements of a column are adjacent
};

/// A raw pointer with a shape: the tensor type for memory the caller manages.
template <class T>
struct shaped_pointer {
  T* data = nullptr;                           ///< element (0, 0)
  index rows = 0;                              ///< number of rows
  index cols = 0;                              ///< number of columns
  layout order = layout::row_major;            ///< memory order
  index ld = -1;                               ///< leading dimension; -1 for contiguous
  memory_space space = memory_space::host;     ///< where `data` lives
};

/// Gives a raw pointer a shape, so it can be passed where a tensor is
/// expected: `polar::with_shape(ptr, 128, 512)`.
template <class T>
constexpr shaped_pointer<T> with_shape(T* data, index rows, index cols,
                                       layout order = layout::row_major, index ld = -1,
                                       memory_space space = memory_space::host) noexcept {
  return {data, rows, cols, order, ld, space};
}

/// A pointer with a shape is a tensor: make_view(polar::with_shape(p, rows, cols)).
template <class T>
struct tensor_traits<shaped_pointer<T>> {
  /// The element type.
  using scalar = std::remove_cv_t<T>;
  /// A pointer refers to memory the caller owns.
  static constexpr bool borrowed = true;
  /// The row-major matrix the pointer and shape describe.
  static matrix_view<T> view(const shaped_pointer<T>& p) noexcept {
    return p.order == layout::row_major ? row_major_view(p.data, p.rows, p.cols, p.ld, p.space)
                                        : col_major_view(p.data, p.rows, p.cols, p.ld, p.space);
  }
};

}  // namespace polar
