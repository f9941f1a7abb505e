// polar/backend/detail/cuda_kernels.hpp: what the Thrust backend does on the
// CUDA system beyond Thrust algorithms: device memory, the stream and library
// handles, transfers, cuBLAS products, cuSOLVER factorizations and CUB
// segmented reductions. Not for users; compiled by nvcc only.
//
// cuBLAS and cuSOLVER want column-major operands with a unit inner stride. As
// in the Eigen backend (eigen_kernels.hpp), a view with contiguous columns is
// passed as it is, one with contiguous rows as the transpose of a
// column-major matrix, and anything else is first gathered into scratch. The
// scratch arena keeps one growing allocation per slot, so a step that repeats
// the same shapes allocates nothing after its first call.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/system/cuda/execution_policy.h>

#include <climits>
#include <cub/device/device_segmented_reduce.cuh>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

#include "polar/backend/concept.hpp"
#include "polar/backend/detail/cuda_rows.hpp"
#include "polar/backend/detail/thrust_algorithms.hpp"
#include "polar/core/error.hpp"
#include "polar/core/lowp.hpp"

namespace polar::detail::cuda {

inline void check(cudaError_t e, const char* op) {
  if (e != cudaSuccess) raise<device_error>(op, "CUDA error ", int(e), ": ", cudaGetErrorString(e));
}
inline void check(cublasStatus_t s, const char* op) {
  if (s != CUBLAS_STATUS_SUCCESS) raise<device_error>(op, "cuBLAS status ", int(s));
}
inline void check(cusolverStatus_t s, const char* op) {
  if (s != CUSOLVER_STATUS_SUCCESS) raise<device_error>(op, "cuSOLVER status ", int(s));
}

/// cuBLAS and cuSOLVER take int dimensions.
inline int as_int(index n, const char* op) {
  if (n > index(INT_MAX)) raise<unsupported_error>(op, "dimension ", n, " exceeds the int range of cuBLAS");
  return int(n);
}

/// Owning, uninitialized device memory. Movable, not copyable.
template <class T>
class device_buffer {
 public:
  device_buffer() noexcept = default;
  explicit device_buffer(index n) : size_(n) {
    if (n < 0) raise<value_error>("polar::device_buffer", "negative size ", n);
    if (n > 0) check(cudaMalloc(reinterpret_cast<void**>(&data_), std::size_t(n) * sizeof(T)), "polar::device_buffer");
  }
  device_buffer(device_buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { release(); }
  T* data() const noexcept { return data_; }
  index size() const noexcept { return size_; }

 private:
  void release() noexcept {
    if (data_) cudaFree(data_);
    data_ = nullptr;
  }
  T* data_ = nullptr;
  index size_ = 0;
};

/// The stream, the cuBLAS and cuSOLVER handles and the scratch arena of one
/// CUDA Thrust backend.
class context {
 public:
  /// Scratch slots: operands gathered for the libraries, a temporary output,
  /// library workspace, small integer results, the flags of for_each_row and
  /// its column sums' accumulators.
  enum slot : int { slot_a, slot_b, slot_c, slot_work, slot_info, slot_flags, slot_columns, slot_count };

  context() : owns_stream_(true) {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "polar::backend::thrust<cuda>");
    attach();
  }
  /// Work queues on the caller's stream, which the context does not own.
  explicit context(cudaStream_t stream) : stream_(stream), owns_stream_(false) { attach(); }
  context(context&& o) noexcept
      : stream_(std::exchange(o.stream_, nullptr)),
        owns_stream_(o.owns_stream_),
        tf32_(o.tf32_),
        blas_(std::exchange(o.blas_, nullptr)),
        solver_(std::exchange(o.solver_, nullptr)) {
    for (int i = 0; i < slot_count; ++i) {
      scratch_[i] = std::exchange(o.scratch_[i], nullptr);
      bytes_[i] = std::exchange(o.bytes_[i], 0);
    }
  }
  context& operator=(context&&) = delete;
  context(const context&) = delete;
  context& operator=(const context&) = delete;
  ~context() {
    for (int i = 0; i < slot_count; ++i)
      if (scratch_[i]) cudaFree(scratch_[i]);
    if (solver_) cusolverDnDestroy(solver_);
    if (blas_) cublasDestroy(blas_);
    if (stream_ && owns_stream_) cudaStreamDestroy(stream_);
  }

 private:
  // The library handles, on the stream.
  void attach() {
    check(cublasCreate(&blas_), "polar::backend::thrust<cuda>");
    check(cublasSetStream(blas_, stream_), "polar::backend::thrust<cuda>");
    check(cusolverDnCreate(&solver_), "polar::backend::thrust<cuda>");
    check(cusolverDnSetStream(solver_, stream_), "polar::backend::thrust<cuda>");
  }

