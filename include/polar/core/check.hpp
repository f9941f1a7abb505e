// polar/core/check.hpp: argument checks shared by every backend and
// algorithm, so the same bad input gives the same typed error everywhere.
//
// Inputs (read-only views) must have non-negative extents and strides and a
// non-null pointer when they hold elements. Outputs must in addition be
// free of self-overlap: no two (i, j) may address the same element. The test
// used is the classic sufficient one: sort the dimensions by stride; each
// stride must exceed the largest offset reachable with the smaller ones.
#pragma once

#include <functional>
#include <string>
#include <utility>

#include "polar/core/config.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

#if POLAR_DEBUG_CHECKS && defined(__CUDACC__)
#include <cuda_runtime_api.h>
#endif

namespace polar {

/// "3x4 (strides 4,1, host)": a view's shape for messages.
template <class T>
std::string describe(const matrix_view<T>& v) {
  return detail::concat(v.rows(), "x", v.cols(), " (strides ", v.row_stride(), ",",
                        v.col_stride(), ", ", to_string(v.space()), ")");
}
/// "5 (stride 1, host)".
template <class T>
std::string describe(const vector_view<T>& v) {
  return detail::concat(v.size(), " (stride ", v.stride(), ", ", to_string(v.space()), ")");
}
/// "8 x 3x4 (strides 4,1, batch stride 12, host)".
template <class T>
std::string describe(const batch_view<T>& v) {
  const auto m = v.matrix(0);
  return detail::concat(v.count(), " x ", m.rows(), "x", m.cols(), " (strides ", m.row_stride(),
                        ",", m.col_stride(), ", batch stride ", v.batch_stride(), ", ",
                        to_string(v.space()), ")");
}

namespace detail {

// True when no two index tuples of the given extents map to one offset
// (sufficient condition; extents of 1 or 0 are ignored).
template <std::size_t N>
bool strides_disjoint(const index (&extent)[N], const index (&stride)[N]) {
  std::pair<index, index> dims[N];  // (stride, extent)
  std::size_t n = 0;
  for (std::size_t d = 0; d < N; ++d) {
    if (extent[d] == 0) return true;  // no elements at all
    if (extent[d] > 1) dims[n++] = {stride[d], extent[d]};
  }
  for (std::size_t a = 1; a < n; ++a)  // insertion sort: N is 2 or 3
    for (std::size_t b = a; b > 0 && dims[b] < dims[b - 1]; --b) std::swap(dims[b], dims[b - 1]);
  index reach = 0;  // largest offset reachable with the dimensions so far
  for (std::size_t d = 0; d < n; ++d) {
    if (dims[d].first <= reach) return false;
    reach += dims[d].first * (dims[d].second - 1);
  }
  return true;
}

/// Raises shape_error for a W (or G) of `got` that a state made for
/// rows x cols (count of them) does not fit; a state that no init() made
/// (0 x 0) is told to call init() first.
[[noreturn]] inline void raise_state_mismatch(const char* op, const char* name, const std::string& got, index count,
                                              index rows, index cols) {
  if (count <= 1 && rows == 0 && cols == 0)
    raise<shape_error>(op, name, " is ", got, " but the state is empty: no init() made it; call init(be, W) first");
  raise<shape_error>(op, name, " is ", got, " but the state was made for ",
                     count == 1 ? concat(rows, "x", cols) : concat(count, " x ", rows, "x", cols));
}

template <class T>
void check_common(const char* op, const char* name, const matrix_view<T>& v) {
  if (v.rows() < 0 || v.cols() < 0)
    raise<shape_error>(op, name, " has a negative extent: ", describe(v));
  if (v.row_stride() < 0 || v.col_stride() < 0)
    raise<shape_error>(op, name, " has a negative stride: ", describe(v));
  if (v.data() == nullptr && !v.empty())
    raise<value_error>(op, name, " is a null pointer with shape ", describe(v));
}

}  // namespace detail

/// Checks a view that `op` reads: extents, strides and pointer.
/// @throws shape_error, value_error
template <class T>
void check_input(const char* op, const char* name, const matrix_view<T>& v) {
  detail::check_common(op, name, v);
}

/// Checks a view that `op` writes: as check_input, and no two elements
/// share an address.
/// @throws shape_error, value_error
template <class T>
void check_output(const char* op, const char* name, const matrix_view<T>& v) {
  detail::check_common(op, name, v);
  const index extent[2] = {v.rows(), v.cols()};
  const index stride[2] = {v.row_stride(), v.col_stride()};
  if (!detail::strides_disjoint(extent, stride))
    detail::raise<shape_error>(op, name, " is written but its strides overlap: ",
                               describe(v));
}

template <class T>
void check_input(const char* op, const char* name, const vector_view<T>& v) {
  check_input(op, name, v.as_column());
}
template <class T>
void check_output(const char* op, const char* name, const vector_view<T>& v) {
  check_output(op, name, v.as_column());
}

template <class T>
void check_input(const char* op, const char* name, const batch_view<T>& v) {
  if (v.count() < 0) detail::raise<shape_error>(op, name, " has a negative count: ", describe(v));
  if (v.batch_stride() < 0)
    detail::raise<shape_error>(op, name, " has a negative batch stride: ", describe(v));
  detail::check_common(op, name, v.matrix(0));
  if (v.data() == nullptr && v.size() > 0)
    detail::raise<value_error>(op, name, " is a null pointer with shape ", describe(v));
}
template <class T>
void check_output(const char* op, const char* name, const batch_view<T>& v) {
  check_input(op, name, v);
  const auto m = v.matrix(0);
  const index extent[3] = {v.count(), m.rows(), m.cols()};
  const index stride[3] = {v.batch_stride(), m.row_stride(), m.col_stride()};
  if (!detail::strides_disjoint(extent, stride))
    detail::raise<shape_error>(op, name, " is written but its strides overlap: ", describe(v));
}

/// Throws memory_space_error unless `v` lives in `expected`. Under nvcc in
/// the debug mode (POLAR_DEBUG_CHECKS) the pointer itself is asked too
/// (cudaPointerGetAttributes): a view that declares host memory for a
/// device pointer, or device memory for a host one, is refused. Managed
/// memory suits both.
template <class View>
void check_space(const char* op, const char* name, const View& v, memory_space expected) {
  if (v.space() != expected)
    detail::raise<memory_space_error>(op, name, " is in ", to_string(v.space()),
                                      " memory but this backend needs ", to_string(expected),
                                      " memory: ", describe(v));
#if POLAR_DEBUG_CHECKS && defined(__CUDACC__)
  if (v.data() == nullptr || v.size() == 0) return;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, static_cast<const void*>(v.data())) != cudaSuccess) {
    (void)cudaGetLastError();  // no CUDA context or an unknown pointer: nothing to learn
    return;
  }
  const bool device = a.type == cudaMemoryTypeDevice;
  const bool host = a.type == cudaMemoryTypeHost || a.type == cudaMemoryTypeUnregistered;
  if ((v.space() == memory_space::host && device) || (v.space() == memory_space::device && host))
    detail::raise<memory_space_error>(op, name, " declares ", to_string(v.space()), " memory but its pointer is ",
                                      device ? "device" : "host",
                                      " memory (cudaPointerGetAttributes, a debug check): ", describe(v));
