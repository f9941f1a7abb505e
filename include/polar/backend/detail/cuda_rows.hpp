// polar/backend/detail/cuda_rows.hpp: for_each_row (backend/rows.hpp) on
// the GPU: one kernel launch for the whole step. Not for users; compiled by
// nvcc only.
//
// A block of threads runs a row (blocks stride over the rows when there are
// more rows than blocks). Every thread of the block calls the row kernel;
// row.sum has each thread add its elements j = t, t + blockDim, ... (in
// float for float values), then the block adds the threads' sums in double,
// by warp shuffles and then across warps in a fixed order, and every thread
// gets the total. row.for_each has each thread write its elements and then
// waits for the block, so a later sum sees what was written. Flags are
// atomic minima in a device array that is read back after the launch.
// Column sums (column_sums) take a fixed number of blocks, each adding into
// its own accumulators, and a second launch adds the blocks' sums in order.
#pragma once

#include <cuda_runtime.h>

#include <tuple>
#include <type_traits>

#include "polar/backend/rows.hpp"
#include "polar/core/detail/deferred_record.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar::detail::cuda {

/// Threads per row.
inline constexpr int row_threads = 256;

/// The sum of v over the warp, in lane 0.
__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
template <int N>
__device__ inline sums<double, N> warp_sum(sums<double, N> v) {
  for (int k = 0; k < N; ++k) v.v[k] = warp_sum(v.v[k]);
  return v;
}

/// A thread's partial sum converted to the total's type.
template <class W, class P>
__device__ inline W as_total(const P& p) {
  if constexpr (std::is_same_v<W, double>)
    return double(p);
  else
    return p.template as<double>();
}

/// The block's sum of v, returned to every thread. Called by every thread
/// of the block.
template <class W>
__device__ W block_sum(W v) {
  __shared__ W part[row_threads / 32];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  v = warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    W t = lane < row_threads / 32 ? part[lane] : W{};
    t = warp_sum(t);
    if (lane == 0) part[0] = t;
  }
  __syncthreads();
  const W total = part[0];
  __syncthreads();  // part is reused by the next sum
  return total;
}

/// The row context on the GPU (see backend/rows.hpp). Its members are
/// declared for the host too, since the row kernels that call them are
/// host-and-device functions, but run only in device code. Col is the type
/// of the column sums (void: none); the block's accumulators of sum k are
/// col[k * ld + j].
template <class Col = void>
class device_row {
  using col_t = std::conditional_t<std::is_void_v<Col>, char, Col>;

 public:
  __host__ __device__ device_row(index i, index n, unsigned long long* flags, col_t* col = nullptr, index ld = 0)
      : i_(i), n_(n), flags_(flags), col_(col), ld_(ld) {}

  __host__ __device__ index row() const { return i_; }
  __host__ __device__ index cols() const { return n_; }

  template <class F>
  __host__ __device__ auto sum(F f) const {
    using R = std::decay_t<decltype(f(index(0)))>;
    using W = row_total_t<R>;
#if defined(__CUDA_ARCH__)
    R acc{};  // zero: value-initialized
    for (index j = index(threadIdx.x); j < n_; j += index(blockDim.x)) acc += f(j);
    return block_sum<W>(as_total<W>(acc));
#else
    return W{};
#endif
  }

  template <class F>
  __host__ __device__ void for_each(F f) const {
#if defined(__CUDA_ARCH__)
    for (index j = index(threadIdx.x); j < n_; j += index(blockDim.x)) f(j);
    __syncthreads();
#endif
  }

  /// x[j] = f(j) for every j, x a row the kernel writes whole and does not
  /// read again: streaming stores (__stcs), which do not keep x in L2.
  template <class X, class F>
  __host__ __device__ void stream(X x, F f) const {
#if defined(__CUDA_ARCH__)
    for (index j = index(threadIdx.x); j < n_; j += index(blockDim.x)) __stcs(&x[j], f(j));
    __syncthreads();
#endif
  }