 public:
  // par_nosync: Thrust's algorithms queue their kernels and return; only
  // those that hand a value back to the host wait for the device.
  auto policy() const { return ::thrust::cuda::par_nosync.on(stream_); }
  void synchronize() { check(cudaStreamSynchronize(stream_), "polar::synchronize"); }
  cudaStream_t stream() const noexcept { return stream_; }
  cublasHandle_t blas() const noexcept { return blas_; }
  /// Lets cuBLAS round float products' operands to TF32 on tensor cores.
  void set_tf32(bool on) {
    check(cublasSetMathMode(blas_, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "polar::allow_tf32");
    tf32_ = on;
  }
  bool tf32() const noexcept { return tf32_; }
  cusolverDnHandle_t solver() const noexcept { return solver_; }

  /// At least n elements of T in slot s; grows (after waiting for queued
  /// work) when too small, otherwise reuses.
  template <class T>
  T* scratch(slot s, index n) {
    const std::size_t need = std::size_t(n > 0 ? n : 1) * sizeof(T);
    if (need > bytes_[s]) {
      synchronize();
      if (scratch_[s]) cudaFree(scratch_[s]);
      scratch_[s] = nullptr;
      bytes_[s] = 0;
      check(cudaMalloc(&scratch_[s], need), "polar::backend::thrust<cuda> scratch");
      bytes_[s] = need;
    }
    return static_cast<T*>(scratch_[s]);
  }

 private:
  cudaStream_t stream_ = nullptr;
  bool owns_stream_ = true;
  bool tf32_ = false;
  cublasHandle_t blas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
  void* scratch_[slot_count] = {};
  std::size_t bytes_[slot_count] = {};
};

// ---- typed library entry points -------------------------------------------

template <class T>
struct lib;

template <>
struct lib<float> {
  static cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                             const float* alpha, const float* a, int lda, const float* b, int ldb,
                             const float* beta, float* c, int ldc) {
    return cublasSgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  static cublasStatus_t gemm_strided(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                     int k, const float* alpha, const float* a, int lda, long long sa,
                                     const float* b, int ldb, long long sb, const float* beta, float* c, int ldc,
                                     long long sc, int count) {
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count);
  }
  static cublasStatus_t syrk(cublasHandle_t h, cublasFillMode_t u, cublasOperation_t t, int n, int k,
                             const float* alpha, const float* a, int lda, const float* beta, float* c, int ldc) {
    return cublasSsyrk(h, u, t, n, k, alpha, a, lda, beta, c, ldc);
  }
  static cusolverStatus_t geqrf_size(cusolverDnHandle_t h, int m, int n, float* a, int lda, int* lw) {
    return cusolverDnSgeqrf_bufferSize(h, m, n, a, lda, lw);
  }
  static cusolverStatus_t geqrf(cusolverDnHandle_t h, int m, int n, float* a, int lda, float* tau, float* w,
                                int lw, int* info) {
    return cusolverDnSgeqrf(h, m, n, a, lda, tau, w, lw, info);
  }
  static cusolverStatus_t orgqr_size(cusolverDnHandle_t h, int m, int n, int k, const float* a, int lda,
                                     const float* tau, int* lw) {
    return cusolverDnSorgqr_bufferSize(h, m, n, k, a, lda, tau, lw);
  }
  static cusolverStatus_t orgqr(cusolverDnHandle_t h, int m, int n, int k, float* a, int lda, const float* tau,
                                float* w, int lw, int* info) {
    return cusolverDnSorgqr(h, m, n, k, a, lda, tau, w, lw, info);
  }
  static cusolverStatus_t gesvd_size(cusolverDnHandle_t h, int m, int n, int* lw) {
    return cusolverDnSgesvd_bufferSize(h, m, n, lw);
  }
  static cusolverStatus_t gesvd(cusolverDnHandle_t h, int m, int n, float* a, int lda, float* s, float* u, int ldu,
                                float* vt, int ldvt, float* w, int lw, float* rw, int* info) {
    return cusolverDnSgesvd(h, 'S', 'S', m, n, a, lda, s, u, ldu, vt, ldvt, w, lw, rw, info);
  }
  static cusolverStatus_t getrf_size(cusolverDnHandle_t h, int n, float* a, int lda, int* lw) {
    return cusolverDnSgetrf_bufferSize(h, n, n, a, lda, lw);
  }
  static cusolverStatus_t getrf(cusolverDnHandle_t h, int n, float* a, int lda, float* w, int* piv, int* info) {
    return cusolverDnSgetrf(h, n, n, a, lda, w, piv, info);
  }
  static cusolverStatus_t getrs(cusolverDnHandle_t h, int n, int k, const float* a, int lda, const int* piv,
                                float* b, int ldb, int* info) {
    return cusolverDnSgetrs(h, CUBLAS_OP_N, n, k, a, lda, piv, b, ldb, info);
  }
};

template <>
struct lib<double> {
  static cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                             const double* alpha, const double* a, int lda, const double* b, int ldb,
                             const double* beta, double* c, int ldc) {
    return cublasDgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  static cublasStatus_t gemm_strided(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                     int k, const double* alpha, const double* a, int lda, long long sa,
                                     const double* b, int ldb, long long sb, const double* beta, double* c,
                                     int ldc, long long sc, int count) {
    return cublasDgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count);
  }
  static cublasStatus_t syrk(cublasHandle_t h, cublasFillMode_t u, cublasOperation_t t, int n, int k,
                             const double* alpha, const double* a, int lda, const double* beta, double* c,
                             int ldc) {
    return cublasDsyrk(h, u, t, n, k, alpha, a, lda, beta, c, ldc);
  }
  static cusolverStatus_t geqrf_size(cusolverDnHandle_t h, int m, int n, double* a, int lda, int* lw) {
    return cusolverDnDgeqrf_bufferSize(h, m, n, a, lda, lw);
  }
  static cusolverStatus_t geqrf(cusolverDnHandle_t h, int m, int n, double* a, int lda, double* tau, double* w,
                                int lw, int* info) {
    return cusolverDnDgeqrf(h, m, n, a, lda, tau, w, lw, info);
  }
  static cusolverStatus_t orgqr_size(cusolverDnHandle_t h, int m, int n, int k, const double* a, int lda,
                                     const double* tau, int* lw) {
    return cusolverDnDorgqr_bufferSize(h, m, n, k, a, lda, tau, lw);
  }
  static cusolverStatus_t orgqr(cusolverDnHandle_t h, int m, int n, int k, double* a, int lda, const double* tau,
                                double* w, int lw, int* info) {
    return cusolverDnDorgqr(h, m, n, k, a, lda, tau, w, lw, info);
  }
  static cusolverStatus_t gesvd_size(cusolverDnHandle_t h, int m, int n, int* lw) {
    return cusolverDnDgesvd_bufferSize(h, m, n, lw);
  }
  static cusolverStatus_t gesvd(cusolverDnHandle_t h, int m, int n, double* a, int lda, double* s, double* u,
                                int ldu, double* vt, int ldvt, double* w, int lw, double* rw, int* info) {
    return cusolverDnDgesvd(h, 'S', 'S', m, n, a, lda, s, u, ldu, vt, ldvt, w, lw, rw, info);
  }
  static cusolverStatus_t getrf_size(cusolverDnHandle_t h, int n, double* a, int lda, int* lw) {
    return cusolverDnDgetrf_bufferSize(h, n, n, a, lda, lw);
  }
  static cusolverStatus_t getrf(cusolverDnHandle_t h, int n, double* a, int lda, double* w, int* piv, int* info) {
    return cusolverDnDgetrf(h, n, n, a, lda, w, piv, info);
  }
  static cusolverStatus_t getrs(cusolverDnHandle_t h, int n, int k, const double* a, int lda, const int* piv,
                                double* b, int ldb, int* info) {
    return cusolverDnDgetrs(h, CUBLAS_OP_N, n, k, a, lda, piv, b, ldb, info);
  }
};

