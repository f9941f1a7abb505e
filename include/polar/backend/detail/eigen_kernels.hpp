// polar/backend/detail/eigen_kernels.hpp: products and factorizations of
// host views through Eigen. Not for users: the Eigen backend calls these
// after its argument checks, and so do the Thrust backend's host systems.
//
// Eigen's GEMM wants each operand column-major with unit inner stride. A view
// whose columns are contiguous maps directly; one whose rows are contiguous
// is the transpose of a column-major matrix, so it maps too with its `op`
// flipped; anything else is first copied into a column-major temporary. This
// keeps four product instantiations per scalar type instead of twenty-seven.
// The symmetric rank-k update is built from the same GEMM (see syrk_lower).
#pragma once

#include <Eigen/Core>
#include <Eigen/LU>
#include <Eigen/QR>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "polar/backend/concept.hpp"
#include "polar/core/config.hpp"
#include "polar/core/error.hpp"
#include "polar/core/threads.hpp"


namespace polar::detail::eigen_kernels {

template <class T>
using cmatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
template <class T>
using const_map = Eigen::Map<const cmatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using mut_map = Eigen::Map<cmatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

/// op(M) for a column-major M: what Eigen's GEMM consumes.
template <class T>
struct operand {
  const T* data = nullptr;
  index rows = 0, cols = 0, ld = 1;  // of M, column-major
  bool trans = false;                // use M^T
  cmatrix<T> copy;                   // owns M when the view had to be copied

