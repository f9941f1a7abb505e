// polar/backend/concept.hpp: the operation set every backend provides.
//
// Algorithms (estimators, directions, orthogonalizers, geometries, gains) are
// written once against these operations and never against a concrete
// backend. A backend is an object that owns what its device needs (a cuBLAS
// handle, a stream, scratch memory) and exposes the operations below as
// member function templates over the scalar type T (float and double; the
// elementwise operations also take the 16-bit types).
//
// Conventions shared by every operation:
//   - operands are views (core/view.hpp); inputs are read-only views
//     (in_matrix<T>, or matrix_view<U> with U = T or const T for the
//     reductions), outputs matrix_view<T>; all must live in the backend's memory space
//     (Backend::space) or the call throws memory_space_error;
//   - any strides are accepted (row-major, column-major, padded, general);
//   - shapes, strides, null pointers and aliasing are checked before anything
//     is written (core/check.hpp), so a throwing call changes nothing;
//   - an output may be the very same view as an elementwise input (in-place
//     update) but must not otherwise share memory with an input.
//
// polar::backend::archetype below is the concept written out: a backend that
// compiles against every member of it is a backend. Its bodies do nothing;
// copy it to start a new backend. polar::is_backend_v checks the essential
// members at compile time so algorithms can reject a wrong type with a
// sentence instead of a page of template errors.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "polar/backend/rows.hpp"
#include "polar/core/detail/deferred_record.hpp"
#include "polar/core/random.hpp"
#include "polar/core/lowp.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// A read-only matrix operand whose scalar type is deduced from the other
/// arguments, so a matrix_view<T> converts to it implicitly.
template <class T>
using in_matrix = typename std::enable_if<true, matrix_view<const T>>::type;
/// A read-only vector operand, as in_matrix.
template <class T>
using in_vector = typename std::enable_if<true, vector_view<const T>>::type;
/// A read-only stack operand, as in_matrix.
template <class T>
using in_batch = typename std::enable_if<true, batch_view<const T>>::type;

/// Whether a product operand is used as stored or transposed.
enum class op : unsigned char {
  n,  ///< as stored
  t,  ///< transposed
};

/// Which triangle of a symmetric result is computed.
enum class uplo : unsigned char {
  lower,  ///< i >= j
  upper,  ///< i <= j
};

namespace backend {

// The archetype's parameter names document the concept; its bodies use none.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif

/// The backend concept, written out. Every member is required.
class archetype {
 public:
  /// Where the backend's operands live.
  static constexpr memory_space space = memory_space::host;
  /// Optional (true where absent): whether polar's own host loops, such as
  /// the fused row-sphere steps, may use several OpenMP threads.
  static constexpr bool threaded = true;

  /// An owning, uninitialized allocation of `size()` elements in `space`:
  /// default-constructible, movable, with `T* data()` and `index size()`.
  template <class T>
  struct buffer {
    /// The first element.
    T* data() const { return nullptr; }
    /// The number of elements.
    index size() const { return 0; }
  };

  /// A short name for messages and benchmark labels ("eigen", "thrust<omp>").
  static const char* name() { return "archetype"; }

  // ---- memory ----------------------------------------------------------

  /// Allocates n elements in `space`, uninitialized.
  template <class T>
  buffer<T> allocate(index n) { return {}; }
  /// Copies src (host memory) into dst (backend memory); shapes equal.
  template <class T>
  void copy_from_host(in_matrix<T> src, matrix_view<T> dst) {}
  /// Copies src (backend memory) into dst (host memory); shapes equal.
  template <class T>
  void copy_to_host(in_matrix<T> src, matrix_view<T> dst) {}
  /// dst = src, both in backend memory.
  template <class T>
  void copy(in_matrix<T> src, matrix_view<T> dst) {}
  /// Every element of x set to value.
  template <class T>
  void fill(matrix_view<T> x, T value) {}
  /// Waits until all queued work is done (a no-op on synchronous backends).
  void synchronize() {}

  // ---- level 3 -----------------------------------------------------------