// ---- operands ----------------------------------------------------------------

/// op(M) with M column-major in device memory.
template <class T>
struct operand {
  const T* data = nullptr;
  index rows = 0, cols = 0, ld = 1;
  bool trans = false;
  cublasOperation_t blas_op() const { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }
};

inline index max1(index a) { return a > 1 ? a : 1; }

/// op(v) as a column-major operand; a view with no unit stride is gathered
/// into scratch slot s.
template <class T>
operand<T> as_operand(context& ctx, context::slot s, matrix_view<const T> v, op o) {
  operand<T> r;
  if (v.cols_contiguous()) {
    r = {v.data(), v.rows(), v.cols(), v.cols() > 1 ? (v.col_stride() > max1(v.rows()) ? v.col_stride() : max1(v.rows())) : max1(v.rows()), o == op::t};
  } else if (v.rows_contiguous()) {
    r = {v.data(), v.cols(), v.rows(), v.rows() > 1 ? (v.row_stride() > max1(v.cols()) ? v.row_stride() : max1(v.cols())) : max1(v.cols()), o == op::n};
  } else {
    T* p = ctx.scratch<T>(s, v.size());
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, col_major_view(p, v.rows(), v.cols(), max1(v.rows()), memory_space::device), v);
    r = {p, v.rows(), v.cols(), max1(v.rows()), o == op::t};
  }
  return r;
}

template <class T>
void product(context& ctx, T alpha, const operand<T>& a, const operand<T>& b, T beta, T* c, index m, index n,
             index ldc) {
  const index k = a.trans ? a.rows : a.cols;
  constexpr const char* op = "polar::gemm";
  check(lib<T>::gemm(ctx.blas(), a.blas_op(), b.blas_op(), as_int(m, op), as_int(n, op), as_int(k, op), &alpha,
                     a.data, as_int(a.ld, op), b.data, as_int(b.ld, op), &beta, c, as_int(ldc, op)),
        op);
}

