// polar/geometry/detail/fused_sphere.hpp: one-pass Riemannian steps of the
// elementwise directions (SGD, momentum, Adam) on the row sphere, as row
// kernels that every backend runs through for_each_row (backend/rows.hpp):
// the host backends as threaded SIMD loops, CUDA as one kernel launch.
//
// The composed step (riemannian.hpp) is a sequence of about twenty generic
// operations, each a pass over the whole matrix: project G, update, project
// the update, retract, transport. For elementwise directions it is memory
// bound, so it costs about twenty Euclidean steps. Here each row is done at
// once: its dot products and norms are reduced while the row is in cache,
// then it is written, so W, G and the state are read and written once, as in
// the Euclidean step. Per row x (radius r), gradient g, learning rate lr:
//
//   c  = <x, g> / r^2,  gt = g - c x                 (Riemannian gradient)
//   u  = the direction's update from gt (momentum: buf; Adam: m and the
//        row's second moment, the mean of gt^2)
//   y  = x - lr u,  x <- r y / |y|                    (normalize retraction)
//   buf <- buf - <x, buf> / r^2 x                     (transport by projection)
//
// in two passes over a row for SGD (|y| follows from <x, g>, |g|, |x|) and
// momentum (|y| and <y, buf> follow from six sums of the first pass), and
// four for Adam (<x, g>; the first moment with |gt|^2; |y|^2 and <y, m>;
// then y, scaled, written with the transport of m), each after the first in
// the cache.
//
// Rows are written independently, so a row that cannot be put on the sphere
// must be found before any is written: the check kernel does that for the
// one case inputs meet (a zero row of W with nothing to step along: its
// gradient row and the direction's memory of it zero) in the pass over G
// that every step makes for NaN. A row whose step is still zero or
// overflows (a point off the sphere with an update that cancels it exactly,
// or an absurd learning rate) is left as it was and flagged, and the caller
// raises after the other rows took the step.
//
// The update of these directions is already tangent (a combination of
// tangent vectors, scaled per row), so the generic path's second projection
// is skipped; the two paths agree to rounding (tested). SGD's and momentum's
// sums are taken in T (float sums in blocks, then double: see
// row_sum_block), Adam's in double.
#pragma once

#include <cfloat>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "polar/backend/rows.hpp"
#include "polar/core/config.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/geometry/hypersphere.hpp"

