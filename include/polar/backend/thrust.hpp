// polar/backend/thrust.hpp: the Thrust backend, one class template over
// Thrust's systems.
//
//   polar::backend::thrust<polar::system::cuda>  device memory; Thrust and CUB
//       on the GPU, cuBLAS and cuSOLVER for products and factorizations
//       (compiled by nvcc only);
//   polar::backend::thrust<polar::system::omp>   host memory; the same
//       Thrust code threaded: each elementwise call or reduction cut into
//       parts that polar's pool runs with Thrust's serial system (not
//       Thrust's OpenMP regions, whose barriers spin: see
//       detail/thrust_algorithms.hpp), Eigen for products and factorizations
//       (needs -fopenmp; polar::use_openmp_threads puts it all on OpenMP's
//       threads);
//   polar::backend::thrust<polar::system::cpp>   host memory; Thrust's serial
//       system, Eigen for products.
//
// The elementwise operations, reductions and random fills are written once
// over a Thrust execution policy (backend/detail/thrust_algorithms.hpp), so
// the host systems run the very code the GPU runs, and every Thrust code path
// is tested on machines without a GPU. Random fills are bit-identical to the
// Eigen backend's for the same key on every system.
//
// Link the CMake target polar::thrust, which finds CCCL and sets
// THRUST_DEVICE_SYSTEM from the cache option POLAR_THRUST_DEVICE_SYSTEM
// (CUDA, OMP or CPP); polar::backend::thrust_device is the backend of that
// system.
#pragma once

#include <thrust/system/cpp/execution_policy.h>
#include <thrust/system/cpp/vector.h>
#if defined(_OPENMP)
#include <thrust/system/omp/execution_policy.h>
#include <thrust/system/omp/vector.h>
#endif
#include <thrust/device_vector.h>
#include <thrust/host_vector.h>

#include <cstdint>
#include <type_traits>

#include "polar/backend/concept.hpp"
#include "polar/backend/detail/checks.hpp"
#include "polar/backend/detail/eigen_kernels.hpp"
#include "polar/backend/detail/host_buffer.hpp"
#include "polar/backend/detail/host_lowp.hpp"
#include "polar/backend/detail/host_rows.hpp"
#include "polar/backend/detail/thrust_algorithms.hpp"
#include "polar/core/tensor_traits.hpp"

#if POLAR_CUDA_COMPILER
#include "polar/backend/detail/cuda_kernels.hpp"
#endif

