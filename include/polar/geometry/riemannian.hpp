// polar/geometry/riemannian.hpp: any direction composed with any geometry.
//
// One step of riemannian<Direction, Geometry> for a point W and gradient G:
//
//   g   = project_tangent(W, G)            the Riemannian gradient
//   d   = direction.update(g, state)       momentum, Adam moments, Muon's
//                                          polar factor, as in a Euclidean step
//   d   = tangent_part(W, d)               Adam's rescaling and Muon's
//                                          orthogonalization leave the tangent
//                                          space; the orthogonal projection
//                                          brings d back
//   W   = retract(W, d)
//   m   = transport(W, m)                  each momentum buffer of the state
//                                          moves to the tangent space at the
//                                          new W
//
// Adam's second moment is shared over the geometry's natural groups (one per
// matrix on the Stiefel manifold and the flat sphere, one per row or column
// on the row or column sphere), so its rescaling keeps d tangent.
//
// Named points of the space: riemannian_sgd<G>, riemannian_momentum<G>,
// riemannian_adam<G>, riemannian_muon<G>. With the euclidean geometry the
// step is the direction's own step, weight decay included. On a manifold
// weight decay must be 0 (the retraction would undo it).
//
// The debug mode (POLAR_DEBUG_CHECKS, on without NDEBUG) checks that W lies
// on the set before each step and raises value_error with the measured
// distance. The member check_point turns that on or off per optimizer (its
// default follows POLAR_CHECK_MANIFOLD, which follows POLAR_DEBUG_CHECKS);
// check_on_manifold() is the same check as a function.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

#include "polar/backend/concept.hpp"
#include "polar/core/config.hpp"
#include "polar/core/check.hpp"
#include "polar/core/detail/debug_checks.hpp"
#include "polar/core/detail/state_snapshot.hpp"
#include "polar/core/scratch.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/direction/muon.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/geometry/detail/common.hpp"
#include "polar/geometry/detail/fused_sphere.hpp"
#include "polar/geometry/euclidean.hpp"
#include "polar/geometry/hypersphere.hpp"

#ifndef POLAR_CHECK_MANIFOLD
#define POLAR_CHECK_MANIFOLD POLAR_DEBUG_CHECKS
#endif

namespace polar {

namespace detail {
template <class D, class = void>
struct has_weight_decay : std::false_type {};
template <class D>
struct has_weight_decay<D, std::void_t<decltype(std::declval<const D&>().weight_decay)>> : std::true_type {};

template <class G, class = void>
struct has_check_settings : std::false_type {};
template <class G>
struct has_check_settings<G, std::void_t<decltype(std::declval<const G&>().check_settings(""))>> : std::true_type {};

/// What a Riemannian step needs only while it runs: the geometry's
/// workspace, the tangent gradient and the increment, and the copy of the
/// direction's state taken before the retraction (polar/core/scratch.hpp).
template <class Backend, class T, class Geometry>
struct riemannian_scratch {
  typename Geometry::template workspace<Backend, T> ws;  ///< the geometry's scratch
  typename Backend::template buffer<T> g;  ///< the tangent gradient
  typename Backend::template buffer<T> d;  ///< the increment
  /// A copy of the direction's state taken before each step on a manifold,
  /// put back if the retraction refuses the step.
  state_snapshot<Backend, T> backup;
  /// Room for n elements in g and d.
  void reserve(Backend& be, index n) {
    if (g.size() < n) {
      g = be.template allocate<T>(n);
      d = be.template allocate<T>(n);
    }
  }
  /// Bytes held.
  std::size_t bytes() const { return workspace_bytes(ws) + buffer_bytes(g, d) + backup.bytes(); }
};

/// Direction{} with its weight decay set to 0 on a manifold (AdamW's default
/// of 0.01 would otherwise make every step on a manifold throw).
template <class D, bool Euclidean>
D default_direction() {
  D d{};
  if constexpr (!Euclidean && has_weight_decay<D>::value) d.weight_decay = 0;
  return d;
}
}  // namespace detail

/// A direction stepping on a geometry's set (see the header comment).
template <class Direction, class Geometry>
struct riemannian {
  static constexpr bool is_euclidean = std::is_same_v<Geometry, euclidean>;  ///< whether the step is the direction's own

