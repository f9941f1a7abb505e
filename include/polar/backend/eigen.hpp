// polar/backend/eigen.hpp: the Eigen backend, for host memory.
//
// Products go through Eigen's single-threaded GEMM on blocks of the result
// that polar's thread pool shares out (core/threads.hpp), the symmetric
// rank-k update is blocked into GEMMs
// plus Eigen's triangular kernel on the diagonal blocks, factorizations are
// Eigen's HouseholderQR, BDCSVD and PartialPivLU, and elementwise work and
// reductions are OpenMP loops over the views (backend/detail/host_loops.hpp).
// Every operation implements polar::backend::archetype (backend/concept.hpp)
// and checks its arguments first (backend/detail/checks.hpp).
#pragma once

#include <cstdint>
#include <type_traits>

#include "polar/backend/concept.hpp"
#include "polar/backend/detail/checks.hpp"
#include "polar/backend/detail/eigen_kernels.hpp"
#include "polar/backend/detail/host_buffer.hpp"
#include "polar/backend/detail/host_lowp.hpp"
#include "polar/backend/detail/host_loops.hpp"
#include "polar/backend/detail/host_rows.hpp"
#include "polar/core/eigen_traits.hpp"

namespace polar::backend {

/// Host backend over Eigen 3.4, polar's thread pool and OpenMP. Stateless
/// and cheap to construct; one object may be shared by threads. The number
/// of threads it uses is polar::threads() (polar::set_threads,
/// polar::thread_limit; docs/threads.md).
class eigen {
 public:
  /// Operands live in host memory.
  static constexpr memory_space space = memory_space::host;
  /// polar's own loops run on OpenMP's threads.
  static constexpr bool threaded = true;
  /// Owning allocation: 64-byte aligned host memory.
  template <class T>
  using buffer = host_buffer<T>;

  /// "eigen".
  static const char* name() { return "eigen"; }
  /// Threads the backend's loops and products use when called from this
  /// thread now: polar::threads() (core/threads.hpp).
  static int threads() { return polar::threads(); }

  // ---- memory ----------------------------------------------------------

  /// n uninitialized elements of host memory.
  template <class T>
  buffer<T> allocate(index n) {
    return buffer<T>(n);
  }
  /// dst = src (both host memory for this backend).
  template <class T>
  void copy_from_host(in_matrix<T> src, matrix_view<T> dst) {
    copy_impl("polar::copy_from_host", src, dst);
  }
  /// dst = src (both host memory for this backend).
  template <class T>
  void copy_to_host(in_matrix<T> src, matrix_view<T> dst) {
    copy_impl("polar::copy_to_host", src, dst);
  }
  /// dst = src.
  template <class T>
  void copy(in_matrix<T> src, matrix_view<T> dst) {
    copy_impl("polar::copy", src, dst);
  }
  /// x(i, j) = value.
  template <class T>
  void fill(matrix_view<T> x, T value) {
    check_output("polar::fill", "x", x);
    check_space("polar::fill", "x", x, space);
    detail::host::fill(x, value);
  }
  /// Nothing to wait for: every call returns when its work is done.
  void synchronize() {}

  // ---- level 3 -----------------------------------------------------------