  /// C = alpha op(A) op(B) + beta C. When beta is 0, C is not read (NaN in
  /// C does not propagate). C must not share memory with A or B.
  template <class T>
  void gemm(T alpha, op op_a, in_matrix<T> a, op op_b, in_matrix<T> b, T beta,
            matrix_view<T> c) {}
  /// Symmetric rank-k update of one triangle: C = alpha op(A) op(A)^T + beta C
  /// on the `tri` triangle of the square C (diagonal included); the other
  /// triangle is neither read nor written. About half the flops of gemm.
  template <class T>
  void syrk(uplo tri, T alpha, op op_a, in_matrix<T> a, T beta, matrix_view<T> c) {}
  /// Copies the `from` triangle of the square C onto the other one.
  template <class T>
  void symmetrize(uplo from, matrix_view<T> c) {}
  /// symmetrize on each matrix of a stack, T also bfloat16 or float16.
  /// Optional: without it polar calls symmetrize once per matrix (and the
  /// 16-bit symmetric products need it).
  template <class T>
  void symmetrize_batched(uplo from, batch_view<T> c) {}
  /// gemm on each matrix of three stacks of equal count.
  template <class T>
  void gemm_batched(T alpha, op op_a, in_batch<T> a, op op_b, in_batch<T> b,
                    T beta, batch_view<T> c) {}
  /// C = alpha op(A) op(B) + beta C on each matrix of stacks of 16-bit
  /// values (H: bfloat16 or float16, polar/core/lowp.hpp): the products
  /// accumulate in float and the result is rounded once to H, as tensor
  /// cores compute them. Optional: Newton–Schulz iterates in 16 bits only
  /// on a backend that has it.
  template <class H>
  void gemm_batched_lowp(float alpha, op op_a, in_batch<H> a, op op_b, in_batch<H> b, float beta,
                         batch_view<H> c) {}
  /// syrk on each matrix of two stacks of equal count.
  template <class T>
  void syrk_batched(uplo tri, T alpha, op op_a, in_batch<T> a, T beta,
                    batch_view<T> c) {}

  // ---- level 1 and 2 -----------------------------------------------------

  /// x = alpha x.
  template <class T>
  void scale(T alpha, matrix_view<T> x) {}
  /// y = alpha x + beta y (when beta is 0, y is not read).
  template <class T>
  void axpby(T alpha, in_matrix<T> x, T beta, matrix_view<T> y) {}
  /// Sum over i, j of x(i, j) y(i, j).
  template <class U, class V, class T = std::remove_const_t<U>>
  T dot(matrix_view<U> x, matrix_view<V> y) { return T(0); }
  /// Frobenius norm, computed without overflow for large entries.
  template <class U, class T = std::remove_const_t<U>>
  T norm(matrix_view<U> x) { return T(0); }
  /// Largest |x(i, j)| (0 for an empty x; NaN if x holds a NaN).
  template <class U, class T = std::remove_const_t<U>>
  T max_abs(matrix_view<U> x) { return T(0); }
  /// Sum of all elements.
  template <class U, class T = std::remove_const_t<U>>
  T sum(matrix_view<U> x) { return T(0); }
  /// True when no element is NaN or infinite.
  template <class U, class T = std::remove_const_t<U>>
  bool all_finite(matrix_view<U> x) { return true; }
  /// *count += the number of NaN and infinite elements of x, and *any = 1
  /// when there is one; count and any point to backend memory. The check of
  /// a step in a deferred_checks scope (polar/deferred.hpp): on a device it
  /// is queued like any kernel and the host does not wait for it.
  /// Optional: without it a deferred check reads its answer back.
  template <class U>
  void count_nonfinite(matrix_view<U> x, check_word* count, check_word* any) {}
  /// out(i) = Euclidean norm of row i.
  template <class T>
  void row_norms(in_matrix<T> x, vector_view<T> out) {}
  /// out(j) = Euclidean norm of column j.
  template <class T>
  void col_norms(in_matrix<T> x, vector_view<T> out) {}
  /// out(i) = sum of row i.
  template <class T>
  void row_sums(in_matrix<T> x, vector_view<T> out) {}
  /// out(j) = sum of column j.
  template <class T>
  void col_sums(in_matrix<T> x, vector_view<T> out) {}
  /// x(i, j) *= s(i).
  template <class T>
  void scale_rows(in_vector<T> s, matrix_view<T> x) {}
  /// x(i, j) *= s(j).
  template <class T>
  void scale_cols(in_vector<T> s, matrix_view<T> x) {}
  /// out(i, j) = f(a(i, j), ...) for one to three inputs of out's shape.
  /// f is a functor callable on the device (POLAR_HOST_DEVICE) for device
  /// backends; out may be the same view as one of the inputs.
  template <class F, class T, class... In>
  void map(F f, matrix_view<T> out, matrix_view<In>... in) {}