  template <class F>
  __host__ __device__ void single(F f) const {
#if defined(__CUDA_ARCH__)
    __syncthreads();  // every thread has read what f may overwrite
    if (threadIdx.x == 0) f();
    __syncthreads();
#endif
  }

  __host__ __device__ void flag(int code) const {
#if defined(__CUDA_ARCH__)
    if (threadIdx.x == 0) atomicMin(flags_ + code, static_cast<unsigned long long>(i_));
#endif
  }

  /// Column j's accumulator of sum k for this block: the thread that runs
  /// element j of a loop owns it (j = thread, thread + blockDim, ...).
  __host__ __device__ col_t& column(int k, index j) const {
    static_assert(!std::is_void_v<Col>, "polar: row.column needs for_each_row with column_sums");
    return col_[k * ld_ + j];
  }

 private:
  index i_, n_;
  unsigned long long* flags_;
  col_t* col_;
  index ld_;
};

/// An operand as the kernel sees it: its rows are strided_rows.
template <class T>
struct row_operand {
  T* p;
  index row_stride, col_stride;
  __device__ strided_row<T> row(index i) const { return strided_row<T>{p + i * row_stride, col_stride}; }
};

template <class K, class... T>
__global__ void __launch_bounds__(row_threads) rows_kernel(K k, index rows, index cols, unsigned long long* flags,
                                                           row_operand<T>... m) {
  for (index i = index(blockIdx.x); i < rows; i += index(gridDim.x)) {
    const device_row<> row(i, cols, flags);
    k(row, m.row(i)...);
  }
}

/// Blocks of a launch with column sums: a fixed number, so that the rows
/// each block adds, and the bits of the sums, do not depend on the device;
/// each block's accumulators (sums x cols) stay in L2 while it runs.
inline constexpr index column_blocks = 256;

/// rows_kernel with column sums: block b adds into col + b * sums * cols.
template <class K, class A, class... T>
__global__ void __launch_bounds__(row_threads) column_rows_kernel(K k, index rows, index cols,
                                                                  unsigned long long* flags, A* col, index sums,
                                                                  row_operand<T>... m) {
  A* const share = col + index(blockIdx.x) * sums * cols;
  for (index i = index(blockIdx.x); i < rows; i += index(gridDim.x)) {
    const device_row<A> row(i, cols, flags, share, cols);
    k(row, m.row(i)...);
  }
}

/// out(s, j) = the blocks' accumulators of sum s, column j, added in double
/// in block order.
template <class A>
__global__ void add_column_shares(const A* col, index blocks, index sums, index cols, A* out, index out_rs,
                                  index out_cs) {
  const index e = index(blockIdx.x) * index(blockDim.x) + index(threadIdx.x);
  if (e >= sums * cols) return;
  double t = 0;
  for (index b = 0; b < blocks; ++b) t += double(col[b * sums * cols + e]);
  const index s = e / cols, j = e % cols;
  out[s * out_rs + j * out_cs] = A(t);
}

inline void check_launch(cudaError_t e) {
  if (e != cudaSuccess) raise<device_error>("polar::for_each_row", "CUDA error ", int(e), ": ", cudaGetErrorString(e));
}

/// Runs launch(blocks) on `stream` between setting the device array flags
/// (row_flags::codes elements) and reading it back.
template <class L>
row_flags with_row_flags(cudaStream_t stream, unsigned long long* flags, index rows, const L& launch) {
  row_flags out = row_flags::none(rows);
  unsigned long long init[row_flags::codes];
  for (auto& f : init) f = static_cast<unsigned long long>(rows);
  check_launch(cudaMemcpyAsync(flags, init, sizeof init, cudaMemcpyHostToDevice, stream));
  launch();
  check_launch(cudaGetLastError());
  check_launch(cudaMemcpyAsync(init, flags, sizeof init, cudaMemcpyDeviceToHost, stream));
  check_launch(cudaStreamSynchronize(stream));
  for (int c = 0; c < row_flags::codes; ++c) out.first[c] = index(init[c]);
  return out;
}