namespace polar {
namespace detail {

/// Whether the fused row-sphere step exists for this direction.
template <class Direction>
inline constexpr bool has_fused_row_sphere_v =
    std::is_same_v<Direction, sgd_direction> || std::is_same_v<Direction, momentum_direction> ||
    std::is_same_v<Direction, adamw_direction>;

/// Whether a backend runs row kernels (for_each_row): every polar backend
/// does; a user's backend written before the operation existed takes the
/// generic sequence.
template <class Backend, class = void>
struct has_for_each_row : std::false_type {};
template <class Backend>
struct has_for_each_row<Backend, std::void_t<decltype(std::declval<Backend&>().for_each_row(
                                     std::declval<void (*)(int)>(), matrix_view<float>{}))>> : std::true_type {};

/// Whether a state suits the fused step (Adam's moment must be per row).
template <class State, class = void>
struct has_groups : std::false_type {};
template <class State>
struct has_groups<State, std::void_t<decltype(std::declval<const State&>().groups)>> : std::true_type {};
template <class State>
bool fused_state_ok(const State& s) {
  if constexpr (has_groups<State>::value)
    return s.groups == moment_groups::rows;
  else
    return true;
}

/// Whether a squared norm can be scaled to the radius.
POLAR_HOST_DEVICE bool scalable(double n2) { return n2 > 0 && n2 <= DBL_MAX; }

/// The checks of the fused step before it writes anything, in one pass
/// over G (the pass that the check of G for NaN and infinity makes in every
/// step): code 0 flags a row of G that holds NaN or infinity; code 1 a row
/// with nothing to step along, W's row zero, G's row zero and the
/// direction's memory of the row zero too (`memory`: the momentum buffer,
/// Adam's first moment; not read where has_memory is false). The generic
/// sequence finds such a row when it normalizes (numerical_error); the
/// fused kernel, which writes rows independently, would find it too late.
/// Only the rows whose gradient row is zero are read further.
template <class T>
struct sphere_check_kernel {
  /// The host asks ahead for the lines of G only: W and the memory are
  /// read only for a zero row of G.
  static constexpr unsigned streamed = 2u;
  bool has_memory;
  POLAR_HD_TEMPLATE
  template <class Row, class X, class G, class M>
  POLAR_HOST_DEVICE void operator()(const Row& row, X x, G g, M mem) const {
    // v - v is NaN for NaN and infinity, and NaN != 0.
    const auto k = row.sum([=](index j) {
      const T v = g[j];
      return sums<T, 2>{{(v - v) != T(0) ? T(1) : T(0), v != T(0) ? T(1) : T(0)}};
    });
    if (k[0] > 0) row.flag(0);
    if (k[1] > 0) return;
    const bool memory = has_memory;
    const double nonzero = row.sum([=](index j) {
      return T((x[j] != T(0) ? 1 : 0) + (memory && mem[j] != T(0) ? 1 : 0));
    });
    if (nonzero == 0) row.flag(1);
  }
};

/// Runs sphere_check_kernel and raises what it flagged: non_finite_error
/// for NaN or infinity in G, numerical_error naming the first row with
/// nothing to step along.
template <class Backend, class T>
void check_fused_rows(Backend& be, const char* op, matrix_view<const T> w, matrix_view<const T> g,
                      matrix_view<const T> memory, bool has_memory, double radius) {
  const index rows = w.rows(), cols = w.cols();
  describe_row_flags(op, "G holds NaN or infinity",
                     concat("W is zero and so is its gradient", has_memory ? " and the optimizer's memory of it" : "",
                            ": it has no direction to step in and cannot be scaled onto the sphere of radius ",
                            radius),
                     0);
  const row_flags f = be.for_each_row(sphere_check_kernel<T>{has_memory}, w, g, has_memory ? memory : g);
  if (f.any(0)) raise<non_finite_error>(op, "G (", rows, "x", cols, ") holds NaN or infinity");
  if (f.any(1))
    raise<numerical_error>(op, "row ", f.first[1], " of the ", rows, "x", cols,
                           " matrix W is zero and so is its gradient",
                           has_memory ? " and the optimizer's memory of it" : "",
                           ": it has no direction to step in and cannot be scaled onto the sphere of radius ", radius,
                           " (W and the state are unchanged)");
}

/// The direction's memory of each row that the check reads (rows x cols),
/// and whether it is kept.
template <class Backend, class T>
std::pair<matrix_view<const T>, bool> fused_memory(const sgd_direction&,
                                                  const typename sgd_direction::template state<Backend, T>&) {
  return {matrix_view<const T>(), false};
}
template <class Backend, class T>
std::pair<matrix_view<const T>, bool> fused_memory(const momentum_direction& dir,
                                                  const typename momentum_direction::template state<Backend, T>& s) {
  return {row_major_view(static_cast<const T*>(s.buf.data()), s.rows, s.cols, -1, Backend::space),
          dir.momentum != 0};
}
template <class Backend, class T>
std::pair<matrix_view<const T>, bool> fused_memory(const adamw_direction& dir,
                                                  const typename adamw_direction::template state<Backend, T>& s) {
  return {row_major_view(static_cast<const T*>(s.m.data()), s.rows, s.cols, -1, Backend::space), dir.beta1 != 0};
}

// SGD in two passes over a row: the sums <x, g>, |g|^2, |x|^2 give |y|^2 for
// y = x - lr gt without forming y, then x <- r y / |y| is written at once.
// Flags code 0 on a row whose step cannot be scaled (left as it was).
template <class T>
struct sphere_sgd_kernel {
  double r, inv_r2, lr;
  POLAR_HD_TEMPLATE
  template <class Row, class X, class G>
  POLAR_HOST_DEVICE void operator()(const Row& row, X x, G g) const {
    const auto s = row.sum([=](index j) {
      const T xj = x[j], gj = g[j];
      return sums<T, 3>{{xj * gj, gj * gj, xj * xj}};
    });
    const double xg = s[0], gg = s[1], xx = s[2];
    const double c = xg * inv_r2;
    double gt2 = gg - 2 * c * xg + c * c * xx;  // |g - c x|^2
    if (gt2 < 0) gt2 = 0;
    const double xgt = xg - c * xx;  // <x, g - c x>
    const double y2 = xx - 2 * lr * xgt + lr * lr * gt2;
    if (!scalable(y2)) {
      row.flag(0);
      return;
    }
    // x <- s (x - lr (g - c x)) = s (1 + lr c) x - s lr g: two operations
    // an element, as in the Euclidean step.
    const double sc = r / sqrt(y2);
    const T ax = T(sc * (1 + lr * c)), ag = T(sc * lr);
    row.for_each([=](index j) { x[j] = T(ax * x[j] - ag * g[j]); });
  }
};

// Momentum. Pass 1: b' = mu b + cg g and q = ug g + ub b' (u before the
// projection terms), with the sums that give everything else:
//   u = q - c (ug + ub cg) x,  y = alpha x - lr q,  b_new = b' - cg c x.
// Without Nesterov q = b' (ug = 0, ub = 1): <x, q> = <x, b'> and
// <q, q> = <q, b'> = |b'|^2, so four sums and no q, and pass 2 does not
// read g (Nest false).
template <class T, bool Nest>
struct sphere_momentum_kernel {
  double r, inv_r2, lr, cg, ug, ub;
  T mu;
  POLAR_HD_TEMPLATE
  template <class Row, class X, class G, class B>
  POLAR_HOST_DEVICE void operator()(const Row& row, X x, G g, B b) const {
    const T tmu = mu, tcg = T(cg), tug = T(ug), tub = T(ub);
    double xg, xx, xq, qq, xb, qb;
    if constexpr (Nest) {
      const auto s = row.sum([=](index j) {
        const T bp = T(tmu * b[j] + tcg * g[j]);
        b[j] = bp;
        const T xj = x[j], gj = g[j];
        const T q = tug * gj + tub * bp;
        return sums<T, 6>{{xj * gj, xj * xj, xj * bp, q * q, xj * q, q * bp}};
      });
      xg = s[0], xx = s[1], xb = s[2], qq = s[3], xq = s[4], qb = s[5];
    } else {
      const auto s = row.sum([=](index j) {
        const T bp = T(tmu * b[j] + tcg * g[j]);
        b[j] = bp;
        const T xj = x[j], gj = g[j];
        return sums<T, 4>{{xj * gj, xj * xj, xj * bp, bp * bp}};
      });
      xg = s[0], xx = s[1], xb = s[2], qq = s[3];
      xq = xb;
      qb = qq;
    }
    const double c = xg * inv_r2, k = cg * c;
    const double alpha = 1 + lr * c * (ug + ub * cg);
    const double n2 = alpha * alpha * xx - 2 * alpha * lr * xq + lr * lr * qq;
    const double yb = alpha * xb - alpha * k * xx - lr * qb + lr * k * xq;  // <y, b_new>
    if (!scalable(n2)) {
      row.flag(0);  // x is left as it was, the buffer holds b'
      return;
    }
    const double sc = r / sqrt(n2);
    // Pass 2: x <- r y / |y| = s (alpha x - lr (ug g + ub b')), and
    // b <- b_new - <x, b_new> x / r^2 = b' - k x - cb x_new, with the
    // constants multiplied out.
    const T kt = T(k), cb = T(sc * yb * inv_r2);
    const T ax = T(sc * alpha), ab = T(sc * lr * ub), ag = T(sc * lr * ug);
    row.for_each([=](index j) {
      const T xj = x[j], bj = b[j];
      T xn = T(ax * xj - ab * bj);
      if constexpr (Nest) xn = T(xn - ag * g[j]);
      x[j] = xn;
      b[j] = T(bj - kt * xj - cb * xn);
    });
  }
};

// Adam with one second moment per row (v, a vector of rows elements), in
// four passes: <x, g>; the first moment with |gt|^2; |y|^2 and <y, m>;
// then y scaled onto the sphere, with the transport of m.
template <class T>
struct sphere_adam_kernel {
  static constexpr unsigned streamed = 3u;  // x and g: m is first read by the second sum
  T* v;
  double r, inv_r2, lr_over_bc1, inv_sqrt_bc2, eps;
  T b1, b2;
  POLAR_HD_TEMPLATE
  template <class Row, class X, class G, class M>
  POLAR_HOST_DEVICE void operator()(const Row& row, X x, G g, M m) const {
    const index n = row.cols();
    const double xg = row.sum([=](index j) { return double(x[j]) * double(g[j]); });
    const T c = T(xg * inv_r2), tb1 = b1;
    const double gt2 = row.sum([=](index j) {
      const T gt = T(g[j] - c * x[j]);
      m[j] = T(tb1 * m[j] + (T(1) - tb1) * gt);
      return double(gt) * double(gt);
    });
    T* const vi = v + row.row();
    const T vn = T(b2 * *vi + (T(1) - b2) * T(gt2 / double(n)));
    row.single([=] { *vi = vn; });
    const T f = T(-lr_over_bc1 / (sqrt(double(vn)) * inv_sqrt_bc2 + eps));
    const auto s = row.sum([=](index j) {
      const T y = T(x[j] + f * m[j]);
      return sums<double, 2>{{double(y) * double(y), double(y) * double(m[j])}};
    });
    const double n2 = s[0], ym = s[1];
    if (!scalable(n2)) {
      row.flag(0);  // x is left as it was, the moments took the step
      return;
    }
    // x <- r y / |y|, and m moved to the new tangent space:
    // m <- m - <x, m> x / r^2 with <x, m> = <y, m> r / |y|.
    const double sc = r / sqrt(n2);
    const T scale = T(sc), cb = T(ym * sc * inv_r2);
    row.for_each([=](index j) {
      const T y = T(x[j] + f * m[j]);
      const T xj = T(y * scale);
      x[j] = xj;
      m[j] = T(m[j] - cb * xj);
    });
  }
};

/// Describes the flag of the fused steps' kernels for a deferred check.
inline void describe_sphere_step(const hypersphere& sph) {
  describe_row_flags("polar::riemannian::step",
                     concat("its step is zero or overflows and cannot be scaled onto the sphere of radius ", sph.radius,
                            "; that row was left as it was, while the other rows and the optimizer state took the step"));
}

/// The fused steps: the first row whose step could not be scaled back onto
/// the sphere (left as it was), or rows when there is none. The kernels are
/// guarded (a deferred_checks scope's skip word stops them), and the step
/// count moves at `mark` (count_step).
template <class Backend, class T>
index fused_row_sphere(Backend& be, const sgd_direction& dir, const hypersphere& sph, matrix_view<T> w,
                       matrix_view<const T> g, typename sgd_direction::template state<Backend, T>& s,
                       std::size_t mark) {
  const double r = sph.radius;
  describe_sphere_step(sph);
  const row_flags f = be.for_each_row(guarded(sphere_sgd_kernel<T>{r, 1.0 / (r * r), dir.lr}), w, g);
  count_step(s.steps, mark);
  return f.first[0];
}

template <class Backend, class T>
index fused_row_sphere(Backend& be, const momentum_direction& dir, const hypersphere& sph, matrix_view<T> w,
                       matrix_view<const T> g, typename momentum_direction::template state<Backend, T>& s,
                       std::size_t mark) {
  const double r = sph.radius;
  // u = ug gt + ub buf: the buffer, or Nesterov's look-ahead (heavy ball:
  // gt + mu buf; EMA: (1 - mu) gt + mu buf).
  const double cg = dir.kind == momentum_kind::ema ? double(T(1 - dir.momentum)) : 1.0;
  const double ug = !dir.nesterov ? 0.0 : dir.kind == momentum_kind::heavy_ball ? 1.0 : double(T(1 - dir.momentum));
  const double ub = dir.nesterov ? double(T(dir.momentum)) : 1.0;
  const double lr = double(T(dir.lr));
  const auto b = row_major_view(s.buf.data(), w.rows(), w.cols(), -1, Backend::space);
  describe_sphere_step(sph);
  const row_flags f =
      dir.nesterov
          ? be.for_each_row(guarded(sphere_momentum_kernel<T, true>{r, 1.0 / (r * r), lr, cg, ug, ub, T(dir.momentum)}),
                            w, g, b)
          : be.for_each_row(
                guarded(sphere_momentum_kernel<T, false>{r, 1.0 / (r * r), lr, cg, ug, ub, T(dir.momentum)}), w, g, b);
  count_step(s.steps, mark);
  return f.first[0];
}

template <class Backend, class T>
index fused_row_sphere(Backend& be, const adamw_direction& dir, const hypersphere& sph, matrix_view<T> w,
                       matrix_view<const T> g, typename adamw_direction::template state<Backend, T>& s,
                       std::size_t mark) {
  const double r = sph.radius;
  const long t = s.steps + 1;
  const double bc1 = 1 - std::pow(dir.beta1, double(t)), bc2 = 1 - std::pow(dir.beta2, double(t));
  const auto m = row_major_view(s.m.data(), w.rows(), w.cols(), -1, Backend::space);
  describe_sphere_step(sph);
  const row_flags f = be.for_each_row(
      guarded(sphere_adam_kernel<T>{s.v.data(), r, 1.0 / (r * r), dir.lr / bc1, 1 / std::sqrt(bc2), dir.eps,
                                    T(dir.beta1), T(dir.beta2)}),
      w, g, m);
  count_step(s.steps, mark);
  return f.first[0];
}

}  // namespace detail
}  // namespace polar