  /// C = alpha op(A) op(B) + beta C (see archetype::gemm).
  template <class T>
  void gemm(T alpha, op op_a, in_matrix<T> a, op op_b, in_matrix<T> b, T beta,
            matrix_view<T> c) {
    detail::check_gemm("polar::gemm", space, op_a, a, op_b, b, c);
    detail::eigen_kernels::gemm(alpha, op_a, a, op_b, b, beta, c);
  }
  /// One triangle of C = alpha op(A) op(A)^T + beta C (see archetype::syrk).
  template <class T>
  void syrk(uplo tri, T alpha, op op_a, in_matrix<T> a, T beta, matrix_view<T> c) {
    detail::check_syrk("polar::syrk", space, op_a, a, c);
    detail::eigen_kernels::syrk(tri, alpha, op_a, a, beta, c);
  }
  /// Copies the `from` triangle of the square C onto the other.
  template <class T>
  void symmetrize(uplo from, matrix_view<T> c) {
    check_output("polar::symmetrize", "C", c);
    check_space("polar::symmetrize", "C", c, space);
    detail::check_square("polar::symmetrize", "C", c);
    detail::eigen_kernels::symmetrize(from, c);
  }
  /// symmetrize on each matrix of the stack (see archetype::symmetrize_batched).
  template <class T>
  void symmetrize_batched(uplo from, batch_view<T> c) {
    detail::check_symmetrize_batched("polar::symmetrize_batched", space, c);
    detail::host::symmetrize_batched(from, c);
  }
  /// gemm on stacks of 16-bit values (see archetype::gemm_batched_lowp):
  /// float products of the widened operands, rounded once.
  template <class H, std::enable_if_t<is_lowp_v<H>, int> = 0>
  void gemm_batched_lowp(float alpha, op op_a, in_batch<H> a, op op_b, in_batch<H> b, float beta,
                         batch_view<H> c) {
    detail::check_gemm_batched("polar::gemm_batched_lowp", space, op_a, a, op_b, b, c);
    detail::host::gemm_batched_lowp(alpha, op_a, a, op_b, b, beta, c);
  }
  /// gemm on each matrix of the stacks. Small products run one per thread;
  /// large ones one after another, each threaded.
  template <class T>
  void gemm_batched(T alpha, op op_a, in_batch<T> a, op op_b, in_batch<T> b,
                    T beta, batch_view<T> c) {
    detail::check_gemm_batched("polar::gemm_batched", space, op_a, a, op_b, b, c);
    const index k = op_a == op::n ? a.cols() : a.rows();
    const index count = c.count();
    // Small products run one per task of polar's pool (each on one
    // thread); large ones one after another, each threaded.
    if (count > 1 && c.rows() * c.cols() * k < (index(1) << 25)) {
      detail::host::parallel_tasks(count, [&](index i) {
        detail::eigen_kernels::gemm(alpha, op_a, a[i], op_b, b[i], beta, c[i]);
      });
    } else {
      for (index i = 0; i < count; ++i)
        detail::eigen_kernels::gemm(alpha, op_a, a[i], op_b, b[i], beta, c[i]);
    }
  }
  /// syrk on each matrix of the stacks.
  template <class T>
  void syrk_batched(uplo tri, T alpha, op op_a, in_batch<T> a, T beta,
                    batch_view<T> c) {
    detail::check_syrk_batched("polar::syrk_batched", space, op_a, a, c);
    const index k = op_a == op::n ? a.cols() : a.rows();
    const index count = c.count();
    if (count > 1 && c.rows() * c.cols() * k < (index(1) << 25)) {  // as gemm_batched
      detail::host::parallel_tasks(count, [&](index i) {
        detail::eigen_kernels::syrk(tri, alpha, op_a, a[i], beta, c[i]);
      });
    } else {
      for (index i = 0; i < count; ++i) detail::eigen_kernels::syrk(tri, alpha, op_a, a[i], beta, c[i]);
    }
  }

  // ---- level 1 and 2 -----------------------------------------------------