namespace polar {

/// Thrust systems a polar::backend::thrust can run on.
namespace system {
/// Thrust's serial host system.
struct cpp {};
/// Thrust's OpenMP host system (the translation unit needs -fopenmp).
struct omp {};
/// Thrust's CUDA system (the translation unit must be compiled by nvcc).
struct cuda {};
}  // namespace system

namespace detail {

/// Products, factorizations and transfers of the Thrust host systems: Eigen
/// over the same host memory. The CUDA system's counterpart is
/// detail::cuda::kernels (cuBLAS, cuSOLVER, CUB).
struct thrust_host_kernels {
  template <class R, class T>
  static void copy_from_host(R& r, matrix_view<const T> src, matrix_view<T> dst) {
    check_inplace_or_disjoint("polar::copy_from_host", "dst", dst, "src", src);
    thrust_alg::map(r.policy(), thrust_alg::identity_fn{}, dst, src);
  }
  template <class R, class T>
  static void copy_to_host(R& r, matrix_view<const T> src, matrix_view<T> dst) {
    check_inplace_or_disjoint("polar::copy_to_host", "dst", dst, "src", src);
    thrust_alg::map(r.policy(), thrust_alg::identity_fn{}, dst, src);
  }
  // The products run on polar's pool (core/threads.hpp), on both systems.
  template <class R, class T>
  static void gemm(R&, T alpha, op op_a, matrix_view<const T> a, op op_b, matrix_view<const T> b,
                   T beta, matrix_view<T> c) {
    eigen_kernels::gemm(alpha, op_a, a, op_b, b, beta, c);
  }
  template <class R, class T>
  static void syrk(R&, uplo tri, T alpha, op op_a, matrix_view<const T> a, T beta, matrix_view<T> c) {
    eigen_kernels::syrk(tri, alpha, op_a, a, beta, c);
  }
  template <class R, class T>
  static void syrk_batched(R&, uplo tri, T alpha, op op_a, batch_view<const T> a, T beta, batch_view<T> c) {
    for (index i = 0; i < c.count(); ++i) eigen_kernels::syrk(tri, alpha, op_a, a[i], beta, c[i]);
  }
  template <class R, class T>
  static void gemm_batched(R&, T alpha, op op_a, batch_view<const T> a, op op_b,
                           batch_view<const T> b, T beta, batch_view<T> c) {
    for (index i = 0; i < c.count(); ++i) eigen_kernels::gemm(alpha, op_a, a[i], op_b, b[i], beta, c[i]);
  }
  template <class R, class T>
  static void qr(R&, matrix_view<const T> a, matrix_view<T> q, matrix_view<T> r) {
    eigen_kernels::qr(a, q, r);
  }
  template <class R, class T>
  static void svd(R&, matrix_view<const T> a, matrix_view<T> u, vector_view<T> s, matrix_view<T> v) {
    eigen_kernels::svd(a, u, s, v);
  }
  template <class R, class T>
  static void solve(R&, matrix_view<const T> a, matrix_view<T> b) {
    eigen_kernels::solve(a, b);
  }
  template <class R, class H>
  static void gemm_batched_lowp(R&, float alpha, op op_a, batch_view<const H> a, op op_b, batch_view<const H> b,
                                float beta, batch_view<H> c) {
    host::gemm_batched_lowp(alpha, op_a, a, op_b, b, beta, c);
  }
  template <bool Threaded, class R, class K, class... V>
  static row_flags for_each_row(R&, const K& k, const matrix_view<V>&... m) {
    row_flags f = row_flags::none(rows_of(m...));
    host_unguarded(k, [&](const auto& kk) { f = host::for_each_row<Threaded>(kk, m...); });
    return host_defer_flags<K>(f, f.rows, cols_of(m...));
  }
  template <bool Threaded, class R, class K, class A, class... V>
  static row_flags for_each_row(R&, const K& k, const column_sums<A>& cs, const matrix_view<V>&... m) {
    row_flags f = row_flags::none(rows_of(m...));
    host_unguarded(k, [&](const auto& kk) { f = host::for_each_row<Threaded>(kk, cs, m...); });
    return host_defer_flags<K>(f, f.rows, cols_of(m...));
  }
  template <class R, class T>
  static void count_nonfinite(R& r, matrix_view<const T> x, check_word* count, check_word* any) {
    if (thrust_alg::all_finite<true>(r.policy(), x)) return;
    if (const check_word n = count_nonfinite_serial(x)) {
      *count += n;
      *any = 1;
    }
  }
  template <class R, class T>
  static void reduce_rows(R& r, matrix_view<const T> x, vector_view<T> out, bool norm) {
    thrust_alg::reduce_rows(r.policy(), x, out, norm);
  }
};

template <class System>
struct thrust_system;

template <>
struct thrust_system<system::cpp> {
  static constexpr memory_space space = memory_space::host;
  static constexpr bool threaded = false;
  static const char* name() { return "thrust<cpp>"; }
  template <class T>
  using buffer = host_buffer<T>;
  using kernels = thrust_host_kernels;
  struct resources {
    auto policy() const { return ::thrust::cpp::par; }
    void synchronize() {}
  };
};

#if defined(_OPENMP)
template <>
struct thrust_system<system::omp> {
  static constexpr memory_space space = memory_space::host;
  static constexpr bool threaded = true;
  static const char* name() { return "thrust<omp>"; }
  template <class T>
  using buffer = host_buffer<T>;
  using kernels = thrust_host_kernels;
  struct resources {
    auto policy() const { return ::thrust::omp::par; }
    void synchronize() {}
  };
};
#endif

#if POLAR_CUDA_COMPILER
template <>
struct thrust_system<system::cuda> {
  static constexpr memory_space space = memory_space::device;
  static constexpr bool threaded = true;
  static const char* name() { return "thrust<cuda>"; }
  template <class T>
  using buffer = cuda::device_buffer<T>;
  using resources = cuda::context;
  using kernels = cuda::kernels;
};
#endif

template <class System, class = void>
struct thrust_system_available : std::false_type {};
template <class System>
struct thrust_system_available<System, std::void_t<decltype(thrust_system<System>::space)>>
    : std::true_type {};

}  // namespace detail

namespace backend {

/// The Thrust backend on `System` (polar::system::cpp, omp or cuda).
///
/// On the host systems the object is stateless. On CUDA it owns a stream, a
/// cuBLAS and a cuSOLVER handle and a scratch arena that grows to the largest
/// request and is then reused, so repeated steps allocate nothing; it is
/// movable, not copyable, and not for concurrent use from several threads.
template <class System>
class thrust : private detail::thrust_system<System>::resources {
  static_assert(detail::thrust_system_available<System>::value,
                "polar::backend::thrust<System>: this system is not available in this translation "
                "unit: system::omp needs OpenMP (-fopenmp), system::cuda needs nvcc");
  using sys = detail::thrust_system<System>;
  using res = typename sys::resources;
  using kernels = typename sys::kernels;
  // Reductions: chunked with several accumulators on the host systems (so
  // they vectorize), one element per index on the GPU (so reads coalesce).
  static constexpr bool chunked = sys::space == memory_space::host;