  const_map<T> map() const { return const_map<T>(data, rows, cols, Eigen::OuterStride<>(ld)); }
};

inline index max1(index a) { return a > 1 ? a : 1; }

/// Describes op(v) as op'(M) with M column-major.
template <class T>
operand<T> as_operand(matrix_view<const T> v, op o) {
  operand<T> r;
  if (v.cols_contiguous()) {
    r.data = v.data();
    r.rows = v.rows();
    r.cols = v.cols();
    r.ld = v.cols() > 1 ? std::max(v.col_stride(), max1(v.rows())) : max1(v.rows());
    r.trans = o == op::t;
  } else if (v.rows_contiguous()) {
    r.data = v.data();
    r.rows = v.cols();
    r.cols = v.rows();
    r.ld = v.rows() > 1 ? std::max(v.row_stride(), max1(v.cols())) : max1(v.cols());
    r.trans = o == op::n;
  } else {
    r.copy.resize(v.rows(), v.cols());
    for (index j = 0; j < v.cols(); ++j)
      for (index i = 0; i < v.rows(); ++i) r.copy(i, j) = v(i, j);
    r.data = r.copy.data();
    r.rows = v.rows();
    r.cols = v.cols();
    r.ld = max1(v.rows());
    r.trans = o == op::t;
  }
  return r;
}

#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
/// Whether product() runs Eigen 3.4's GEMM kernels through its own loop
/// (gemm_loop). Any other Eigen version takes Eigen's product as a whole.
#define POLAR_EIGEN_GEMM_LOOP 1
#else
#define POLAR_EIGEN_GEMM_LOOP 0
#endif

#if POLAR_EIGEN_GEMM_LOOP
/// Whether Eigen evaluates `C += alpha * A * B` of these sizes with its
/// blocked GEMM (rather than a matrix-vector product or, for the smallest,
/// coefficient by coefficient): then gemm_loop gives the same bits.
inline bool eigen_uses_gemm(index rows, index cols, index depth) {
  return rows > 1 && cols > 1 && depth > 0 && rows + cols + depth >= EIGEN_GEMM_TO_COEFFBASED_THRESHOLD;
}

/// C = alpha A B + beta C for a column-major C (rows x cols, unit inner
/// stride, leading dimension ldc), A rows x depth and B depth x cols stored
/// in the orders LhsOrder and RhsOrder: Eigen 3.4's sequential GEMM (its
/// blocking sizes, packing routines and kernel, called in the order of
/// Eigen's own loop), except where beta is applied.
///
/// Eigen's kernel adds into C, so Eigen's product zeroes (or scales) the
/// whole of C first: a pass over C that leaves it in memory, to be read
/// back by the kernel. For Newton-Schulz's X <- B X (C of 1024 x 4096
/// floats, 16 MB, depth 1024) doing without it took 3.5-7% off the
/// product's time (docs/benchmarks.md). Here each row panel of C of about
/// 192 rows is zeroed (or scaled) just before the kernel first adds into
/// it, while it is in cache. Each element of C gets the same operations in the same
/// order as in Eigen's product, so the result is the same bits; the panels
/// start at multiples of the kernel's row tile (Traits::mr), which is also
/// how the packed block of A is laid out.
template <class T, int LhsOrder, int RhsOrder>
void gemm_loop(index rows, index cols, index depth, const T* a, index lda, const T* b, index ldb, T* c, index ldc,
               T alpha, T beta) {
  namespace ei = Eigen::internal;
  using traits = ei::gebp_traits<T, T>;
  using lhs_mapper = ei::const_blas_data_mapper<T, index, LhsOrder>;
  using rhs_mapper = ei::const_blas_data_mapper<T, index, RhsOrder>;
  using res_mapper = ei::blas_data_mapper<T, index, Eigen::ColMajor, Eigen::Unaligned, 1>;
  ei::gemm_pack_lhs<T, index, lhs_mapper, traits::mr, traits::LhsProgress, typename traits::LhsPacket4Packing,
                    LhsOrder>
      pack_lhs;
  ei::gemm_pack_rhs<T, index, rhs_mapper, traits::nr, RhsOrder> pack_rhs;
  ei::gebp_kernel<T, T, index, res_mapper, traits::mr, traits::nr, false, false> kernel;

  // The blocking of Eigen's product for these sizes on one thread
  // (gemm_blocking_space with l3 blocking).
  index kc = depth, mc = rows, nc = cols;
  ei::computeProductBlockingSizes<T, T, 1>(kc, mc, nc, index(1));
  mc = std::min(rows, mc);
  nc = std::min(cols, nc);
  struct aligned_free {
    void operator()(T* p) const { ei::aligned_free(p); }
  };
  const std::unique_ptr<T[], aligned_free> block_a(static_cast<T*>(ei::aligned_malloc(sizeof(T) * std::size_t(kc * mc))));
  const std::unique_ptr<T[], aligned_free> block_b(static_cast<T*>(ei::aligned_malloc(sizeof(T) * std::size_t(kc * nc))));

  const lhs_mapper lhs(a, lda);
  const rhs_mapper rhs(b, ldb);
  const res_mapper res(c, ldc);
  const bool pack_rhs_once = mc != rows && kc == depth && nc == cols;
  constexpr index panel = (192 + index(traits::mr) - 1) / index(traits::mr) * index(traits::mr);
  for (index i2 = 0; i2 < rows; i2 += mc) {
    const index m2 = std::min(i2 + mc, rows) - i2;
    for (index k2 = 0; k2 < depth; k2 += kc) {
      const index k = std::min(k2 + kc, depth) - k2;
      pack_lhs(block_a.get(), lhs.getSubMapper(i2, k2), k, m2);
      for (index j2 = 0; j2 < cols; j2 += nc) {
        const index n2 = std::min(j2 + nc, cols) - j2;
        if (!pack_rhs_once || i2 == 0) pack_rhs(block_b.get(), rhs.getSubMapper(k2, j2), k, n2);
        if (k2 != 0) {
          kernel(res.getSubMapper(i2, j2), block_a.get(), block_b.get(), m2, k, n2, alpha);
          continue;
        }
        // The first block of the depth: beta on each row panel of C, then
        // the kernel on it. The last panel takes the rows left over.
        for (index i = 0; i < m2;) {
          const index h = m2 - i < 2 * panel ? m2 - i : panel;
          if (beta != T(1)) {
            mut_map<T> cp(c + (i2 + i) + j2 * ldc, h, n2, Eigen::OuterStride<>(ldc));
            if (beta == T(0))
              cp.setZero();
            else
              cp *= beta;
          }
          kernel(res.getSubMapper(i2 + i, j2), block_a.get() + i * k, block_b.get(), h, k, n2, alpha);
          i += h;
        }
      }
    }
  }
}
#endif

/// Products of fewer multiply-adds than this run on the calling thread:
/// waking a pool thread costs more than it saves.
inline constexpr double parallel_product_work = double(1 << 21);

/// How a product's C is cut into blocks for the threads: `count` blocks of
/// `size` columns (or rows) each, the last one shorter.
struct product_split {
  index count = 1;
  index size = 0;
  bool by_rows = false;
};

/// One block per thread along C's longer side, for a product of
/// rows x cols x k multiply-adds on `team` threads; one block for a small
/// product. Column blocks are multiples of 16 columns and row blocks of 48
/// rows, so that Eigen's kernel computes every element of a block with the
/// same operations as in the whole product (its register tiles are 48 rows
/// of floats, 24 of doubles, with AVX-512, and divide 48 on every other
/// instruction set): the result is the same bits on any number of threads.
/// Blocks that share C's rows repack op(A) (for the 1024 x 4096 by 4096 x
/// 1024 GEMM, 2 blocks on one thread take 1.04 times the whole product's
/// time, 16 blocks 1.25 times), so there are no more blocks than threads.
inline product_split split_product(index rows, index cols, index k, int team) {
  product_split s;
  const bool by_rows = rows > cols;
  const index len = by_rows ? rows : cols, quantum = by_rows ? 48 : 16;
  s.size = len;
  s.by_rows = by_rows;
  if (team <= 1 || double(rows) * double(cols) * double(k) < parallel_product_work) return s;
  const index per = (len + team - 1) / team;
  s.size = std::max(quantum, (per + quantum - 1) / quantum * quantum);
  s.count = (len + s.size - 1) / s.size;
  return s;
}

/// C = alpha op(A) op(B) + beta C with C column-major, on polar::threads()
/// threads.
///
/// The threads compute independent blocks of C (split_product), each with
/// Eigen's single-threaded GEMM, and meet once, at the end, where the first
/// to finish sleeps (core/threads.hpp). Eigen's own threaded GEMM shares its
/// packed panels between threads and waits for them by spinning, many times
/// a product: on cores shared with other busy processes a Muon step took 12
/// times its quiet time (docs/threads.md).
template <class T>
void product(T alpha, const operand<T>& a, const operand<T>& b, T beta, mut_map<T> c) {
  const index k = a.trans ? a.rows : a.cols;
  const bool empty = c.size() == 0 || k == 0 || alpha == T(0);
  const product_split s = split_product(c.rows(), c.cols(), empty ? 0 : k, threads());
  // Block p of C is C's rows or columns [lo, lo + w) with lo = p * size:
  // rows [lo, lo + w) of op(A) times op(B), or op(A) times columns
  // [lo, lo + w) of op(B). Every block is written with maps of the same
  // type as the whole operands (a slice of M's rows or columns is M's map
  // moved and narrowed), so Eigen's GEMM is instantiated once per
  // combination of transposes, whichever way C is cut.
  const auto slice = [](const operand<T>& m, bool rows_of_op, index lo, index w) {
    // Rows of op(M) are M's rows when M is not transposed, its columns when it is.
    const bool m_rows = rows_of_op != m.trans;
    return m_rows ? const_map<T>(m.data + lo, w, m.cols, Eigen::OuterStride<>(m.ld))
                  : const_map<T>(m.data + lo * m.ld, m.rows, w, Eigen::OuterStride<>(m.ld));
  };
  const auto block = [&](index p) {
    const index lo = p * s.size, w = std::min(s.size, (s.by_rows ? c.rows() : c.cols()) - lo);
    mut_map<T> cb = s.by_rows ? mut_map<T>(c.data() + lo, w, c.cols(), Eigen::OuterStride<>(c.outerStride()))
                              : mut_map<T>(c.data() + lo * c.outerStride(), c.rows(), w,
                                           Eigen::OuterStride<>(c.outerStride()));
    const const_map<T> ma = s.by_rows ? slice(a, true, lo, w) : a.map();
    const const_map<T> mb = s.by_rows ? b.map() : slice(b, false, lo, w);
#if POLAR_EIGEN_GEMM_LOOP
    if (!empty && eigen_uses_gemm(cb.rows(), cb.cols(), k)) {
      // A transposed operand is a row-major one to Eigen's packing.
      using col = std::integral_constant<int, Eigen::ColMajor>;
      using row = std::integral_constant<int, Eigen::RowMajor>;
      const auto run = [&](auto lhs_order, auto rhs_order) {
        gemm_loop<T, decltype(lhs_order)::value, decltype(rhs_order)::value>(
            cb.rows(), cb.cols(), k, ma.data(), ma.outerStride(), mb.data(), mb.outerStride(), cb.data(),
            cb.outerStride(), alpha, beta);
      };
      if (!a.trans)
        b.trans ? run(col{}, row{}) : run(col{}, col{});
      else
        b.trans ? run(row{}, row{}) : run(row{}, col{});
      return;
    }
#endif
    if (beta == T(0))
      cb.setZero();
    else if (beta != T(1))
      cb *= beta;
    if (empty) return;
    if (!a.trans && !b.trans)
      cb.noalias() += alpha * ma * mb;
    else if (!a.trans && b.trans)
      cb.noalias() += alpha * ma * mb.transpose();
    else if (a.trans && !b.trans)
      cb.noalias() += alpha * ma.transpose() * mb;
    else
      cb.noalias() += alpha * ma.transpose() * mb.transpose();
  };
  if (s.count == 1) {
    const host::serial_eigen one;
    block(0);
  } else {
    host::parallel_tasks(s.count, block);
  }
}

/// Runs `f(mut_map, transposed)` on a writable column-major map of c: c
/// itself, its transpose, or a temporary copied back afterwards.
template <class T, class F>
void with_output(matrix_view<T> c, bool read_c, F&& f) {
  if (c.cols_contiguous()) {
    const index ld = c.cols() > 1 ? std::max(c.col_stride(), max1(c.rows())) : max1(c.rows());
    f(mut_map<T>(c.data(), c.rows(), c.cols(), Eigen::OuterStride<>(ld)), false);
  } else if (c.rows_contiguous()) {
    const index ld = c.rows() > 1 ? std::max(c.row_stride(), max1(c.cols())) : max1(c.cols());
    f(mut_map<T>(c.data(), c.cols(), c.rows(), Eigen::OuterStride<>(ld)), true);
  } else {
    cmatrix<T> tmp(c.rows(), c.cols());
    if (read_c)
      for (index j = 0; j < c.cols(); ++j)
        for (index i = 0; i < c.rows(); ++i) tmp(i, j) = c(i, j);
    f(mut_map<T>(tmp.data(), c.rows(), c.cols(), Eigen::OuterStride<>(max1(c.rows()))), false);
    for (index j = 0; j < c.cols(); ++j)
      for (index i = 0; i < c.rows(); ++i) c(i, j) = tmp(i, j);
  }
}

template <class T>
void gemm(T alpha, op op_a, matrix_view<const T> a, op op_b, matrix_view<const T> b, T beta,
          matrix_view<T> c) {
  const auto pa = as_operand(a, op_a);
  const auto pb = as_operand(b, op_b);
  with_output(c, beta != T(0), [&](mut_map<T> m, bool transposed) {
    if (!transposed) {
      product(alpha, pa, pb, beta, m);
    } else {
      // C^T = op(B)^T op(A)^T
      operand<T> ta, tb;
      ta.data = pb.data, ta.rows = pb.rows, ta.cols = pb.cols, ta.ld = pb.ld, ta.trans = !pb.trans;
      tb.data = pa.data, tb.rows = pa.rows, tb.cols = pa.cols, tb.ld = pa.ld, tb.trans = !pa.trans;
      product(alpha, ta, tb, beta, m);
    }
  });
}

/// Lower triangle of a diagonal block by Eigen's triangular rank update
/// (half the flops of a GEMM, one thread). The upper triangle is left as it
/// was.
template <class T>
void syrk_leaf(T alpha, op op_a, matrix_view<const T> a, T beta, matrix_view<T> c) {
  const index k = op_a == op::n ? a.cols() : a.rows();
  const auto pa = as_operand(a, op_a);
  // A strided block goes through a temporary copied back whole, so it is
  // read in full to leave its upper triangle as it was.
  with_output(c, true, [&](mut_map<T> m, bool transposed) {
    const index n = m.rows();
    for (index j = 0; j < n; ++j) {
      // Lower triangle of c: column j from the diagonal down; or, for the
      // transposed map, column j from the top to the diagonal.
      auto col = transposed ? m.col(j).head(j + 1) : m.col(j).tail(n - j);
      if (beta == T(0))
        col.setZero();
      else if (beta != T(1))
        col *= beta;
    }
    if (k == 0 || alpha == T(0)) return;
    if (!transposed) {
      if (pa.trans)
        m.template selfadjointView<Eigen::Lower>().rankUpdate(pa.map().transpose(), alpha);
      else
        m.template selfadjointView<Eigen::Lower>().rankUpdate(pa.map(), alpha);
    } else {
      if (pa.trans)
        m.template selfadjointView<Eigen::Upper>().rankUpdate(pa.map().transpose(), alpha);
      else
        m.template selfadjointView<Eigen::Upper>().rankUpdate(pa.map(), alpha);
    }
  });
}

/// Lower triangle of C = alpha op(A) op(A)^T + beta C, by recursive halving:
/// with op(A) = [A1; A2], the off-diagonal block C21 = A2 A1^T is one GEMM
/// (threaded by `product`) and C11, C22 recurse. Diagonal blocks of at most
/// `leaf` rows use Eigen's triangular kernel (one thread each). The two
/// halves run side by side on two threads when both are leaves, and always
/// on a team of two, where each half then runs on one thread; otherwise one
/// after the other, each threading its own GEMMs. The halving depends on n
/// alone, so the result is the same bits on any number of threads. The
/// upper triangle of C is not touched.
template <class T>
void syrk_lower(T alpha, op op_a, matrix_view<const T> a, T beta, matrix_view<T> c) {
  constexpr index leaf = 128;
  const index n = c.rows();
  const index k = op_a == op::n ? a.cols() : a.rows();
  const op op_bt = op_a == op::n ? op::t : op::n;
  auto rows_of = [&](index r0, index nr) { return op_a == op::n ? a.block(r0, 0, nr, k) : a.block(0, r0, k, nr); };
  if (n <= leaf) {
    const host::serial_eigen one;
    syrk_leaf(alpha, op_a, a, beta, c);
    return;
  }
  const index h = ((n / 2 + 15) / 16) * 16;
  gemm(alpha, op_a, rows_of(h, n - h), op_bt, rows_of(0, h), beta, c.block(h, 0, n - h, h));
  const auto half = [&](index p) {
    if (p == 0)
      syrk_lower(alpha, op_a, rows_of(0, h), beta, c.block(0, 0, h, h));
    else
      syrk_lower(alpha, op_a, rows_of(h, n - h), beta, c.block(h, h, n - h, n - h));
  };
  const int team = threads();
  const bool large = double(n) * double(n) * double(k) >= 2 * parallel_product_work;
  if (large && (team == 2 || (team > 2 && h <= leaf && n - h <= leaf))) {
    host::parallel_tasks(2, half);
  } else {
    half(0);
    half(1);
  }
}

/// How many columns of op(A) syrk reads in one pass (its panels have
/// between this and twice this many), or 0 for one pass over all of them.
/// The recursion reads each row of op(A) once per level; on panels of about
/// 2 MB (2^21 bytes, a core's L2 on the 2-core Xeon polar is measured on)
/// the later levels find it in cache. Measured against one pass, each timed
/// in turns with the full GEMM (two threads, float; docs/benchmarks.md):
/// 1024 x 4096 in panels of 512 columns 0.557-0.560 of the GEMM's time
/// against 0.583-0.590, 1024 x 1024 0.543-0.545 against 0.559-0.577, 512 x
/// 2048 0.576-0.580 against 0.582-0.597; but 2048 x 4096 in panels of 256
/// columns 0.579-0.587 against 0.544-0.553. So there are panels only where
/// 2 MB holds 512 columns or more.
template <class T>
index syrk_panel_columns(index n) {
  const index fit = (index(1) << 21) / (std::max<index>(n, 1) * index(sizeof(T))) / 16 * 16;
  return fit >= 512 ? fit : 0;
}

template <class T>
void syrk(uplo tri, T alpha, op op_a, matrix_view<const T> a, T beta, matrix_view<T> c) {
  // The upper triangle of C is the lower triangle of C^T, and op(A) op(A)^T
  // is symmetric, so both cases are one computation.
  const matrix_view<T> lower = tri == uplo::lower ? c : c.transpose();
  const index n = lower.rows(), k = op_a == op::n ? a.cols() : a.rows();
  const index most = syrk_panel_columns<T>(n);
  if (most == 0 || k < 2 * most) {
    syrk_lower(alpha, op_a, a, beta, lower);
    return;
  }
  // Panels of equal width (a multiple of 16, the last one narrower),
  // added in order: C = beta C + alpha P1 P1^T, then C += alpha Pi Pi^T.
  // They depend on the sizes alone, so the bits do not depend on the
  // thread count.
  const index panels = k / most, width = ((k + panels - 1) / panels + 15) / 16 * 16;
  for (index k0 = 0; k0 < k; k0 += width) {
    const index w = std::min(width, k - k0);
    const matrix_view<const T> p = op_a == op::n ? a.block(0, k0, n, w) : a.block(k0, 0, w, n);
    syrk_lower(alpha, op_a, p, k0 == 0 ? beta : T(1), lower);
  }
}

/// The mirror's tiles: 16 x 16, so a tile of floats is one 64-byte line
/// per row and a pair of tiles stays in L1 while one is read down its
/// columns.
inline constexpr index mirror_tile = 16;

/// dst(r, c) = src(c, r) for the rows x cols tile at dst, both with leading
/// dimension ld (row-major): written row by row, read down columns. Rows
/// and Cols are index, or full_tile for a whole tile, whose fixed trip
/// counts the compiler unrolls and vectorizes.
template <class T, class Rows, class Cols>
void transpose_tile(const T* src, T* dst, index ld, Rows rows, Cols cols) {
  for (index r = 0; r < rows; ++r)
    for (index c = 0; c < cols; ++c) dst[r * ld + c] = src[c * ld + r];
}
/// The side of a whole tile, as a compile-time constant.
using full_tile = std::integral_constant<index, mirror_tile>;

/// Row bi of tiles of the row-major n x n matrix at d (leading dimension
/// ld): the tiles (bi, bj), bj <= bi, of the strict lower triangle copied
/// onto the upper one (lower_from) or the other way.
template <class T>
void mirror_tile_row(T* d, index ld, index n, bool lower_from, index bi) {
  constexpr index b = mirror_tile;
  const index i0 = bi * b, i1 = std::min(n, i0 + b);
  for (index bj = 0; bj < bi; ++bj) {
    const index j0 = bj * b;
    T* lower = d + i0 * ld + j0;  // tile (bi, bj)
    T* upper = d + j0 * ld + i0;  // tile (bj, bi)
    const index h = i1 - i0;
    if (h == b)
      lower_from ? transpose_tile(lower, upper, ld, full_tile{}, full_tile{})
                 : transpose_tile(upper, lower, ld, full_tile{}, full_tile{});
    else
      lower_from ? transpose_tile(lower, upper, ld, b, h) : transpose_tile(upper, lower, ld, h, b);
  }
  for (index i = i0; i < i1; ++i)
    for (index j = i0; j < i; ++j) {
      if (lower_from)
        d[j * ld + i] = d[i * ld + j];
      else
        d[i * ld + j] = d[j * ld + i];
    }
}

/// Copies one triangle onto the other, in 16 x 16 tiles so that both the
/// reads and the transposed writes stay within a few cache lines. A
/// row-major or column-major C (the usual case) goes through raw pointers
/// and fixed-size tiles: 1024 x 1024 floats in 0.5 ms on one thread against
/// 2.2 ms through the view's run-time strides. Other strides take the view.
template <class T>
void symmetrize(uplo from, matrix_view<T> c) {
  const index n = c.rows();
  constexpr index b = mirror_tile;
  const index tiles = (n + b - 1) / b;
  // Row bi of tiles has bi + 1 of them: the pool's threads take rows one
  // at a time; small matrices stay on the calling thread.
  const auto each_row = [&](auto&& row) {
    if (n >= 256) {
      host::parallel_tasks(tiles, row);
    } else {
      for (index bi = 0; bi < tiles; ++bi) row(bi);
    }
  };
  if (n > 1 && (c.col_stride() == 1 || c.row_stride() == 1)) {
    // A column-major C is the transpose of a row-major one: its lower
    // triangle is that one's upper.
    const bool row_major = c.col_stride() == 1;
    const index ld = row_major ? c.row_stride() : c.col_stride();
    const bool lower_from = (from == uplo::lower) == row_major;
    T* d = c.data();
    each_row([=](index bi) { mirror_tile_row(d, ld, n, lower_from, bi); });
    return;
  }
  // Writing c^T's upper triangle from its lower one is the same operation.
  const matrix_view<T> s = from == uplo::lower ? c : c.transpose();
  each_row([=](index bi) {
    const index i0 = bi * b, i1 = std::min(n, i0 + b);
    for (index bj = 0; bj <= bi; ++bj) {
      const index j0 = bj * b, j1 = std::min(n, j0 + b);
      for (index i = i0; i < i1; ++i)
        for (index j = j0; j < std::min(j1, i); ++j) s(j, i) = s(i, j);
    }
  });
}

/// Copies a view into a column-major Eigen matrix.
template <class T>
cmatrix<T> to_eigen(matrix_view<const T> v) {
  cmatrix<T> m(v.rows(), v.cols());
  for (index j = 0; j < v.cols(); ++j)
    for (index i = 0; i < v.rows(); ++i) m(i, j) = v(i, j);
  return m;
}
template <class T, class M>
void from_eigen(const M& m, matrix_view<T> v) {
  for (index j = 0; j < v.cols(); ++j)
    for (index i = 0; i < v.rows(); ++i) v(i, j) = m(i, j);
}

template <class T>
void qr(matrix_view<const T> a, matrix_view<T> q, matrix_view<T> r) {
  const index m = a.rows(), n = a.cols();
  Eigen::HouseholderQR<cmatrix<T>> f(to_eigen(a));
  cmatrix<T> qm = f.householderQ() * cmatrix<T>::Identity(m, n);
  cmatrix<T> rm = f.matrixQR().topRows(n).template triangularView<Eigen::Upper>();
  for (index j = 0; j < n; ++j)
    if (rm(j, j) < T(0)) {
      rm.row(j) *= T(-1);
      qm.col(j) *= T(-1);
    }
  from_eigen<T>(qm, q);
  from_eigen<T>(rm, r);
}

template <class T>
void svd(matrix_view<const T> a, matrix_view<T> u, vector_view<T> s, matrix_view<T> v) {
  Eigen::BDCSVD<cmatrix<T>> f(to_eigen(a), Eigen::ComputeThinU | Eigen::ComputeThinV);
  if (f.info() != Eigen::Success)
    raise<numerical_error>("polar::svd", "the SVD of the ", a.rows(), "x", a.cols(),
                           " matrix did not converge");
  from_eigen<T>(f.matrixU(), u);
  from_eigen<T>(f.matrixV(), v);
  for (index i = 0; i < s.size(); ++i) s[i] = f.singularValues()(i);
}

template <class T>
void solve(matrix_view<const T> a, matrix_view<T> b) {
  const index n = a.rows();
  Eigen::PartialPivLU<cmatrix<T>> f(to_eigen(a));
  const auto& lu = f.matrixLU();
  T scale = T(0);
  for (index i = 0; i < n; ++i) scale = std::max(scale, std::abs(lu(i, i)));
  for (index i = 0; i < n; ++i) {
    const T p = lu(i, i);
    if (!(std::abs(p) > scale * T(n) * std::numeric_limits<T>::epsilon()) || !std::isfinite(p))
      raise<numerical_error>("polar::solve", "A (", n, "x", n,
                             ") is singular to working precision: pivot ", i, " is ", p,
                             " against a largest pivot of ", scale);
  }
  cmatrix<T> x = f.solve(to_eigen(matrix_view<const T>(b)));
  from_eigen<T>(x, b);
}

}  // namespace polar::detail::eigen_kernels