  /// The direction's hyperparameters (weight decay 0 on a manifold).
  Direction direction = detail::default_direction<Direction, is_euclidean>();
  Geometry geometry{};  ///< the set and how steps return to it
  /// Check before each step that W lies on the set (check_on_manifold with
  /// the default tolerance); on by default in debug builds.
  bool check_point = POLAR_CHECK_MANIFOLD != 0;
  /// Use a fused kernel where one exists (SGD, momentum and Adam on the row
  /// sphere with the normalize retraction, a learning rate other than 0, on
  /// any backend with for_each_row); false runs the generic sequence, which gives the same
  /// result to rounding. Both refuse a zero row of W with nothing to step
  /// along (its gradient row and the direction's memory of it zero:
  /// numerical_error, nothing written).
  bool fast_paths = true;

  /// The per-matrix state: the direction's, and a pointer to the scratch a
  /// step uses (the geometry's workspace, the tangent gradient and
  /// increment, a copy of the direction's state): the state's own until an
  /// optimizer shares one among all its states (share_scratch).
  template <class Backend, class T>
  struct state {
    /// The scratch type a step of this state uses.
    using scratch_type = detail::riemannian_scratch<Backend, T, Geometry>;
    typename Direction::template state<Backend, T> dir;  ///< the direction's buffers
    std::shared_ptr<scratch_type> scratch;               ///< the step's scratch (not saved in checkpoints)
    index rows = 0;  ///< the rows of the matrix the state was made for
    index cols = 0;  ///< its columns
    long steps = 0;  ///< steps taken
    /// Uses the pool's scratch, for this state and the direction's, from now on.
    void share_scratch(scratch_pool& pool) {
      scratch = pool.get<scratch_type>();
      detail::share_scratch(dir, pool);
    }
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): the direction's state, the shape, the steps.
    template <class F>
    void visit(F& f) {
      f.nested("direction", dir);
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.value("steps", steps);
    }
  };

