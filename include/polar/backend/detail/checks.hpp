// polar/backend/detail/checks.hpp: argument checks of the backend operations.
// Not for users. Every backend calls these first, so the same bad call gives
// the same typed error, with the same message, on every backend.
#pragma once

#include <cstdint>
#include <tuple>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"

namespace polar::detail {

/// True when element k of the contiguous `in` is data()[k] in the order of
/// the contiguous `out`: one flat loop then serves both.
template <class T, class U>
POLAR_HOST_DEVICE bool flat_compatible(const matrix_view<T>& out, const matrix_view<U>& in) noexcept {
  if (!in.is_contiguous()) return false;
  if (out.rows() <= 1 || out.cols() <= 1) return true;
  return out.row_stride() == in.row_stride() && out.col_stride() == in.col_stride();
}

inline index op_rows(op o, index rows, index cols) { return o == op::n ? rows : cols; }
inline index op_cols(op o, index rows, index cols) { return o == op::n ? cols : rows; }
inline const char* op_name(op o) { return o == op::n ? "" : "^T"; }

/// An output may be the very same view as an input (in place) but must not
/// otherwise overlap it.
template <class T, class U>
void check_inplace_or_disjoint(const char* opname, const char* out_name, const matrix_view<T>& out,
                               const char* in_name, const matrix_view<U>& in) {
  if constexpr (std::is_same_v<std::remove_cv_t<T>, std::remove_cv_t<U>>) {
    if (static_cast<const void*>(out.data()) == static_cast<const void*>(in.data()) &&
        out.row_stride() == in.row_stride() && out.col_stride() == in.col_stride())
      return;
  }
  check_no_alias(opname, out_name, out, in_name, in);
}

template <class T>
void check_gemm(const char* opname, memory_space space, op op_a, const matrix_view<const T>& a,
                op op_b, const matrix_view<const T>& b, const matrix_view<T>& c) {
  check_input(opname, "A", a);
  check_input(opname, "B", b);
  check_output(opname, "C", c);
  check_space(opname, "A", a, space);
  check_space(opname, "B", b, space);
  check_space(opname, "C", c, space);
  const index m = op_rows(op_a, a.rows(), a.cols()), k = op_cols(op_a, a.rows(), a.cols());
  const index kb = op_rows(op_b, b.rows(), b.cols()), n = op_cols(op_b, b.rows(), b.cols());
  if (k != kb)
    raise<shape_error>(opname, "op(A) = A", op_name(op_a), " is ", m, "x", k, " and op(B) = B",
                       op_name(op_b), " is ", kb, "x", n, "; the inner dimensions ", k, " and ",
                       kb, " differ");
  if (c.rows() != m || c.cols() != n)
    raise<shape_error>(opname, "C is ", c.rows(), "x", c.cols(), " but op(A) op(B) is ", m, "x", n);
  check_no_alias(opname, "C", c, "A", a);
  check_no_alias(opname, "C", c, "B", b);
}

template <class T>
void check_syrk(const char* opname, memory_space space, op op_a, const matrix_view<const T>& a,
                const matrix_view<T>& c) {
  check_input(opname, "A", a);
  check_output(opname, "C", c);
  check_space(opname, "A", a, space);
  check_space(opname, "C", c, space);
  const index n = op_rows(op_a, a.rows(), a.cols());
  if (c.rows() != n || c.cols() != n)
    raise<shape_error>(opname, "C is ", c.rows(), "x", c.cols(), " but op(A) op(A)^T is ", n, "x",
                       n, " (A", op_name(op_a), " is ", n, "x", op_cols(op_a, a.rows(), a.cols()),
                       ")");
  check_no_alias(opname, "C", c, "A", a);
}

template <class A, class B>
void check_same_count(const char* opname, const char* na, const batch_view<A>& a, const char* nb,
                      const batch_view<B>& b) {
  if (a.count() != b.count())
    raise<shape_error>(opname, na, " holds ", a.count(), " matrices but ", nb, " holds ",
                       b.count());
}

template <class T>
void check_gemm_batched(const char* opname, memory_space space, op op_a,
                        const batch_view<const T>& a, op op_b, const batch_view<const T>& b,
                        const batch_view<T>& c) {
  check_input(opname, "A", a);
  check_input(opname, "B", b);
  check_output(opname, "C", c);
  check_same_count(opname, "A", a, "B", b);
  check_same_count(opname, "A", a, "C", c);
  if (c.count() > 0) check_gemm(opname, space, op_a, a.matrix(0), op_b, b.matrix(0), c.matrix(0));
  check_no_alias(opname, "C", batch_extent(c), "A", batch_extent(a));
  check_no_alias(opname, "C", batch_extent(c), "B", batch_extent(b));
}

template <class T>
void check_syrk_batched(const char* opname, memory_space space, op op_a,
                        const batch_view<const T>& a, const batch_view<T>& c) {
  check_input(opname, "A", a);
  check_output(opname, "C", c);
  check_same_count(opname, "A", a, "C", c);
  if (c.count() > 0) check_syrk(opname, space, op_a, a.matrix(0), c.matrix(0));
  check_no_alias(opname, "C", batch_extent(c), "A", batch_extent(a));
}

template <class T>
void check_square(const char* opname, const char* name, const matrix_view<T>& c) {
  if (c.rows() != c.cols())
    raise<shape_error>(opname, name, " is ", c.rows(), "x", c.cols(), " but must be square");
}

/// The checks of symmetrize_batched: a writable stack of square matrices in
/// the backend's space.
template <class T>
void check_symmetrize_batched(const char* opname, memory_space space, const batch_view<T>& c) {
  check_output(opname, "C", c);
  if (c.count() == 0) return;
  check_space(opname, "C", c.matrix(0), space);
  check_square(opname, "C", c.matrix(0));
}

/// One input and one output of the same shape, in the backend's space; the
/// output may be the input itself.
template <class T, class U>
void check_unary(const char* opname, memory_space space, const char* in_name,
                 const matrix_view<const U>& x, const char* out_name, const matrix_view<T>& y) {
  check_input(opname, in_name, x);
  check_output(opname, out_name, y);
  check_space(opname, in_name, x, space);
  check_space(opname, out_name, y, space);
  check_same_shape(opname, out_name, y, in_name, x);
  check_inplace_or_disjoint(opname, out_name, y, in_name, x);
}

template <class T>
void check_reduce(const char* opname, memory_space space, const matrix_view<const T>& x) {
  check_input(opname, "x", x);
  check_space(opname, "x", x, space);
}

/// dot: two inputs of one shape.
template <class T>
void check_dot(memory_space space, const matrix_view<const T>& x, const matrix_view<const T>& y) {
  check_reduce<T>("polar::dot", space, x);
  check_reduce<T>("polar::dot", space, y);
  check_same_shape("polar::dot", "x", x, "y", y);
}

/// map: one output and inputs of its shape, each either the output itself
/// or disjoint from it.
template <class T, class... In>
void check_map(memory_space space, const matrix_view<T>& out, const matrix_view<const In>&... in) {
  constexpr const char* opname = "polar::map";
  check_output(opname, "out", out);
  check_space(opname, "out", out, space);
  auto one = [&](const auto& v) {
    check_input(opname, "input", v);
    check_space(opname, "input", v, space);
    check_same_shape(opname, "out", out, "input", v);
    check_inplace_or_disjoint(opname, "out", out, "input", v);
  };
  (one(in), ...);
}

/// for_each_row and for_each_element: one to eight operands of one shape in the backend's
/// memory; an operand the kernel may write (a view of non-const elements) is
/// the very same view as each other operand or disjoint from it.
/// The rows and columns of the first of a row operation's operands.
template <class V0, class... V>
index rows_of(const matrix_view<V0>& m0, const matrix_view<V>&...) {
  return m0.rows();
}
template <class V0, class... V>
index cols_of(const matrix_view<V0>& m0, const matrix_view<V>&...) {
  return m0.cols();
}

template <class... V>
void check_rows(const char* opname, memory_space space, const matrix_view<V>&... m) {
  static_assert(sizeof...(V) >= 1 && sizeof...(V) <= 8, "polar::for_each_row takes one to eight operands");
  static const char* const names[] = {"operand 0", "operand 1", "operand 2", "operand 3",
                                      "operand 4", "operand 5", "operand 6", "operand 7"};
  int a = 0;
  auto one = [&](const auto& x) {
    if constexpr (std::is_const_v<typename std::decay_t<decltype(x)>::element_type>)
      check_input(opname, names[a], x);
    else
      check_output(opname, names[a], x);
    check_space(opname, names[a], x, space);
    int b = 0;
    auto pair = [&](const auto& y) {
      if (b == 0) check_same_shape(opname, names[0], y, names[a], x);
      if constexpr (!std::is_const_v<typename std::decay_t<decltype(x)>::element_type>)
        if (b != a) check_inplace_or_disjoint(opname, names[a], x, names[b], y);
      ++b;
    };
    (pair(m), ...);
    ++a;
  };
  (one(m), ...);
}

/// for_each_row's column sums: out is N x cols, N from 1 to column_sums_max,
/// writable, in the backend's memory, and overlaps no operand.
template <class A, class... V>
void check_column_sums(const char* opname, memory_space space, const column_sums<A>& cs,
                       const matrix_view<V>&... m) {
  const auto& m0 = std::get<0>(std::forward_as_tuple(m...));
  const matrix_view<A>& out = cs.out;
  check_output(opname, "the column sums", out);
  check_space(opname, "the column sums", out, space);
  if (out.rows() < 1 || out.rows() > column_sums_max || out.cols() != m0.cols())
    raise<shape_error>(opname, "the column sums are ", out.rows(), "x", out.cols(), "; the operands being ",
                       m0.rows(), "x", m0.cols(), ", they must be N x ", m0.cols(), " with N from 1 to ",
                       column_sums_max);
  int a = 0;
  static const char* const names[] = {"operand 0", "operand 1", "operand 2", "operand 3",
                                      "operand 4", "operand 5", "operand 6", "operand 7"};
  auto one = [&](const auto& x) {
    check_no_alias(opname, "the column sums", out, names[a], x);
    ++a;
  };
  (one(m), ...);
}

/// Row or column reductions: out has x.rows() (rows) or x.cols() elements.
template <class T>
void check_reduce_lines(const char* opname, memory_space space, const matrix_view<const T>& x,
                        const vector_view<T>& out, bool rows) {
  check_reduce(opname, space, x);
  check_output(opname, "out", out);
  check_space(opname, "out", out, space);
  check_size(opname, "out", out, rows ? x.rows() : x.cols());
  check_no_alias(opname, "out", out.as_column(), "x", x);
}

template <class T>
void check_scale_lines(const char* opname, memory_space space, const vector_view<const T>& s,
                       const matrix_view<T>& x, bool rows) {
  check_input(opname, "s", s);
  check_output(opname, "x", x);
  check_space(opname, "s", s, space);
  check_space(opname, "x", x, space);
  check_size(opname, "s", s, rows ? x.rows() : x.cols());
  check_no_alias(opname, "x", x, "s", s.as_column());
}

template <class T>
void check_fill_random(const char* opname, memory_space space, const matrix_view<T>& x,
                       const rng_key& key, std::uint64_t offset) {
  check_output(opname, "x", x);
  check_space(opname, "x", x, space);
  if (key.sample > rng_key::max_sample)
    raise<value_error>(opname, "the key's sample index ", key.sample, " exceeds ",
                       rng_key::max_sample);
  const auto n = static_cast<std::uint64_t>(x.size());
  if (offset > rng_key::max_elements || n > rng_key::max_elements - offset)
    raise<value_error>(opname, "elements ", offset, " to ", offset + n,
                       " exceed the stream's 2^50 elements");
}

template <class T>
void check_qr(const char* opname, memory_space space, const matrix_view<const T>& a,
              const matrix_view<T>& q, const matrix_view<T>& r) {
  check_input(opname, "A", a);
  check_output(opname, "Q", q);
  check_output(opname, "R", r);
  check_space(opname, "A", a, space);
  check_space(opname, "Q", q, space);
  check_space(opname, "R", r, space);
  if (a.rows() < a.cols())
    raise<shape_error>(opname, "A is ", a.rows(), "x", a.cols(),
                       "; the thin QR needs rows >= cols (factor the transpose)");
  check_shape(opname, "Q", q, a.rows(), a.cols());
  check_shape(opname, "R", r, a.cols(), a.cols());
  check_no_alias(opname, "Q", q, "R", r);
  check_no_alias(opname, "Q", q, "A", a);
  check_no_alias(opname, "R", r, "A", a);
}

template <class T>
void check_svd(const char* opname, memory_space space, const matrix_view<const T>& a,
               const matrix_view<T>& u, const vector_view<T>& s, const matrix_view<T>& v) {
  check_input(opname, "A", a);
  check_output(opname, "U", u);
  check_output(opname, "S", s);
  check_output(opname, "V", v);
  check_space(opname, "A", a, space);
  check_space(opname, "U", u, space);
  check_space(opname, "S", s, space);
  check_space(opname, "V", v, space);
  const index k = a.rows() < a.cols() ? a.rows() : a.cols();
  check_shape(opname, "U", u, a.rows(), k);
  check_size(opname, "S", s, k);
  check_shape(opname, "V", v, a.cols(), k);
  check_no_alias(opname, "U", u, "V", v);
  check_no_alias(opname, "U", u, "S", s.as_column());
  check_no_alias(opname, "V", v, "S", s.as_column());
}

template <class T>
void check_solve(const char* opname, memory_space space, const matrix_view<const T>& a,
                 const matrix_view<T>& b) {
  check_input(opname, "A", a);
  check_output(opname, "B", b);
  check_space(opname, "A", a, space);
  check_space(opname, "B", b, space);
  check_square(opname, "A", a);
  if (b.rows() != a.rows())
    raise<shape_error>(opname, "A is ", a.rows(), "x", a.cols(), " but B is ", b.rows(), "x",
                       b.cols(), "; B needs ", a.rows(), " rows");
  check_no_alias(opname, "B", b, "A", a);
}

}  // namespace polar::detail