#endif
}

/// Throws shape_error unless `a` and `b` have the same shape.
template <class A, class B>
void check_same_shape(const char* op, const char* name_a, const matrix_view<A>& a,
                      const char* name_b, const matrix_view<B>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    detail::raise<shape_error>(op, name_a, " is ", a.rows(), "x", a.cols(), " but ", name_b,
                               " is ", b.rows(), "x", b.cols(), "; they must have the same shape");
}

/// Throws shape_error unless a view has the given shape.
template <class A>
void check_shape(const char* op, const char* name, const matrix_view<A>& a, index rows,
                 index cols) {
  if (a.rows() != rows || a.cols() != cols)
    detail::raise<shape_error>(op, name, " is ", a.rows(), "x", a.cols(), " but must be ", rows,
                               "x", cols);
}

/// Throws shape_error unless a vector has the given length.
template <class A>
void check_size(const char* op, const char* name, const vector_view<A>& a, index size) {
  if (a.size() != size)
    detail::raise<shape_error>(op, name, " has ", a.size(), " elements but must have ", size);
}

/// True when the address ranges spanned by two views intersect (a cheap,
/// conservative test: interleaved views that share no element also count).
template <class A, class B>
bool may_overlap(const matrix_view<A>& a, const matrix_view<B>& b) noexcept {
  if (a.empty() || b.empty() || a.space() != b.space()) return false;
  const auto* a0 = reinterpret_cast<const char*>(a.data());
  const auto* b0 = reinterpret_cast<const char*>(b.data());
  const auto* a1 = a0 + a.span() * static_cast<index>(sizeof(A));
  const auto* b1 = b0 + b.span() * static_cast<index>(sizeof(B));
  return std::less<const char*>()(a0, b1) && std::less<const char*>()(b0, a1);
}

/// Throws value_error when an output may share memory with an input that
/// the operation reads after it has started writing.
template <class A, class B>
void check_no_alias(const char* op, const char* out_name, const matrix_view<A>& out,
                    const char* in_name, const matrix_view<B>& in) {
  if (may_overlap(out, in))
    detail::raise<value_error>(op, out_name, " (", describe(out), ") shares memory with ", in_name,
                               " (", describe(in), "); pass separate buffers");
}

namespace detail {
/// The whole stack as one address range, for overlap checks.
template <class T>
matrix_view<T> batch_extent(const batch_view<T>& v) {
  if (v.count() == 0 || v.matrix(0).empty()) return {};
  const index span = (v.count() - 1) * v.batch_stride() + v.matrix(0).span();
  return matrix_view<T>(v.data(), 1, span, span, 1, v.space());
}
}  // namespace detail

/// Throws shape_error unless two stacks hold the same count of matrices of
/// the same shape.
template <class A, class B>
void check_same_shape(const char* op, const char* name_a, const batch_view<A>& a,
                      const char* name_b, const batch_view<B>& b) {
  if (a.count() != b.count() || a.rows() != b.rows() || a.cols() != b.cols())
    detail::raise<shape_error>(op, name_a, " is ", a.count(), " x ", a.rows(), "x", a.cols(), " but ",
                               name_b, " is ", b.count(), " x ", b.rows(), "x", b.cols(),
                               "; they must have the same shape");
}

/// Throws value_error when two stacks' address ranges intersect.
template <class A, class B>
void check_no_alias(const char* op, const char* out_name, const batch_view<A>& out,
                    const char* in_name, const batch_view<B>& in) {
  if (may_overlap(detail::batch_extent(out), detail::batch_extent(in)))
    detail::raise<value_error>(op, out_name, " (", describe(out), ") shares memory with ", in_name,
                               " (", describe(in), "); pass separate buffers");
}

}  // namespace polar
