// polar/geometry/detail/expm.hpp: the exponential of a small square matrix
// on any backend, for the Stiefel exponential map (2p x 2p and p x p).
//
// Scaling and squaring with the diagonal [6/6] Pade approximant: A is scaled
// by 2^-s so that |A / 2^s|_F <= 1/2, where the approximant's truncation
// error (m!)^2 / ((2m)! (2m+1)!) |A|^(2m+1) is below 3e-17; then
//
//   U = A (c1 I + c3 A^2 + c5 A^4),  V = c0 I + c2 A^2 + c4 A^4 + c6 A^6,
//   exp(A / 2^s) ~ (V - U)^-1 (V + U),
//
// squared s times. The Frobenius norm bounds the 2-norm, so the scaling is
// safe for any matrix; everything runs through the backend's gemm, map and
// solve, so the same code serves the host and the device.
#pragma once

#include <cmath>

#include "polar/core/scratch.hpp"
#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/functors.hpp"
#include "polar/orthogonalize/detail/stack_ops.hpp"

namespace polar {
namespace detail {

/// Buffers of expm for k x k matrices.
template <class Backend, class T>
struct expm_workspace {
  typename Backend::template buffer<T> a, a2, a4, v, u, w;
  void reserve(Backend& be, index k) {
    if (a.size() >= k * k) return;
    a = be.template allocate<T>(k * k);
    a2 = be.template allocate<T>(k * k);
    a4 = be.template allocate<T>(k * k);
    v = be.template allocate<T>(k * k);
    u = be.template allocate<T>(k * k);
    w = be.template allocate<T>(k * k);
  }
  /// Bytes held.
  std::size_t bytes() const { return buffer_bytes(a, a2, a4, v, u, w); }
};

/// out = exp(a) for the k x k matrix a; out must not share memory with a.
template <class Backend, class T>
void expm(Backend& be, matrix_view<const T> a, matrix_view<T> out, expm_workspace<Backend, T>& ws) {
  const index k = a.rows();
  ws.reserve(be, k);
  const auto sp = Backend::space;
  const auto A = row_major_view(ws.a.data(), k, k, -1, sp);
  const auto A2 = row_major_view(ws.a2.data(), k, k, -1, sp);
  const auto A4 = row_major_view(ws.a4.data(), k, k, -1, sp);
  const auto V = row_major_view(ws.v.data(), k, k, -1, sp);
  const auto U = row_major_view(ws.u.data(), k, k, -1, sp);
  const auto W = row_major_view(ws.w.data(), k, k, -1, sp);

  const double norm = double(be.norm(a));
  if (!std::isfinite(norm))
    raise<numerical_error>("polar::expm", "the ", k, "x", k, " matrix has norm ", norm,
                           ": its exponential is not finite");
  int s = 0;
  if (norm > 0.5) s = int(std::ceil(std::log2(norm / 0.5)));
  be.axpby(T(std::ldexp(1.0, -s)), a, T(0), A);

  // c_j = (2m - j)! m! / ((2m)! j! (m - j)!), m = 6.
  double c[7];
  c[0] = 1;
  for (int j = 1; j <= 6; ++j) c[j] = c[j - 1] * double(6 - j + 1) / (double(j) * double(12 - j + 1));

  be.gemm(T(1), op::n, as_const(A), op::n, as_const(A), T(0), A2);
  be.gemm(T(1), op::n, as_const(A2), op::n, as_const(A2), T(0), A4);
  // V = c6 A^6 + c4 A^4 + c2 A^2 + c0 I
  be.copy(as_const(A4), W);
  be.axpby(T(c[2]), as_const(A2), T(c[4]), W);
  be.gemm(T(c[6]), op::n, as_const(A4), op::n, as_const(A2), T(0), V);
  be.axpby(T(1), as_const(W), T(1), V);
  add_to_diagonal(be, T(c[0]), V);
  // U = A (c5 A^4 + c3 A^2 + c1 I)
  be.copy(as_const(A4), W);
  be.axpby(T(c[3]), as_const(A2), T(c[5]), W);
  add_to_diagonal(be, T(c[1]), W);
  be.gemm(T(1), op::n, as_const(A), op::n, as_const(W), T(0), U);
  // out = (V - U)^-1 (V + U)
  be.map(plus_fn<T>{}, out, as_const(V), as_const(U));
  be.axpby(T(-1), as_const(U), T(1), V);
  be.solve(as_const(V), out);
  // Square s times, ping-ponging through W.
  for (int i = 0; i < s; ++i) {
    be.gemm(T(1), op::n, as_const(out), op::n, as_const(out), T(0), W);
    be.copy(as_const(W), out);
  }
}

}  // namespace detail
}  // namespace polar