 public:
  /// Where operands live: host for cpp and omp, device for cuda.
  static constexpr memory_space space = sys::space;
  /// Whether polar's own loops for this backend may use several threads:
  /// false for the serial cpp system.
  static constexpr bool threaded = sys::threaded;
  /// Owning allocation in `space`.
  template <class T>
  using buffer = typename sys::template buffer<T>;

  /// "thrust<cpp>", "thrust<omp>" or "thrust<cuda>".
  static const char* name() { return sys::name(); }

  thrust() = default;
#if POLAR_CUDA_COMPILER
  /// A CUDA backend whose work queues on the caller's stream instead of a
  /// stream of its own (the CUDA system only): its steps then run in order
  /// with the caller's kernels on that stream. The stream is not owned and
  /// must outlive the backend.
  template <class S = System, class = std::enable_if_t<std::is_same_v<S, system::cuda>>>
  explicit thrust(cudaStream_t stream) : res(stream) {}
#endif

  // ---- memory ----------------------------------------------------------

  /// n elements of backend memory, uninitialized.
  template <class T>
  buffer<T> allocate(index n) {
    return buffer<T>(n);
  }
  /// dst (backend memory) = src (host memory).
  template <class T>
  void copy_from_host(in_matrix<T> src, matrix_view<T> dst) {
    constexpr const char* op = "polar::copy_from_host";
    check_input(op, "src", src);
    check_output(op, "dst", dst);
    check_space(op, "src", src, memory_space::host);
    check_space(op, "dst", dst, space);
    check_same_shape(op, "dst", dst, "src", src);
    kernels::copy_from_host(context(), src, dst);
  }
  /// dst (host memory) = src (backend memory).
  template <class T>
  void copy_to_host(in_matrix<T> src, matrix_view<T> dst) {
    constexpr const char* op = "polar::copy_to_host";
    check_input(op, "src", src);
    check_output(op, "dst", dst);
    check_space(op, "src", src, space);
    check_space(op, "dst", dst, memory_space::host);
    check_same_shape(op, "dst", dst, "src", src);
    kernels::copy_to_host(context(), src, dst);
  }
  /// dst = src.
  template <class T>
  void copy(in_matrix<T> src, matrix_view<T> dst) {
    detail::check_unary("polar::copy", space, "src", src, "dst", dst);
    detail::thrust_alg::map(policy(), detail::thrust_alg::identity_fn{}, dst, src);
  }
  /// x(i, j) = value.
  template <class T>
  void fill(matrix_view<T> x, T value) {
    check_output("polar::fill", "x", x);
    check_space("polar::fill", "x", x, space);
    detail::thrust_alg::map(policy(), detail::thrust_alg::constant_fn<T>{value}, x,
                            matrix_view<const T>(x));
  }
  /// Waits for queued device work (a no-op on the host systems).
  void synchronize() { res::synchronize(); }
  /// The CUDA stream the backend's work is queued on (the CUDA system
  /// only): give it to polar::dist::nccl_communicator, so that collectives
  /// queue behind the kernels that fill their buffers.
  template <class S = System, class = std::enable_if_t<std::is_same_v<S, system::cuda>>>
  auto stream() const noexcept {
    return res::stream();
  }