  /// A fresh state for the point W (checked to lie on the set in debug builds).
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    constexpr const char* op = "polar::riemannian::init";
    check_input(op, "W", w);
    state<Backend, T> s;
    s.rows = w.rows();
    s.cols = w.cols();
    if constexpr (detail::takes_moment_groups<Direction, Backend, T>::value)
      s.dir = direction.init(be, w, is_euclidean ? moment_groups::element : geometry.natural_groups());
    else
      s.dir = direction.init(be, w);
    if constexpr (!is_euclidean)
      if (check_point) check_on_manifold(be, geometry, w, detail::scratch_of(s.scratch).ws, -1, op);
    return s;
  }

  /// One step of W along the direction, kept on the set.
  /// @throws shape_error, value_error (hyperparameters; weight decay on a
  ///         manifold; in debug builds, W off the set), non_finite_error,
  ///         numerical_error (a step the retraction cannot take: a zero
  ///         row of the row sphere with nothing to step along); nothing is
  ///         written when it throws, with one exception: on the fused
  ///         row-sphere path, a row whose step cancels a point off the
  ///         sphere exactly, or overflows, is found only once other rows
  ///         are written; it is left as it was and the error says so.
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::riemannian::step";
    if constexpr (is_euclidean) {
      direction.step(be, w, g, s.dir);
    } else {
      bool fused = false;
      if constexpr (fusable<Backend>()) fused = takes_fast_path<Backend>() && detail::fused_state_ok(s.dir);
      // The fused kernel checks G for NaN in its own pass (check_fused_rows).
      detail::check_step_args(be, op, w, g, s.rows, s.cols, !fused);
      check(op);
      detail::debug_check_state(be, op, s);
      auto& scratch = detail::scratch_of(s.scratch);
      if (check_point) check_on_manifold(be, geometry, w, scratch.ws, -1, op);
      if constexpr (fusable<Backend>()) {
        if (fused) {
          geometry.check_radius(op);
          const auto [memory, has_memory] = detail::fused_memory<Backend, T>(direction, s.dir);
          detail::check_fused_rows(be, op, as_const(w), g, memory, has_memory, geometry.radius);
          // In a deferred_checks scope the kernels' flags go to slots and
          // bad is rows; the step counts move at the mark (count_step).
          const std::size_t mark = detail::deferred_mark();
          const index bad = detail::fused_row_sphere<Backend, T>(be, direction, geometry, w, g, s.dir, mark);
          detail::count_step(s.steps, mark);
          if (bad < w.rows())
            detail::raise<numerical_error>(
                op, "the step of row ", bad, " of the ", w.rows(), "x", w.cols(),
                " matrix W is zero or overflows and cannot be scaled onto the sphere of radius ", geometry.radius,
                "; that row was left as it was, while the other rows and the optimizer state took the step "
                "(a point off the sphere, or a learning rate of ",
                direction.lr, ")");
          return;
        }
      }
      scratch.reserve(be, s.rows * s.cols);
      const auto gt = row_major_view(scratch.g.data(), s.rows, s.cols, -1, Backend::space);
      const auto d = row_major_view(scratch.d.data(), s.rows, s.cols, -1, Backend::space);
      auto& ws = scratch.ws;
      geometry.project_tangent(be, as_const(w), g, gt, ws);
      // The retraction may refuse X + U (a group that overflowed or is
      // zero, a singular Cayley system) after the direction has moved its
      // state; it throws before writing W, and the state is put back.
      scratch.backup.save(be, s.dir);
      try {
        direction.update(be, as_const(gt), s.dir, d);
        geometry.tangent_part(be, as_const(w), as_const(d), d, ws);
        geometry.retract(be, w, as_const(d), ws);
      } catch (...) {
        scratch.backup.restore(be, s.dir);
        throw;
      }
      direction.for_each_tangent(s.dir, [&](auto v) { geometry.transport(be, as_const(w), v, ws); });
    }
    detail::count_step(s.steps);
  }

  /// Whether step() on Backend runs a fused kernel (see fast_paths).
  template <class Backend>
  bool takes_fast_path() const {
    if constexpr (fusable<Backend>())
      return fast_paths && geometry.scope == sphere_scope::rows && geometry.retraction == sphere_retraction::normalize &&
             direction.lr != 0;
    else
      return false;
  }

  /// Throws value_error for hyperparameters out of range, and for weight
  /// decay on a manifold.
  void check(const char* op = "polar::riemannian") const {
    direction.check(op);
    if constexpr (detail::has_check_settings<Geometry>::value) geometry.check_settings(op);
    if constexpr (!is_euclidean && detail::has_weight_decay<Direction>::value)
      if (direction.weight_decay != 0)
        detail::raise<value_error>(op, "weight_decay is ", direction.weight_decay,
                                   " but a step on a manifold cannot decay the weight (the retraction puts it "
                                   "back on the set); set it to 0");
  }
 private:
  template <class Backend>
  static constexpr bool fusable() {
    return std::is_same_v<Geometry, hypersphere> && detail::has_fused_row_sphere_v<Direction> &&
           detail::has_for_each_row<Backend>::value;
  }
};

/// Riemannian SGD on a geometry.
template <class Geometry>
using riemannian_sgd = riemannian<sgd_direction, Geometry>;
/// Riemannian SGD with transported (heavy-ball, EMA or Nesterov) momentum.
template <class Geometry>
using riemannian_momentum = riemannian<momentum_direction, Geometry>;
/// Riemannian Adam: transported first moment, second moment per natural group.
template <class Geometry>
using riemannian_adam = riemannian<adamw_direction, Geometry>;
/// Muon's orthogonalized momentum, projected and retracted.
template <class Geometry, class Orthogonalizer = newton_schulz>
using riemannian_muon = riemannian<muon_direction<Orthogonalizer>, Geometry>;

}  // namespace polar