  /// x = alpha x.
  template <class T>
  void scale(T alpha, matrix_view<T> x) {
    check_output("polar::scale", "x", x);
    check_space("polar::scale", "x", x, space);
    if (alpha == T(0))
      detail::host::fill(x, T(0));
    else
      detail::host::map([alpha](T v) { return T(alpha * v); }, x, matrix_view<const T>(x));
  }
  /// y = alpha x + beta y; y is not read when beta is 0.
  template <class T>
  void axpby(T alpha, in_matrix<T> x, T beta, matrix_view<T> y) {
    detail::check_unary("polar::axpby", space, "x", x, "y", y);
    if (beta == T(0))
      detail::host::map([alpha](T v) { return T(alpha * v); }, y, x);
    else
      detail::host::map([alpha, beta](T v, T w) { return T(alpha * v + beta * w); }, y, x,
                        matrix_view<const T>(y));
  }
  /// Sum of x(i, j) y(i, j), accumulated in double.
  template <class U, class V, class T = std::remove_const_t<U>>
  T dot(matrix_view<U> x, matrix_view<V> y) {
    static_assert(std::is_same_v<T, std::remove_const_t<V>>, "polar::dot: x and y differ in scalar type");
    detail::check_dot<T>(space, x, y);
    return detail::host::dot<T>(x, y);
  }
  /// Frobenius norm.
  template <class U, class T = std::remove_const_t<U>>
  T norm(matrix_view<U> x) {
    detail::check_reduce<T>("polar::norm", space, x);
    return detail::host::norm<T>(x);
  }
  /// Largest |x(i, j)|.
  template <class U, class T = std::remove_const_t<U>>
  T max_abs(matrix_view<U> x) {
    detail::check_reduce<T>("polar::max_abs", space, x);
    return detail::host::max_abs<T>(x);
  }
  /// Sum of all elements.
  template <class U, class T = std::remove_const_t<U>>
  T sum(matrix_view<U> x) {
    detail::check_reduce<T>("polar::sum", space, x);
    return detail::host::sum<T>(x);
  }
  /// No NaN or infinity in x.
  template <class U, class T = std::remove_const_t<U>>
  bool all_finite(matrix_view<U> x) {
    detail::check_reduce<T>("polar::all_finite", space, x);
    return detail::host::all_finite<T>(x);
  }
  /// *count += NaN and infinite elements of x; *any = 1 when there is one.
  template <class U, class T = std::remove_const_t<U>>
  void count_nonfinite(matrix_view<U> x, check_word* count, check_word* any) {
    detail::check_reduce<T>("polar::count_nonfinite", space, x);
    if (const check_word n = detail::host::count_nonfinite<T>(x)) {
      *count += n;
      *any = 1;
    }
  }
  /// out(i) = norm of row i.
  template <class T>
  void row_norms(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::row_norms", space, x, out, true);
    detail::host::row_norms(x, out);
  }
  /// out(j) = norm of column j.
  template <class T>
  void col_norms(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::col_norms", space, x, out, false);
    detail::host::row_norms(x.transpose(), out);
  }
  /// out(i) = sum of row i.
  template <class T>
  void row_sums(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::row_sums", space, x, out, true);
    detail::host::row_sums(x, out);
  }
  /// out(j) = sum of column j.
  template <class T>
  void col_sums(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::col_sums", space, x, out, false);
    detail::host::row_sums(x.transpose(), out);
  }
  /// x(i, j) *= s(i).
  template <class T>
  void scale_rows(in_vector<T> s, matrix_view<T> x) {
    detail::check_scale_lines("polar::scale_rows", space, s, x, true);
    detail::host::scale_rows(s, x);
  }
  /// x(i, j) *= s(j).
  template <class T>
  void scale_cols(in_vector<T> s, matrix_view<T> x) {
    detail::check_scale_lines("polar::scale_cols", space, s, x, false);
    detail::host::scale_rows(s, x.transpose());
  }
  /// out(i, j) = f(in(i, j)...), one to three inputs.
  template <class F, class T, class... In>
  void map(F f, matrix_view<T> out, matrix_view<In>... in) {
    static_assert(sizeof...(In) >= 1 && sizeof...(In) <= 3,
                  "polar::map takes one to three input views");
    detail::check_map(space, out, as_const(in)...);
    detail::host::map(f, out, as_const(in)...);
  }
  /// f(m(i, j)...) for every element, by reference (see
  /// archetype::for_each_element).
  template <class F, class... V>
  void for_each_element(const F& f, matrix_view<V>... m) {
    detail::check_rows("polar::for_each_element", space, m...);
    detail::host_unguarded(f, [&](const auto& k) { detail::host::for_each_element(k, m...); });
  }
  /// k(row, rows of m...) for each row of the operands (see
  /// archetype::for_each_row and backend/rows.hpp).
  template <class K, class... V>
  row_flags for_each_row(const K& k, matrix_view<V>... m) {
    detail::check_rows("polar::for_each_row", space, m...);
    row_flags f = row_flags::none(detail::rows_of(m...));
    detail::host_unguarded(k, [&](const auto& kk) { f = detail::host::for_each_row<threaded>(kk, m...); });
    return detail::host_defer_flags<K>(f, f.rows, detail::cols_of(m...));
  }
  /// for_each_row with column sums (see archetype::for_each_row).
  template <class K, class A, class... V>
  row_flags for_each_row(const K& k, column_sums<A> cs, matrix_view<V>... m) {
    detail::check_rows("polar::for_each_row", space, m...);
    detail::check_column_sums("polar::for_each_row", space, cs, m...);
    row_flags f = row_flags::none(detail::rows_of(m...));
    detail::host_unguarded(k, [&](const auto& kk) { f = detail::host::for_each_row<threaded>(kk, cs, m...); });
    return detail::host_defer_flags<K>(f, f.rows, detail::cols_of(m...));
  }

  // ---- random ------------------------------------------------------------

  /// x(i, j) = scale z(offset + i cols + j) from the stream of `key`.
  template <class T>
  void fill_random(matrix_view<T> x, const rng_key& key, distribution d, T scale = T(1),
                   std::uint64_t offset = 0) {
    detail::check_fill_random("polar::fill_random", space, x, key, offset);
    detail::host::fill_random(x, key, d, scale, offset);
  }
  /// x(i, j) += scale z(offset + i cols + j), in one rounding: the
  /// perturbation pass of SPSA (the same bits on every backend).
  template <class T>
  void add_random(matrix_view<T> x, const rng_key& key, distribution d, T scale = T(1),
                  std::uint64_t offset = 0) {
    detail::check_fill_random("polar::add_random", space, x, key, offset);
    detail::host::add_random(x, key, d, scale, offset);
  }

  // ---- factorizations ----------------------------------------------------

  /// Thin QR with a non-negative diagonal of R.
  template <class T>
  void qr(in_matrix<T> a, matrix_view<T> q, matrix_view<T> r) {
    detail::check_qr("polar::qr", space, a, q, r);
    detail::eigen_kernels::qr(a, q, r);
  }
  /// Thin SVD, singular values descending.
  template <class T>
  void svd(in_matrix<T> a, matrix_view<T> u, vector_view<T> s, matrix_view<T> v) {
    detail::check_svd("polar::svd", space, a, u, s, v);
    detail::eigen_kernels::svd(a, u, s, v);
  }
  /// B = A^-1 B.
  template <class T>
  void solve(in_matrix<T> a, matrix_view<T> b) {
    detail::check_solve("polar::solve", space, a, b);
    detail::eigen_kernels::solve(a, b);
  }

 private:
  template <class T>
  void copy_impl(const char* opname, matrix_view<const T> src, matrix_view<T> dst) {
    detail::check_unary(opname, space, "src", src, "dst", dst);
    detail::host::map([](T v) { return v; }, dst, src);
  }
};

}  // namespace polar::backend