  /// Whether float products may run on tensor cores in TF32 (the CUDA
  /// system only; off by default): cuBLAS then rounds the operands of float
  /// GEMMs to TF32 (10 bits of mantissa) and accumulates in float, several
  /// times faster on Ampere and Hopper. Double products are unaffected.
  /// docs/backends.md says what it does to Newton-Schulz.
  template <class S = System, class = std::enable_if_t<std::is_same_v<S, system::cuda>>>
  void allow_tf32(bool on) {
    res::set_tf32(on);
  }
  /// Whether allow_tf32 is on (the CUDA system only).
  template <class S = System, class = std::enable_if_t<std::is_same_v<S, system::cuda>>>
  bool tf32() const noexcept {
    return res::tf32();
  }

  // ---- level 3 -----------------------------------------------------------

  /// C = alpha op(A) op(B) + beta C (cuBLAS on the device; see archetype::gemm).
  template <class T>
  void gemm(T alpha, op op_a, in_matrix<T> a, op op_b, in_matrix<T> b, T beta, matrix_view<T> c) {
    detail::check_gemm("polar::gemm", space, op_a, a, op_b, b, c);
    kernels::gemm(context(), alpha, op_a, a, op_b, b, beta, c);
  }
  /// One triangle of C = alpha op(A) op(A)^T + beta C (see archetype::syrk).
  template <class T>
  void syrk(uplo tri, T alpha, op op_a, in_matrix<T> a, T beta, matrix_view<T> c) {
    detail::check_syrk("polar::syrk", space, op_a, a, c);
    kernels::syrk(context(), tri, alpha, op_a, a, beta, c);
  }
  /// Copies the triangle `from` of the square C onto the other one.
  template <class T>
  void symmetrize(uplo from, matrix_view<T> c) {
    check_output("polar::symmetrize", "C", c);
    check_space("polar::symmetrize", "C", c, space);
    detail::check_square("polar::symmetrize", "C", c);
    if (c.empty()) return;
    if constexpr (space == memory_space::host) {
      // In tiles on the pool, as the products run (eigen_kernels).
      detail::eigen_kernels::symmetrize(from, c);
    } else {
      detail::thrust_alg::for_each_index(policy(), c.size(), c.size(),
                                         detail::thrust_alg::mirror<T>{c, from == uplo::lower});
    }
  }
  /// symmetrize on each matrix of the stack, in one pass over the whole
  /// stack (one kernel on CUDA); T may be 16 bits.
  template <class T>
  void symmetrize_batched(uplo from, batch_view<T> c) {
    detail::check_symmetrize_batched("polar::symmetrize_batched", space, c);
    if (c.size() == 0) return;
    if constexpr (space == memory_space::host)
      detail::host::symmetrize_batched(from, c);
    else
      detail::thrust_alg::for_each_index(policy(), c.size(), c.size(),
                                         detail::thrust_alg::mirror_batched<T>{c, from == uplo::lower});
  }
  /// gemm on each matrix of the stacks (batched cuBLAS calls on the device).
  template <class T>
  void gemm_batched(T alpha, op op_a, in_batch<T> a, op op_b, in_batch<T> b, T beta,
                    batch_view<T> c) {
    detail::check_gemm_batched("polar::gemm_batched", space, op_a, a, op_b, b, c);
    kernels::gemm_batched(context(), alpha, op_a, a, op_b, b, beta, c);
  }
  /// gemm on stacks of 16-bit values (see archetype::gemm_batched_lowp):
  /// one strided-batched cublasGemmEx call on the device, float products
  /// of the widened operands on the host.
  template <class H, std::enable_if_t<is_lowp_v<H>, int> = 0>
  void gemm_batched_lowp(float alpha, op op_a, in_batch<H> a, op op_b, in_batch<H> b, float beta,
                         batch_view<H> c) {
    detail::check_gemm_batched("polar::gemm_batched_lowp", space, op_a, a, op_b, b, c);
    kernels::gemm_batched_lowp(context(), alpha, op_a, a, op_b, b, beta, c);
  }
  /// syrk on each matrix of the stacks.
  template <class T>
  void syrk_batched(uplo tri, T alpha, op op_a, in_batch<T> a, T beta, batch_view<T> c) {
    detail::check_syrk_batched("polar::syrk_batched", space, op_a, a, c);
    kernels::syrk_batched(context(), tri, alpha, op_a, a, beta, c);
  }

