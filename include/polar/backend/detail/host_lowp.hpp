// polar/backend/detail/host_lowp.hpp: gemm_batched_lowp on host memory (the
// Eigen backend and Thrust's host systems). Not for users.
//
// The CPU has no 16-bit matrix units that Eigen uses, so each product is
// taken as the GPU's tensor cores take it, in float: the 16-bit operands
// are widened to float (exactly), multiplied by polar's float GEMM with
// float accumulation, and the result rounded once to 16 bits. The values
// are those of a float product of the 16-bit inputs; a GPU's sum order
// differs, so the bits may differ in the last place of float before the
// rounding to 16 bits.
#pragma once

#include <vector>

#include "polar/backend/detail/eigen_kernels.hpp"
#include "polar/backend/detail/host_loops.hpp"
#include "polar/core/lowp.hpp"
#include "polar/core/view.hpp"

namespace polar::detail::host {

/// Float copies of the operands of one product, kept from call to call so
/// that an iteration allocates nothing once they have their size.
struct lowp_scratch {
  std::vector<float> a, b, c;
};

/// x as a contiguous row-major float matrix in `to` (resized).
template <class H>
matrix_view<const float> widen(matrix_view<const H> x, std::vector<float>& to) {
  to.resize(std::size_t(x.rows() * x.cols()));
  const auto w = row_major_view(to.data(), x.rows(), x.cols(), -1, memory_space::host);
  map(from_lowp_fn<float>{}, w, x);
  return as_const(w);
}

/// C = alpha op(A) op(B) + beta C for each matrix of the stacks, in float,
/// rounded once to H (checked by the caller).
template <class H>
void gemm_batched_lowp(float alpha, op op_a, batch_view<const H> a, op op_b, batch_view<const H> b, float beta,
                       batch_view<H> c) {
  thread_local lowp_scratch s;
  for (index i = 0; i < c.count(); ++i) {
    const auto ci = c[i];
    if (ci.empty()) continue;
    const auto af = widen(a[i], s.a), bf = widen(b[i], s.b);
    const auto cf = row_major_view((s.c.resize(std::size_t(ci.rows() * ci.cols())), s.c.data()), ci.rows(),
                                   ci.cols(), -1, memory_space::host);
    if (beta != 0.0f) map(from_lowp_fn<float>{}, cf, as_const(ci));
    eigen_kernels::gemm(alpha, op_a, af, op_b, bf, beta, cf);
    map(to_lowp_fn<H>{}, ci, as_const(cf));
  }
}

/// symmetrize on each matrix of a stack (any element type, 16-bit ones
/// included): small matrices one per task of polar's pool, larger ones one
/// after another, each with the pool's threads.
template <class T>
void symmetrize_batched(uplo from, batch_view<T> c) {
  if (c.count() > 1 && c.rows() < 256) {
    parallel_tasks(c.count(), [&](index k) { eigen_kernels::symmetrize(from, c[k]); });
  } else {
    for (index k = 0; k < c.count(); ++k) eigen_kernels::symmetrize(from, c[k]);
  }
}

}  // namespace polar::detail::host