template <class T>
operand<T> flipped(const operand<T>& x) {
  operand<T> r = x;
  r.trans = !x.trans;
  return r;
}

/// count_nonfinite on the device: each thread counts its elements (a grid
/// stride over x in row-major order), each warp adds its threads' counts,
/// and lanes 0 add theirs to *count. The total is an integer, the same
/// whatever the order of the additions.
template <class T>
__global__ void count_nonfinite_kernel(const T* x, index rows, index cols, index rs, index cs, check_word* count,
                                       check_word* any) {
  const index n = rows * cols;
  unsigned long long c = 0;
  for (index e = index(blockIdx.x) * index(blockDim.x) + index(threadIdx.x); e < n;
       e += index(gridDim.x) * index(blockDim.x)) {
    const index i = e / cols, j = e - i * cols;
    const T v = x[i * rs + j * cs];
    const T d = v - v;
    c += d == d ? 0u : 1u;
  }
  for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
  if ((threadIdx.x & 31u) == 0 && c != 0) {
    atomicAdd(count, c);
    *any = 1;
  }
}

// ---- the kernels the Thrust backend dispatches to ----------------------------

struct kernels {
  template <class T>
  static void count_nonfinite(context& ctx, matrix_view<const T> x, check_word* count, check_word* any) {
    const index n = x.size();
    if (n == 0) return;
    const index blocks = (n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024;
    count_nonfinite_kernel<T><<<unsigned(blocks), 256, 0, ctx.stream()>>>(x.data(), x.rows(), x.cols(),
                                                                          x.row_stride(), x.col_stride(), count, any);
    check(cudaGetLastError(), "polar::count_nonfinite");
  }
  template <bool, class K, class... V>
  static row_flags for_each_row(context& ctx, const K& k, const matrix_view<V>&... m) {
    return launch_rows(ctx.stream(), ctx.scratch<unsigned long long>(context::slot_flags, row_flags::codes), k, m...);
  }
  template <bool, class K, class A, class... V>
  static row_flags for_each_row(context& ctx, const K& k, const column_sums<A>& cs, const matrix_view<V>&... m) {
    const index n = cs.out.rows() * cs.out.cols();
    return launch_rows(ctx.stream(), ctx.scratch<unsigned long long>(context::slot_flags, row_flags::codes),
                       ctx.scratch<A>(context::slot_columns, column_blocks * (n > 0 ? n : 1)), k, cs, m...);
  }
  template <class T>
  static void copy_from_host(context& ctx, matrix_view<const T> src, matrix_view<T> dst) {
    if (dst.empty()) return;
    std::vector<T> staged(std::size_t(src.size()));
    for (index i = 0; i < src.rows(); ++i)
      for (index j = 0; j < src.cols(); ++j) staged[std::size_t(i * src.cols() + j)] = src(i, j);
    T* p = ctx.scratch<T>(context::slot_c, src.size());
    check(cudaMemcpyAsync(p, staged.data(), staged.size() * sizeof(T), cudaMemcpyHostToDevice, ctx.stream()),
          "polar::copy_from_host");
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, dst,
                    matrix_view<const T>(row_major_view(p, src.rows(), src.cols(), -1, memory_space::device)));
    ctx.synchronize();  // `staged` must outlive the copy
  }