  // ---- level 1 and 2 -----------------------------------------------------

  /// x = alpha x.
  template <class T>
  void scale(T alpha, matrix_view<T> x) {
    check_output("polar::scale", "x", x);
    check_space("polar::scale", "x", x, space);
    if (alpha == T(0))
      detail::thrust_alg::map(policy(), detail::thrust_alg::constant_fn<T>{T(0)}, x, matrix_view<const T>(x));
    else
      detail::thrust_alg::map(policy(), detail::thrust_alg::scale_fn<T>{alpha}, x, matrix_view<const T>(x));
  }
  /// y = alpha x + beta y.
  template <class T>
  void axpby(T alpha, in_matrix<T> x, T beta, matrix_view<T> y) {
    detail::check_unary("polar::axpby", space, "x", x, "y", y);
    if (beta == T(0))
      detail::thrust_alg::map(policy(), detail::thrust_alg::scale_fn<T>{alpha}, y, x);
    else
      detail::thrust_alg::map(policy(), detail::thrust_alg::axpby_fn<T>{alpha, beta}, y, x,
                              matrix_view<const T>(y));
  }
  /// Sum of x(i, j) y(i, j), accumulated in double.
  template <class U, class V, class T = std::remove_const_t<U>>
  T dot(matrix_view<U> x, matrix_view<V> y) {
    static_assert(std::is_same_v<T, std::remove_const_t<V>>, "polar::dot: x and y differ in scalar type");
    detail::check_dot<T>(space, x, y);
    return T(detail::thrust_alg::sum_of<chunked>(policy(), matrix_view<const T>(x), matrix_view<const T>(y),
                                        detail::thrust_alg::product_term{}));
  }
  /// Frobenius norm.
  template <class U, class T = std::remove_const_t<U>>
  T norm(matrix_view<U> x) {
    detail::check_reduce<T>("polar::norm", space, x);
    return detail::thrust_alg::norm<chunked>(policy(), matrix_view<const T>(x));
  }
  /// Largest absolute value.
  template <class U, class T = std::remove_const_t<U>>
  T max_abs(matrix_view<U> x) {
    detail::check_reduce<T>("polar::max_abs", space, x);
    return detail::thrust_alg::max_abs(policy(), matrix_view<const T>(x));
  }
  /// Sum of all elements.
  template <class U, class T = std::remove_const_t<U>>
  T sum(matrix_view<U> x) {
    detail::check_reduce<T>("polar::sum", space, x);
    const matrix_view<const T> cx = x;
    return T(detail::thrust_alg::sum_of<chunked>(policy(), cx, cx, detail::thrust_alg::value_term{}));
  }
  /// Whether no element is NaN or infinite.
  template <class U, class T = std::remove_const_t<U>>
  bool all_finite(matrix_view<U> x) {
    detail::check_reduce<T>("polar::all_finite", space, x);
    const matrix_view<const T> cx = x;
    return detail::thrust_alg::all_finite<chunked>(policy(), cx);
  }
  /// *count += NaN and infinite elements of x; *any = 1 when there is one
  /// (on CUDA one kernel on the backend's stream: the host does not wait).
  template <class U, class T = std::remove_const_t<U>>
  void count_nonfinite(matrix_view<U> x, check_word* count, check_word* any) {
    detail::check_reduce<T>("polar::count_nonfinite", space, x);
    kernels::count_nonfinite(context(), matrix_view<const T>(x), count, any);
  }
  /// out(i) = norm of row i.
  template <class T>
  void row_norms(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::row_norms", space, x, out, true);
    lines(x, out, true);
  }
  /// out(j) = norm of column j.
  template <class T>
  void col_norms(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::col_norms", space, x, out, false);
    lines(x.transpose(), out, true);
  }
  /// out(i) = sum of row i.
  template <class T>
  void row_sums(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::row_sums", space, x, out, true);
    lines(x, out, false);
  }
  /// out(j) = sum of column j.
  template <class T>
  void col_sums(in_matrix<T> x, vector_view<T> out) {
    detail::check_reduce_lines("polar::col_sums", space, x, out, false);
    lines(x.transpose(), out, false);
  }
  /// x(i, j) = s(i) x(i, j).
  template <class T>
  void scale_rows(in_vector<T> s, matrix_view<T> x) {
    detail::check_scale_lines("polar::scale_rows", space, s, x, true);
    detail::thrust_alg::scale_rows(policy(), s, x);
  }
  /// x(i, j) = s(j) x(i, j).
  template <class T>
  void scale_cols(in_vector<T> s, matrix_view<T> x) {
    detail::check_scale_lines("polar::scale_cols", space, s, x, false);
    detail::thrust_alg::scale_rows(policy(), s, x.transpose());
  }
  /// out(i, j) = f(in...(i, j)), f a functor callable on host and device.
  template <class F, class T, class... In>
  void map(F f, matrix_view<T> out, matrix_view<In>... in) {
    static_assert(sizeof...(In) >= 1 && sizeof...(In) <= 3, "polar::map takes one to three input views");
    detail::check_map(space, out, as_const(in)...);
    detail::thrust_alg::map(policy(), f, out, as_const(in)...);
  }
  /// f(m(i, j)...) for every element, by reference (see
  /// archetype::for_each_element): a Thrust for_each on every system.
  template <class F, class... V>
  void for_each_element(const F& f, matrix_view<V>... m) {
    detail::check_rows("polar::for_each_element", space, m...);
    if constexpr (space == memory_space::host)
      detail::host_unguarded(f, [&](const auto& k) { detail::thrust_alg::for_each_element(policy(), k, m...); });
    else
      detail::thrust_alg::for_each_element(policy(), f, m...);  // each thread reads the guard
  }
  /// k(row, rows of m...) for each row of the operands (see
  /// archetype::for_each_row and backend/rows.hpp): one kernel launch on
  /// CUDA, polar's host loops on the host systems.
  template <class K, class... V>
  row_flags for_each_row(const K& k, matrix_view<V>... m) {
    detail::check_rows("polar::for_each_row", space, m...);
    return kernels::template for_each_row<threaded>(context(), k, m...);
  }
  /// for_each_row with column sums (see archetype::for_each_row): on CUDA a
  /// second, small launch adds the blocks' column sums.
  template <class K, class A, class... V>
  row_flags for_each_row(const K& k, column_sums<A> cs, matrix_view<V>... m) {
    detail::check_rows("polar::for_each_row", space, m...);
    detail::check_column_sums("polar::for_each_row", space, cs, m...);
    return kernels::template for_each_row<threaded>(context(), k, cs, m...);
  }