  /// f(m(i, j)...) for every element (i, j) of the operands m (one to eight
  /// views of one shape), f taking each operand's element by reference
  /// (writable for a view of non-const elements): an elementwise step that
  /// writes several outputs in one pass (AdamW's weight and both moments).
  /// f is a functor callable on the device for device backends; operands
  /// follow for_each_row's rules (the same view twice, or disjoint ones).
  template <class F, class... V>
  void for_each_element(const F& f, matrix_view<V>... m) {}
  /// k(row, r...) once for each row of the operands m (one to eight views
  /// of one shape; those of non-const elements may be written): row is the
  /// backend's row context and r the operands' rows, so that a one-pass step
  /// that reduces and writes each row is one functor on every backend
  /// (backend/rows.hpp says what the kernel may do). Returns the first row
  /// that the kernel flagged under each code.
  template <class K, class... V>
  row_flags for_each_row(const K& k, matrix_view<V>... m) { return row_flags::none(0); }
  /// for_each_row with column sums: the kernel adds to row.column(k, j),
  /// and cs.out(k, j) receives the sum over the rows, taken in a fixed
  /// order so that the bits do not change from run to run (backend/rows.hpp).
  template <class K, class A, class... V>
  row_flags for_each_row(const K& k, column_sums<A> cs, matrix_view<V>... m) { return row_flags::none(0); }

  // ---- random ------------------------------------------------------------

  /// x(i, j) = scale z(offset + i cols + j), with z the stream of `key`
  /// (core/random.hpp): the same key, offset and shape give the same bits on
  /// every backend, whatever x's layout.
  template <class T>
  void fill_random(matrix_view<T> x, const rng_key& key, distribution d, T scale = T(1),
                   std::uint64_t offset = 0) {}
  /// x(i, j) += scale z(offset + i cols + j) with one rounding (an explicit
  /// fused multiply-add: detail::add_scaled). Optional: the SPSA estimator
  /// needs it, the rest of polar does not.
  template <class T>
  void add_random(matrix_view<T> x, const rng_key& key, distribution d, T scale = T(1),
                  std::uint64_t offset = 0) {}

  // ---- factorizations ----------------------------------------------------

  /// Thin QR of the m x n A, m >= n: Q (m x n) has orthonormal columns and
  /// R (n x n) is upper triangular with a non-negative diagonal, which makes
  /// the factorization unique for full-rank A.
  template <class T>
  void qr(in_matrix<T> a, matrix_view<T> q, matrix_view<T> r) {}
  /// Thin SVD of the m x n A: A = U diag(S) V^T with k = min(m, n), U m x k,
  /// S (k, descending, non-negative), V n x k.
  template <class T>
  void svd(in_matrix<T> a, matrix_view<T> u, vector_view<T> s, matrix_view<T> v) {}
  /// B = A^-1 B for the square A (LU with partial pivoting). Throws
  /// numerical_error when A is singular to working precision.
  template <class T>
  void solve(in_matrix<T> a, matrix_view<T> b) {}
};

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace backend

namespace detail {
template <class B, class = void>
struct has_backend_members : std::false_type {};
template <class B>
struct has_backend_members<
    B, std::void_t<decltype(B::space), decltype(B::name()),
                   typename B::template buffer<float>,
                   decltype(std::declval<B&>().gemm(
                       1.0f, op::n, matrix_view<const float>{}, op::n,
                       matrix_view<const float>{}, 0.0f, matrix_view<float>{})),
                   decltype(std::declval<B&>().syrk(uplo::lower, 1.0f, op::n,
                                                    matrix_view<const float>{}, 0.0f,
                                                    matrix_view<float>{})),
                   decltype(std::declval<B&>().axpby(1.0f, matrix_view<const float>{}, 1.0f,
                                                     matrix_view<float>{})),
                   decltype(std::declval<B&>().norm(matrix_view<const float>{})),
                   decltype(std::declval<B&>().fill_random(matrix_view<float>{}, rng_key{},
                                                           distribution::normal)),
                   decltype(std::declval<B&>().qr(matrix_view<const float>{},
                                                  matrix_view<float>{},
                                                  matrix_view<float>{}))>> : std::true_type {};
}  // namespace detail

/// True when B provides the backend operation set (checked on its essential
/// members for float).
template <class B>
inline constexpr bool is_backend_v = detail::has_backend_members<std::remove_cv_t<B>>::value;

/// For algorithms: `static_assert(polar::is_backend_v<B>, POLAR_BACKEND_CONCEPT_MESSAGE)`.
#define POLAR_BACKEND_CONCEPT_MESSAGE                                                \
  "polar: this type is not a backend. A backend provides the operation set of "     \
  "polar::backend::archetype (polar/backend/concept.hpp): space, buffer<T>, gemm, " \
  "syrk, axpby, norm, fill_random, qr and the rest."

}  // namespace polar