/// flags[c] = rows for every code: no row flagged yet. (The kernels here
/// are templates so that every translation unit may instantiate them.)
template <class W>
__global__ void clear_row_flags(W* flags, index rows) {
  if (threadIdx.x < unsigned(row_flags::codes)) flags[threadIdx.x] = static_cast<W>(rows);
}

/// The flags of a launch into the slot of a deferred check (row_flag_word's
/// encoding), setting the skip word when a row was flagged. One thread.
template <class W>
__global__ void row_flags_to_slot(const W* flags, index rows, check_word* slot, check_word* skip) {
  for (int c = 0; c < row_flags::codes; ++c)
    if (flags[c] < static_cast<W>(rows)) {
      *slot = check_word(flags[c] + 1) * check_word(row_flags::codes) + check_word(c);
      *skip = 1;
      return;
    }
}

/// Runs launch() on `stream` and reports the kernel K's flags: not at all
/// for a kernel that never flags; into a slot of the deferred_checks scope
/// open on this thread, without waiting for the device, inside one; read
/// back (waiting for the device) otherwise.
template <class K, class L>
row_flags run_rows(cudaStream_t stream, unsigned long long* flags, index rows, index cols, const L& launch) {
  if constexpr (!row_kernel_flags<K>::value) {
    launch();
    check_launch(cudaGetLastError());
    return row_flags::none(rows);
  } else {
    deferred_record* d = deferred();
    if (d == nullptr) return with_row_flags(stream, flags, rows, launch);
    if (d->space != memory_space::device)
      raise<memory_space_error>("polar::for_each_row", "the deferred_checks in scope keeps its words in host memory "
                                                       "but this backend runs on the device");
    check_word* w = open_row_slot(*d, rows, cols);
    clear_row_flags<<<1, 32, 0, stream>>>(flags, rows);
    launch();
    row_flags_to_slot<<<1, 1, 0, stream>>>(flags, rows, w, d->skip());
    check_launch(cudaGetLastError());
    return row_flags::none(rows);
  }
}

/// Runs the kernel over the rows on `stream`; flags is a device array of
/// row_flags::codes elements (see run_rows).
template <class K, class... V>
row_flags launch_rows(cudaStream_t stream, unsigned long long* flags, const K& k, const matrix_view<V>&... m) {
  const auto& m0 = std::get<0>(std::forward_as_tuple(m...));
  const index rows = m0.rows(), cols = m0.cols();
  return run_rows<K>(stream, flags, rows, cols, [&] {
    if (rows == 0) return;
    const index max_blocks = 65535;
    const unsigned blocks = unsigned(rows < max_blocks ? rows : max_blocks);
    rows_kernel<K, V...><<<blocks, row_threads, 0, stream>>>(
        k, rows, cols, flags, row_operand<V>{m.data(), m.row_stride(), m.col_stride()}...);
  });
}

/// The same with column sums; col is device scratch of column_blocks x
/// cs.out.rows() x cols elements.
template <class K, class A, class... V>
row_flags launch_rows(cudaStream_t stream, unsigned long long* flags, A* col, const K& k, const column_sums<A>& cs,
                      const matrix_view<V>&... m) {
  const auto& m0 = std::get<0>(std::forward_as_tuple(m...));
  const index rows = m0.rows(), cols = m0.cols(), n = cs.out.rows();
  const index blocks = rows < column_blocks ? (rows > 0 ? rows : 1) : column_blocks;
  check_launch(cudaMemsetAsync(col, 0, std::size_t(blocks * n * cols) * sizeof(A), stream));
  return run_rows<K>(stream, flags, rows, cols, [&] {
    if (rows > 0)
      column_rows_kernel<K, A, V...><<<unsigned(blocks), row_threads, 0, stream>>>(
          k, rows, cols, flags, col, n, row_operand<V>{m.data(), m.row_stride(), m.col_stride()}...);
    const index total = n * cols;
    if (total > 0)
      add_column_shares<A><<<unsigned((total + 255) / 256), 256, 0, stream>>>(
          col, rows > 0 ? blocks : 0, n, cols, cs.out.data(), cs.out.row_stride(), cs.out.col_stride());
  });
}

}  // namespace polar::detail::cuda