  // ---- random ------------------------------------------------------------

  /// x(i, j) = scale z(offset + i cols + j) from the stream of `key`.
  template <class T>
  void fill_random(matrix_view<T> x, const rng_key& key, distribution d, T scale = T(1),
                   std::uint64_t offset = 0) {
    detail::check_fill_random("polar::fill_random", space, x, key, offset);
    detail::thrust_alg::fill_random(policy(), x, key, d, scale, offset);
  }
  /// x(i, j) += scale z(offset + i cols + j), in one rounding: the
  /// perturbation pass of SPSA (the same bits on every backend).
  template <class T>
  void add_random(matrix_view<T> x, const rng_key& key, distribution d, T scale = T(1),
                  std::uint64_t offset = 0) {
    detail::check_fill_random("polar::add_random", space, x, key, offset);
    detail::thrust_alg::add_random(policy(), x, key, d, scale, offset);
  }

  // ---- factorizations ----------------------------------------------------

  /// Thin QR with a non-negative diagonal of R (cuSOLVER on the device).
  template <class T>
  void qr(in_matrix<T> a, matrix_view<T> q, matrix_view<T> r) {
    detail::check_qr("polar::qr", space, a, q, r);
    kernels::qr(context(), a, q, r);
  }
  /// Thin SVD, singular values descending (cuSOLVER on the device).
  template <class T>
  void svd(in_matrix<T> a, matrix_view<T> u, vector_view<T> s, matrix_view<T> v) {
    detail::check_svd("polar::svd", space, a, u, s, v);
    kernels::svd(context(), a, u, s, v);
  }
  /// B = A^-1 B for a square A; numerical_error when A is singular to working precision.
  template <class T>
  void solve(in_matrix<T> a, matrix_view<T> b) {
    detail::check_solve("polar::solve", space, a, b);
    kernels::solve(context(), a, b);
  }