  template <class T>
  static void copy_to_host(context& ctx, matrix_view<const T> src, matrix_view<T> dst) {
    if (dst.empty()) return;
    T* p = ctx.scratch<T>(context::slot_c, src.size());
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{},
                    row_major_view(p, src.rows(), src.cols(), -1, memory_space::device), src);
    std::vector<T> staged(std::size_t(src.size()));
    check(cudaMemcpyAsync(staged.data(), p, staged.size() * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()),
          "polar::copy_to_host");
    ctx.synchronize();
    for (index i = 0; i < dst.rows(); ++i)
      for (index j = 0; j < dst.cols(); ++j) dst(i, j) = staged[std::size_t(i * dst.cols() + j)];
  }

  template <class T>
  static void gemm(context& ctx, T alpha, op op_a, matrix_view<const T> a, op op_b, matrix_view<const T> b, T beta,
                   matrix_view<T> c) {
    if (c.empty()) return;
    const auto pa = as_operand(ctx, context::slot_a, a, op_a);
    const auto pb = as_operand(ctx, context::slot_b, b, op_b);
    if (c.cols_contiguous()) {
      const index ld = c.cols() > 1 ? (c.col_stride() > max1(c.rows()) ? c.col_stride() : max1(c.rows())) : max1(c.rows());
      product(ctx, alpha, pa, pb, beta, c.data(), c.rows(), c.cols(), ld);
    } else if (c.rows_contiguous()) {
      // C^T = op(B)^T op(A)^T, column-major.
      const index ld = c.rows() > 1 ? (c.row_stride() > max1(c.cols()) ? c.row_stride() : max1(c.cols())) : max1(c.cols());
      product(ctx, alpha, flipped(pb), flipped(pa), beta, c.data(), c.cols(), c.rows(), ld);
    } else {
      T* t = ctx.scratch<T>(context::slot_c, c.size());
      const auto tv = col_major_view(t, c.rows(), c.cols(), max1(c.rows()), memory_space::device);
      if (beta != T(0)) thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, tv, matrix_view<const T>(c));
      product(ctx, alpha, pa, pb, beta, t, c.rows(), c.cols(), max1(c.rows()));
      thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, c, matrix_view<const T>(tv));
    }
  }

  /// Element k of a stack copied from `from` to `to`: all of it
  /// (part 0), its lower triangle (1) or its upper one (2).
  template <class T>
  struct copy_stack {
    batch_view<const T> from;
    batch_view<T> to;
    int part;
    POLAR_HOST_DEVICE void operator()(index k) const {
      const index n = to.rows() * to.cols(), q = k / n, r = k - q * n;
      const index i = r / to.cols(), j = r - i * to.cols();
      if (part == 0 || (part == 1 ? i >= j : i <= j)) to[q](i, j) = from[q](i, j);
    }
  };

  template <class T>
  static void syrk(context& ctx, uplo tri, T alpha, op op_a, matrix_view<const T> a, T beta, matrix_view<T> c) {
    if (c.empty()) return;
    const auto pa = as_operand(ctx, context::slot_a, a, op_a);
    const index n = c.rows(), k = pa.trans ? pa.rows : pa.cols;
    constexpr const char* op = "polar::syrk";
    auto run = [&](T* data, index ld, bool lower) {
      check(lib<T>::syrk(ctx.blas(), lower ? CUBLAS_FILL_MODE_LOWER : CUBLAS_FILL_MODE_UPPER, pa.blas_op(),
                         as_int(n, op), as_int(k, op), &alpha, pa.data, as_int(pa.ld, op), &beta, data,
                         as_int(ld, op)),
            op);
    };
    const bool lower = tri == uplo::lower;
    if (c.cols_contiguous()) {
      run(c.data(), n > 1 ? c.col_stride() : 1, lower);
    } else if (c.rows_contiguous()) {
      run(c.data(), n > 1 ? c.row_stride() : 1, !lower);  // C^T is column-major; its other triangle
    } else {
      T* t = ctx.scratch<T>(context::slot_c, c.size());
      const auto tv = col_major_view(t, n, n, n, memory_space::device);
      thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, tv, matrix_view<const T>(c));
      run(t, n, lower);
      ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), c.size(),
                           copy_stack<T>{as_batch(matrix_view<const T>(tv)), as_batch(c), lower ? 1 : 2});
    }
  }

  // syrk over a stack. cuBLAS has no batched syrk: a stack of small
  // products (under 2^27 multiply-adds each, where one launch per matrix
  // would cost more than the work) is one strided-batched GEMM of the
  // whole products into scratch and one kernel that copies the triangle;
  // larger products take one syrk each.
  template <class T>
  static void syrk_batched(context& ctx, uplo tri, T alpha, op op_a, batch_view<const T> a, T beta,
                           batch_view<T> c) {
    const index count = c.count();
    if (count == 0 || c.matrix(0).empty()) return;
    const index n = c.rows(), k = op_a == op::n ? a.cols() : a.rows();
    if (count == 1 || double(n) * double(n) * double(k) >= 134217728.0) {
      for (index i = 0; i < count; ++i) syrk(ctx, tri, alpha, op_a, a[i], beta, c[i]);
      return;
    }
    T* t = ctx.scratch<T>(context::slot_c, count * n * n);
    const auto full = row_major_batch(t, count, n, n, memory_space::device);
    const auto each = [&](int part, batch_view<const T> from, batch_view<T> to) {
      ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), count * n * n,
                           copy_stack<T>{from, to, part});
    };
    if (beta != T(0)) each(0, c, full);
    gemm_batched(ctx, alpha, op_a, a, op_a == op::n ? op::t : op::n, a, beta, full);
    each(tri == uplo::lower ? 1 : 2, full, c);
  }

  // The strided-batched form of C = op(A) op(B) over stacks whose matrices
  // have unit-stride rows or columns: call(pa, pb, stride a, stride b, m, n,
  // k, ldc) for column-major C, and for row-major C the same of
  // C^T = op(B)^T op(A)^T (so row-major stacks, polar's workspaces, are one
  // call too). False, calling nothing, for other layouts.
  template <class T, class Call>
  static bool strided_batched(context& ctx, op op_a, batch_view<const T> a, op op_b, batch_view<const T> b,
                              batch_view<T> c, const Call& call) {
    const auto a0 = a.matrix(0), b0 = b.matrix(0);
    const auto c0 = c.matrix(0);
    const auto unit = [](const auto& v) { return v.cols_contiguous() || v.rows_contiguous(); };
    if (!unit(a0) || !unit(b0) || !unit(c0) || c.count() > index(INT_MAX)) return false;
    const auto pa = as_operand(ctx, context::slot_a, a0, op_a);  // unit strides: no gather
    const auto pb = as_operand(ctx, context::slot_b, b0, op_b);
    if (c0.cols_contiguous()) {
      const index ldc =
          c0.cols() > 1 ? (c0.col_stride() > max1(c0.rows()) ? c0.col_stride() : max1(c0.rows())) : max1(c0.rows());
      call(pa, pb, a.batch_stride(), b.batch_stride(), c0.rows(), c0.cols(), pa.trans ? pa.rows : pa.cols, ldc);
    } else {
      const index ldc =
          c0.rows() > 1 ? (c0.row_stride() > max1(c0.cols()) ? c0.row_stride() : max1(c0.cols())) : max1(c0.cols());
      call(flipped(pb), flipped(pa), b.batch_stride(), a.batch_stride(), c0.cols(), c0.rows(),
           pa.trans ? pa.rows : pa.cols, ldc);
    }
    return true;
  }

  template <class T>
  static void gemm_batched(context& ctx, T alpha, op op_a, batch_view<const T> a, op op_b, batch_view<const T> b,
                           T beta, batch_view<T> c) {
    const index count = c.count();
    if (count == 0 || c.matrix(0).empty()) return;
    constexpr const char* op = "polar::gemm_batched";
    const bool direct = strided_batched(
        ctx, op_a, a, op_b, b, c,
        [&](const operand<T>& pa, const operand<T>& pb, index sa, index sb, index m, index n, index k, index ldc) {
          check(lib<T>::gemm_strided(ctx.blas(), pa.blas_op(), pb.blas_op(), as_int(m, op), as_int(n, op),
                                     as_int(k, op), &alpha, pa.data, as_int(pa.ld, op), sa, pb.data,
                                     as_int(pb.ld, op), sb, &beta, c.data(), as_int(ldc, op), c.batch_stride(),
                                     int(count)),
                op);
        });
    if (!direct)
      for (index i = 0; i < count; ++i) gemm(ctx, alpha, op_a, a[i], op_b, b[i], beta, c[i]);
  }

  /// The cuBLAS type of a 16-bit storage type.
  template <class H>
  static cudaDataType lowp_type() {
    return std::is_same_v<H, bfloat16> ? CUDA_R_16BF : CUDA_R_16F;
  }

  // Stacks of 16-bit matrices on the tensor cores: one strided-batched
  // cublasGemmEx call, float accumulation (CUBLAS_COMPUTE_32F), one
  // rounding of the result.
  template <class H>
  static void gemm_batched_lowp(context& ctx, float alpha, op op_a, batch_view<const H> a, op op_b,
                                batch_view<const H> b, float beta, batch_view<H> c) {
    const index count = c.count();
    if (count == 0 || c.matrix(0).empty()) return;
    constexpr const char* op = "polar::gemm_batched_lowp";
    const cudaDataType t = lowp_type<H>();
    const bool direct = strided_batched(
        ctx, op_a, a, op_b, b, c,
        [&](const operand<H>& pa, const operand<H>& pb, index sa, index sb, index m, index n, index k, index ldc) {
          check(cublasGemmStridedBatchedEx(ctx.blas(), pa.blas_op(), pb.blas_op(), as_int(m, op), as_int(n, op),
                                           as_int(k, op), &alpha, pa.data, t, as_int(pa.ld, op), sa, pb.data, t,
                                           as_int(pb.ld, op), sb, &beta, c.data(), t, as_int(ldc, op),
                                           c.batch_stride(), int(count), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                op);
        });
    if (!direct)
      raise<unsupported_error>(op, "on CUDA the 16-bit stacks need matrices with unit-stride rows or columns; got ",
                               describe(a), ", ", describe(b), ", ", describe(c));
  }

  // QR: geqrf on a column-major copy, R taken before orgqr forms Q, then the
  // signs fixed so diag(R) >= 0.
  template <class T>
  struct qr_signs {
    matrix_view<const T> f;  // the geqrf result
    T* sign;
    POLAR_HOST_DEVICE void operator()(index j) const { sign[j] = f(j, j) < T(0) ? T(-1) : T(1); }
  };
  template <class T>
  struct qr_r {
    matrix_view<const T> f;
    const T* sign;
    matrix_view<T> r;
    POLAR_HOST_DEVICE void operator()(index k) const {
      const index i = k / r.cols(), j = k - i * r.cols();
      r(i, j) = j >= i ? T(f(i, j) * sign[i]) : T(0);
    }
  };
  template <class T>
  struct qr_q {
    matrix_view<const T> f;  // after orgqr
    const T* sign;
    matrix_view<T> q;
    POLAR_HOST_DEVICE void operator()(index k) const {
      const index i = k / q.cols(), j = k - i * q.cols();
      q(i, j) = T(f(i, j) * sign[j]);
    }
  };

  template <class T>
  static void qr(context& ctx, matrix_view<const T> a, matrix_view<T> q, matrix_view<T> r) {
    const index m = a.rows(), n = a.cols();
    if (n == 0) return;
    constexpr const char* op = "polar::qr";
    T* f = ctx.scratch<T>(context::slot_a, m * n + 2 * n);  // the matrix, tau, signs
    T* tau = f + m * n;
    T* sign = tau + n;
    const auto fv = col_major_view(f, m, n, m, memory_space::device);
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, fv, a);
    int lw1 = 0, lw2 = 0;
    check(lib<T>::geqrf_size(ctx.solver(), as_int(m, op), as_int(n, op), f, as_int(m, op), &lw1), op);
    check(lib<T>::orgqr_size(ctx.solver(), int(m), int(n), int(n), f, int(m), tau, &lw2), op);
    T* work = ctx.scratch<T>(context::slot_work, lw1 > lw2 ? lw1 : lw2);
    int* info = ctx.scratch<int>(context::slot_info, 1);
    check(lib<T>::geqrf(ctx.solver(), int(m), int(n), f, int(m), tau, work, lw1 > lw2 ? lw1 : lw2, info), op);
    ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), n, qr_signs<T>{fv, sign});
    ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), n * n, qr_r<T>{fv, sign, r});
    check(lib<T>::orgqr(ctx.solver(), int(m), int(n), int(n), f, int(m), tau, work, lw1 > lw2 ? lw1 : lw2, info), op);
    ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), m * n, qr_q<T>{fv, sign, q});
  }

  template <class T>
  struct transpose_into {
    matrix_view<const T> from;
    matrix_view<T> to;  // to = from^T
    POLAR_HOST_DEVICE void operator()(index k) const {
      const index i = k / to.cols(), j = k - i * to.cols();
      to(i, j) = from(j, i);
    }
  };

  template <class T>
  static int read_info(context& ctx, const int* info) {
    int h = 0;
    check(cudaMemcpyAsync(&h, info, sizeof(int), cudaMemcpyDeviceToHost, ctx.stream()), "polar::cuda");
    ctx.synchronize();
    return h;
  }

  template <class T>
  static void svd(context& ctx, matrix_view<const T> a, matrix_view<T> u, vector_view<T> s, matrix_view<T> v) {
    const index m = a.rows(), n = a.cols();
    if (m == 0 || n == 0) return;
    constexpr const char* op = "polar::svd";
    // gesvd needs rows >= cols: factor A^T when A is wide (A = V S U^T).
    const bool wide = m < n;
    const index mm = wide ? n : m, nn = wide ? m : n;
    T* f = ctx.scratch<T>(context::slot_a, mm * nn);
    const auto fv = col_major_view(f, mm, nn, mm, memory_space::device);
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, fv, wide ? a.transpose() : a);
    T* uu = ctx.scratch<T>(context::slot_b, mm * nn + nn * nn + 2 * nn);
    T* vt = uu + mm * nn;
    T* sv = vt + nn * nn;
    T* rw = sv + nn;
    int lw = 0;
    check(lib<T>::gesvd_size(ctx.solver(), as_int(mm, op), as_int(nn, op), &lw), op);
    T* work = ctx.scratch<T>(context::slot_work, lw);
    int* info = ctx.scratch<int>(context::slot_info, 1);
    check(lib<T>::gesvd(ctx.solver(), int(mm), int(nn), f, int(mm), sv, uu, int(mm), vt, int(nn), work, lw, rw, info),
          op);
    const int h = read_info<T>(ctx, info);
    if (h > 0) raise<numerical_error>(op, "the SVD of the ", m, "x", n, " matrix did not converge (", h, " superdiagonals)");
    const auto uv = col_major_view(uu, mm, nn, mm, memory_space::device);
    const auto vtv = col_major_view(vt, nn, nn, nn, memory_space::device);
    // A = U S V^T (tall) or A^T = U S V^T, so A = V S U^T (wide).
    if (!wide) {
      thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, u, matrix_view<const T>(uv));
      ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), v.size(),
                           transpose_into<T>{vtv, v});
    } else {
      ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), u.size(),
                           transpose_into<T>{vtv, u});
      thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, v, matrix_view<const T>(uv));
    }
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, s.as_column(),
                    matrix_view<const T>(vector_view<T>(sv, nn, 1, memory_space::device).as_column()));
  }

  template <class T>
  struct diag_abs {
    matrix_view<const T> f;
    POLAR_HOST_DEVICE double operator()(index i) const {
      const double d = thrust_alg::widen(f(i, i));
      return d < 0 ? -d : d;
    }
  };
  struct nan_min {
    POLAR_HOST_DEVICE double operator()(double a, double b) const {
      if (a != a) return a;
      if (b != b) return b;
      return a < b ? a : b;
    }
  };

  template <class T>
  static void solve(context& ctx, matrix_view<const T> a, matrix_view<T> b) {
    const index n = a.rows(), k = b.cols();
    if (n == 0) return;
    constexpr const char* op = "polar::solve";
    T* f = ctx.scratch<T>(context::slot_a, n * n);
    const auto fv = col_major_view(f, n, n, n, memory_space::device);
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, fv, a);
    int lw = 0;
    check(lib<T>::getrf_size(ctx.solver(), as_int(n, op), f, int(n), &lw), op);
    T* work = ctx.scratch<T>(context::slot_work, lw);
    int* info = ctx.scratch<int>(context::slot_info, n + 1);
    int* piv = info + 1;
    check(lib<T>::getrf(ctx.solver(), int(n), f, int(n), work, piv, info), op);
    // The Eigen backend's rule: a pivot at most n eps times the largest is singular.
    ::thrust::counting_iterator<index> first(0);
    const double big = ::thrust::transform_reduce(ctx.policy(), first, first + n, diag_abs<T>{fv}, 0.0,
                                                  thrust_alg::nan_max{});
    const double small = ::thrust::transform_reduce(ctx.policy(), first, first + n, diag_abs<T>{fv},
                                                    std::numeric_limits<double>::infinity(), nan_min{});
    if (!(small > big * double(n) * double(std::numeric_limits<T>::epsilon())) || !thrust_alg::finite(small))
      raise<numerical_error>(op, "A (", n, "x", n, ") is singular to working precision: smallest pivot ", small,
                             " against a largest pivot of ", big);
    if (k == 0) return;
    T* x = ctx.scratch<T>(context::slot_b, n * k);
    const auto xv = col_major_view(x, n, k, n, memory_space::device);
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, xv, matrix_view<const T>(b));
    check(lib<T>::getrs(ctx.solver(), int(n), as_int(k, op), f, int(n), piv, x, int(n), info), op);
    thrust_alg::map(ctx.policy(), thrust_alg::identity_fn{}, b, matrix_view<const T>(xv));
  }

  // Row reductions: CUB's segmented sum over the rows, then a pass that takes
  // square roots and rescues rows whose squares overflowed or underflowed.
  template <class T>
  struct line_term {
    matrix_view<const T> x;
    bool square;
    POLAR_HOST_DEVICE double operator()(index k) const {
      const index i = k / x.cols(), j = k - i * x.cols();
      const double v = thrust_alg::widen(x(i, j));
      return square ? v * v : v;
    }
  };
  struct times {
    index len;
    POLAR_HOST_DEVICE index operator()(index i) const { return i * len; }
  };
  template <class T>
  struct finish_lines {
    const double* acc;
    matrix_view<const T> x;
    vector_view<T> out;
    bool norm;
    POLAR_HOST_DEVICE void operator()(index i) const {
      const double s = acc[i];
      if (!norm) {
        out[i] = T(s);
      } else {
        const double tiny = 2.2250738585072014e-308 / 2.220446049250313e-16;
        out[i] = T(thrust_alg::finite(s) && s > tiny ? ::sqrt(s) : thrust_alg::line_norm<T>(x.row(i)));
      }
    }
  };

  template <class T>
  static void reduce_rows(context& ctx, matrix_view<const T> x, vector_view<T> out, bool norm) {
    const index rows = x.rows();
    if (rows == 0) return;
    auto in = ::thrust::make_transform_iterator(::thrust::counting_iterator<index>(0), line_term<T>{x, norm});
    auto begin = ::thrust::make_transform_iterator(::thrust::counting_iterator<index>(0), times{x.cols()});
    auto end = ::thrust::make_transform_iterator(::thrust::counting_iterator<index>(1), times{x.cols()});
    double* acc = ctx.scratch<double>(context::slot_c, rows);
    std::size_t bytes = 0;
    check(cub::DeviceSegmentedReduce::Reduce(nullptr, bytes, in, acc, rows, begin, end, ::cuda::std::plus<double>{},
                                             0.0, ctx.stream()),
          "polar::row_reduce");
    void* temp = ctx.scratch<char>(context::slot_work, index(bytes));
    check(cub::DeviceSegmentedReduce::Reduce(temp, bytes, in, acc, rows, begin, end, ::cuda::std::plus<double>{},
                                             0.0, ctx.stream()),
          "polar::row_reduce");
    ::thrust::for_each_n(ctx.policy(), ::thrust::counting_iterator<index>(0), rows,
                         finish_lines<T>{acc, x, out, norm});
  }
};

}  // namespace polar::detail::cuda