 private:
  auto policy() const { return res::policy(); }
  res& context() { return *this; }

  template <class T>
  void lines(matrix_view<const T> x, vector_view<T> out, bool norm) {
    kernels::reduce_rows(context(), x, out, norm);
  }

};

/// The Thrust backend of THRUST_DEVICE_SYSTEM (set by the polar::thrust
/// CMake target from POLAR_THRUST_DEVICE_SYSTEM).
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA && POLAR_CUDA_COMPILER
using thrust_device = thrust<system::cuda>;
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
using thrust_device = thrust<system::omp>;
#else
using thrust_device = thrust<system::cpp>;
#endif

}  // namespace backend

// ---- views of Thrust vectors ---------------------------------------------

namespace detail {
template <class Vector>
constexpr memory_space thrust_vector_space() {
  using tag = typename ::thrust::iterator_system<typename Vector::iterator>::type;
  return std::is_convertible_v<tag, ::thrust::host_system_tag> ||
                 std::is_same_v<tag, ::thrust::system::cpp::tag>
#if defined(_OPENMP)
                 || std::is_same_v<tag, ::thrust::system::omp::tag>
#endif
             ? memory_space::host
             : memory_space::device;
}
}  // namespace detail

/// A rows x cols view of a Thrust vector (thrust::device_vector,
/// thrust::host_vector, or a system's vector), in the vector's memory space.
/// Throws shape_error when the vector holds fewer than the view needs.
template <class Vector, class = typename Vector::iterator,
          class = decltype(::thrust::raw_pointer_cast(std::declval<Vector&>().data()))>
auto make_view(Vector& v, index rows, index cols, layout order = layout::row_major, index ld = -1) {
  using ptr = decltype(::thrust::raw_pointer_cast(v.data()));
  constexpr memory_space s = detail::thrust_vector_space<std::remove_const_t<Vector>>();
  const auto view = order == layout::row_major
                        ? row_major_view<std::remove_pointer_t<ptr>>(::thrust::raw_pointer_cast(v.data()), rows, cols, ld, s)
                        : col_major_view<std::remove_pointer_t<ptr>>(::thrust::raw_pointer_cast(v.data()), rows, cols, ld, s);
  if (view.span() > index(v.size()))
    detail::raise<shape_error>("polar::make_view", "a ", rows, "x", cols, " view needs ", view.span(),
                               " elements but the vector holds ", v.size());
  return view;
}

/// A view of a raw device pointer wrapped as thrust::device_ptr.
template <class T>
matrix_view<T> make_view(::thrust::device_ptr<T> p, index rows, index cols,
                         layout order = layout::row_major, index ld = -1) {
  return order == layout::row_major ? row_major_view(p.get(), rows, cols, ld, memory_space::device)
                                    : col_major_view(p.get(), rows, cols, ld, memory_space::device);
}

}  // namespace polar
