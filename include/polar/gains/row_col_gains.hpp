// polar/gains/row_col_gains.hpp: magnitude-direction decoupling.
//
// Each weight matrix is factored as
//
//   W = diag(phi(r)) D diag(phi(c)),
//
// where D lies on a sphere of fixed norm (the whole matrix, each row or each
// column: polar::hypersphere) and r, c are raw per-row and per-column gains
// mapped by phi (softplus, or the identity) and floored so that D stays
// finite. D is stepped by a base direction (AdamW, Muon, any other); the raw
// gains by their own direction (AdamW by default) at their own learning rate.
// The model keeps seeing one fused weight: after every step W is written back
// into the caller's tensor.
//
// With P = D . G (elementwise), the chain rule through the fused weight gives
//
//   dL/dD        = G . phi(r) phi(c)^T
//   dL/dphi(r)_i = sum_j P_ij phi(c)_j        (P phi(c))
//   dL/dphi(c)_j = sum_i P_ij phi(r)_i        (P^T phi(r))
//   dL/dr        = dL/dphi(r) . phi'(r)       (sigmoid for softplus)
//
// and one step is: split G as above; optionally project dL/dD onto the
// sphere's tangent space; step D with the base direction and project it back
// onto its sphere; step r and c with the gains' direction; write
// W = phi(r) D phi(c). docs/gains.md has the derivation, the defaults and the
// measured costs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "polar/core/config.hpp"
#include "polar/core/detail/debug_checks.hpp"
#include "polar/core/detail/state_snapshot.hpp"
#include "polar/core/error.hpp"
#include "polar/core/scratch.hpp"
#include "polar/core/tensor.hpp"
#include "polar/core/view.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/detail/common.hpp"
#include "polar/direction/muon.hpp"
#include "polar/gains/detail/fused_md.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/manifold_muon.hpp"
#include "polar/geometry/riemannian.hpp"

namespace polar {

/// phi, the map from a raw gain to the gain the weight is scaled by.
enum class gain_map {
  softplus,  ///< log(1 + e^x): always positive; raw gains start at softplus^-1 of the scale
  identity   ///< x itself: raw gains must stay positive (they are floored after each step)
};

/// Which gains the factorization has.
enum class gain_scope {
  both,    ///< one per row and one per column
  rows,    ///< one per row
  cols,    ///< one per column
  scalar   ///< one for the whole matrix
};

namespace detail {

/// max(floor, phi(x)).
template <class T>
struct gain_phi_fn {
  bool softplus;
  T floor;
  POLAR_HOST_DEVICE T operator()(T x) const {
    T y = x;
    if (softplus) y = x > T(20) ? x : T(std::log1p(std::exp(x)));
    return y > floor ? y : floor;
  }
};

/// Every element set to phi of the one scalar gain at *raw (in the
/// backend's memory), so that the gain is not read back to the host.
template <class T>
struct scalar_gain_fn {
  gain_phi_fn<T> phi;
  const T* raw;
  POLAR_HOST_DEVICE void operator()(T& out) const { out = phi(*raw); }
};

/// g * phi'(x), from y = phi(x) (floored, as gain_phi_fn gives it): 0 where
/// the floor holds phi constant (y at the floor); else 1 for the identity,
/// and for softplus sigmoid(x) = 1 - e^-y (since e^y = 1 + e^x), one
/// transcendental function where sigmoid of x would need two more to find
/// phi for the floor.
template <class T>
struct gain_chain_fn {
  bool softplus;
  T floor;
  POLAR_HOST_DEVICE T operator()(T g, T y) const {
    if (!(y > floor)) return T(0);
    if (!softplus) return g;
    return T(g * -std::expm1(-y));
  }
};

/// p = phi(raw) where raw differs from seen (the gain p was computed from),
/// and seen = raw: phi of the gains that changed since (fused_gain_values).
template <class T>
struct gain_refresh_fn {
  gain_phi_fn<T> phi;
  POLAR_HOST_DEVICE void operator()(T& p, T& seen, const T& raw) const {
    if (!(raw == seen)) {
      p = phi(raw);
      seen = raw;
    }
  }
};

/// phi^-1(y) for y > 0: log(expm1(y)) for softplus (y itself when e^-y is
/// below rounding), y for the identity.
template <class T>
struct gain_inverse_fn {
  bool softplus;
  POLAR_HOST_DEVICE T operator()(T y) const {
    if (!softplus) return y;
    return y > T(20) ? y : T(std::log(std::expm1(y)));
  }
};

template <class D, class = void>
struct has_scale_rule : std::false_type {};
template <class D>
struct has_scale_rule<D, std::void_t<decltype(std::declval<D&>().scale = scale_rule::aspect)>> : std::true_type {};

/// D's direction by default: weight decay 0 (D is projected onto its sphere)
/// and, for Muon, the scale sqrt(max(rows / cols, cols / rows)) of the MD
/// reference: the orthogonal update's entries then have the RMS of D's, so a
/// step moves D by the same fraction whatever its shape.
template <class D>
D md_default_direction() {
  D d = default_direction<D, false>();
  if constexpr (has_scale_rule<D>::value) d.scale = scale_rule::aspect;
  return d;
}

/// Whether the direction keeps its point on a manifold of its own (a
/// Riemannian direction on a non-Euclidean geometry, manifold Muon); `of`
/// gives that geometry. D then lives on it instead of row_col_gains' sphere.
template <class D>
struct own_manifold : std::false_type {};
template <class Dir, class Geometry>
struct own_manifold<riemannian<Dir, Geometry>> : std::bool_constant<!std::is_same_v<Geometry, euclidean>> {
  static const Geometry& of(const riemannian<Dir, Geometry>& d) { return d.geometry; }
};
template <class Orth>
struct own_manifold<manifold_muon<Orth>> : std::true_type {
  static stiefel<Orth> of(const manifold_muon<Orth>& d) { return d.geometry(); }
};

/// 0 for x >= floor, NaN below it (or for NaN): the indicator whose
/// non-finite entries a deferred check counts.
template <class T>
struct below_floor_fn {
  T floor;
  T nan;  ///< a quiet NaN, made on the host
  POLAR_HOST_DEVICE T operator()(T x) const { return x >= floor ? T(0) : nan; }
};
/// x <- max(floor, x): identity gains projected back onto [floor, inf),
/// in place (guarded in a deferred_checks scope).
template <class T>
struct floor_step {
  T floor;
  POLAR_HOST_DEVICE void operator()(T& x) const { x = x > floor ? x : floor; }
};

/// y / s.
template <class T>
struct divide_by_fn {
  T s;
  POLAR_HOST_DEVICE T operator()(T y) const { return T(y / s); }
};

/// What an MD step needs only while it runs: dL/dD (rows x cols), the
/// sphere's workspace, and the copy of the state taken before a step of the
/// generic sequence (polar/core/scratch.hpp).
template <class Backend, class T>
struct md_scratch {
  typename Backend::template buffer<T> p;                   ///< dL/dD, rows x cols
  typename hypersphere::template workspace<Backend, T> ws;  ///< the sphere's scratch
  state_snapshot<Backend, T> backup;                        ///< the state before the step
  /// The fused step's sums per row: |D_i|^2, then sum_j P_ij (2 rows).
  typename Backend::template buffer<double> rsum;
  /// Its column sums in double, where D's columns lie on spheres: the
  /// column gains' gradients (when there are column gains), then |D_:j|^2.
  typename Backend::template buffer<double> csum;
  /// The totals of rsum's two rows, on the device (a deferred step).
  typename Backend::template buffer<double> totals;
  /// Room for n elements in p.
  void reserve(Backend& be, index n) {
    if (p.size() < n) p = be.template allocate<T>(n);
  }
  /// Room for the fused step's sums of a rows x cols matrix.
  void reserve_sums(Backend& be, index rows, index cols) {
    if (rsum.size() < 2 * rows) rsum = be.template allocate<double>(2 * rows);
    if (csum.size() < 2 * cols) csum = be.template allocate<double>(2 * cols);
    if (totals.size() < 2) totals = be.template allocate<double>(2);
  }
  /// Bytes held.
  std::size_t bytes() const {
    return buffer_bytes(p) + ws.bytes() + backup.bytes() + buffer_bytes(rsum) + buffer_bytes(csum) +
           buffer_bytes(totals);
  }
};

/// Whether a visitor of states holds the backend as `be` (polar's visitors
/// that read or write buffers do), so that a state can settle through it.
template <class F, class = void>
struct visitor_has_backend : std::false_type {};
template <class F>
struct visitor_has_backend<F, std::void_t<decltype(std::declval<F&>().be)>> : std::true_type {};
}  // namespace detail

/// Magnitude-direction decoupling over a base direction (see the header
/// comment). A plain aggregate of hyperparameters:
///
///   polar::md_adamw opt;                 // AdamW on D, Adam on the gains
///   opt.direction.lr = 3e-3;             // D's learning rate
///   opt.gain_direction.lr = 1e-2;        // the gains' own
///   auto s = opt.init(be, W);            // W is read, not written
///   opt.step(be, W, G, s);               // W <- phi(r) D phi(c), stepped
template <class Direction, class GainDirection = adamw_direction>
struct row_col_gains {
  /// Whether D lives on the direction's own manifold (Riemannian Adam on
  /// Stiefel, manifold Muon, ...) rather than on a sphere of `sphere` and
  /// `radius`: init() projects D onto that manifold, the direction's step
  /// keeps it there, and no sphere projection follows. `sphere` must then be
  /// flat and `radius` 0, and the gains absorb ||W||_F / ||D||_F.
  static constexpr bool on_direction_manifold = detail::own_manifold<Direction>::value;

  /// Steps D (weight decay 0 by default: D is projected onto its sphere).
  Direction direction = detail::md_default_direction<Direction>();
  /// Steps the raw gains (AdamW with weight decay 0 by default).
  GainDirection gain_direction = detail::default_direction<GainDirection, false>();
  gain_map phi = gain_map::softplus;     ///< raw gain -> gain
  gain_scope gains = gain_scope::both;   ///< which gains there are
  sphere_scope sphere = sphere_scope::flat;  ///< which groups of D have a fixed norm
  /// Each group's norm; 0 (the default) makes ||D||_F = sqrt(max(rows, cols))
  /// for every scope: that norm for flat, sqrt(max(rows, cols) / rows) a row,
  /// sqrt(max(rows, cols) / cols) a column.
  double radius = 0;
  double floor = 1e-8;                   ///< gains are at least this, so D stays finite
  bool project_gradient = false;         ///< project dL/dD onto the tangent space before the base step
  /// true: the gains start at W's scale (the flat sphere's scale, the row
  /// or column norms), so the fused weight of the fresh state is W to
  /// rounding; false: they start at phi^-1(1) and D at W projected onto its
  /// sphere, so the first step drops W's scale (the reference's start,
  /// which is the same when W already lies on D's sphere).
  bool absorb_scale = true;
  /// Use the fused step where it applies (AdamW on D, a backend with row
  /// kernels and column sums, unit column strides, no gradient projection,
  /// lr * weight_decay not 1);
  /// false runs the generic sequence, which gives the same result to
  /// rounding. With lr * weight_decay = 1 the decay takes D to zero, and a
  /// row of D whose update is zero too is refused; the generic sequence
  /// refuses it before writing anything, the fused kernel could only after.
  bool fast_paths = true;

  /// The per-matrix state: D, the raw gains, their directions' states and scratch.
  template <class Backend, class T>
  struct state {
    typename Backend::template buffer<T> d;        ///< the direction D, rows x cols
    typename Backend::template buffer<T> r;  ///< raw row gains (one, for a scalar gain)
    typename Backend::template buffer<T> c;  ///< raw column gains
    typename Direction::template state<Backend, T> dir;            ///< D's direction state
    typename GainDirection::template state<Backend, T> r_dir;  ///< the row gains' direction state
    typename GainDirection::template state<Backend, T> c_dir;  ///< the column gains'
    typename Backend::template buffer<T> pr;  ///< phi(r)
    typename Backend::template buffer<T> pc;  ///< phi(c)
    typename Backend::template buffer<T> gr;  ///< the gradient of r
    typename Backend::template buffer<T> gc;  ///< the gradient of c
    /// The scratch type a step of this state uses.
    using scratch_type = detail::md_scratch<Backend, T>;
    /// The step's scratch: dL/dD, the sphere's workspace, the copy of the
    /// state taken before a step of the generic sequence (not saved in
    /// checkpoints). The state's own until an optimizer shares one among
    /// all its states (share_scratch).
    std::shared_ptr<scratch_type> scratch;
    index rows = 0;  ///< the rows of the matrix the state was made for
    index cols = 0;  ///< its columns
    long steps = 0;  ///< steps taken
    /// After a fused step, D is d with factors pending,
    /// D_ij = d_ij d_rows_i d_cols_j (the step then need not write D back;
    /// see gains/detail/fused_md.hpp): d_rows while rows_pending, d_cols
    /// (ones otherwise) while cols_pending. settle() applies them, and every
    /// member function of row_col_gains that reads D does so first, as does
    /// visit() (and so checkpoints) through a visitor that holds the backend
    /// as `be`: call settle() before reading `d` yourself.
    typename Backend::template buffer<T> d_rows;
    typename Backend::template buffer<T> d_cols;  ///< the column factors pending for d (see d_rows)
    bool rows_pending = false;                    ///< whether d_rows are pending for d
    bool cols_pending = false;                    ///< whether d_cols are pending for d
    /// The raw gains (r, then c) that pr and pc hold phi of, as the fused
    /// step last saw them (not saved in checkpoints): it recomputes phi only
    /// where a gain differs, so that a gain set by hand or loaded is seen
    /// without a transcendental function for every gain on every step.
    typename Backend::template buffer<T> seen;
    bool seen_valid = false;     ///< whether seen, seen_floor and seen_softplus hold
    double seen_floor = 0;       ///< the floor of phi that pr and pc were computed with
    bool seen_softplus = false;  ///< whether that phi was softplus
    /// Uses the pool's scratch, for this state and D's direction, from now on.
    void share_scratch(scratch_pool& pool) {
      scratch = pool.get<scratch_type>();
      detail::share_scratch(dir, pool);
    }
    /// Whether factors are pending for d (see d_rows).
    bool pending() const noexcept { return rows_pending || cols_pending; }
    /// d <- D: applies the pending factors (see d_rows), one pass over d.
    void settle(Backend& be) {
      if (!pending()) return;
      const auto dv = row_major_view(d.data(), rows, cols, -1, Backend::space);
      if (cols_pending)
        be.for_each_row(detail::md_settle_kernel<T, true>{d_rows.data(), d_cols.data()}, dv);
      else
        be.for_each_row(detail::md_settle_kernel<T, false>{d_rows.data(), nullptr}, dv);
      rows_pending = cols_pending = false;
    }
    /// Lists what a checkpoint keeps (polar/checkpoint.hpp): D, the raw
    /// gains, the three directions' states, the shape, the steps. D is
    /// settled first through f.be, where the visitor has it.
    template <class F>
    void visit(F& f) {
      if constexpr (detail::visitor_has_backend<F>::value) settle(f.be);
      seen_valid = false;
      f.buffer("d", d);
      f.buffer("r", r);
      f.buffer("c", c);
      f.nested("direction", dir);
      f.nested("row_gains", r_dir);
      f.nested("col_gains", c_dir);
      f.shape("rows", rows);
      f.shape("cols", cols);
      f.value("steps", steps);
    }
  };

  /// The sphere D lives on, for a rows x cols weight.
  hypersphere geometry(index rows, index cols) const {
    hypersphere h;
    h.scope = sphere;
    if (radius > 0) {
      h.radius = radius;
    } else {
      const double big = double(rows > cols ? rows : cols);
      h.radius = sphere == sphere_scope::flat   ? std::sqrt(big)
                 : sphere == sphere_scope::rows ? std::sqrt(big / double(rows))
                                                : std::sqrt(big / double(cols));
    }
    return h;
  }

  /// A fresh state for W; W is read, never written.
  /// @throws numerical_error when D cannot be normalized (a zero W, row or
  ///         column, by the sphere's scope), value_error for hyperparameters
  ///         out of range or gains that cannot carry the sphere's norms.
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, matrix_view<U> w) const {
    constexpr const char* op = "polar::row_col_gains::init";
    check(op);
    check_input(op, "W", w);
    // D and the gains are W's direction and norms: NaN or infinity in W
    // would make all of them NaN.
    if (!be.all_finite(w))
      detail::raise<non_finite_error>(op, "W (", w.rows(), "x", w.cols(), ") holds NaN or infinity");
    const index m = w.rows(), n = w.cols();
    const bool absorb_cols = sphere == sphere_scope::cols || (sphere == sphere_scope::flat && !has_rows() && has_cols());
    if (absorb_scale && sphere == sphere_scope::rows && !has_rows())
      detail::raise<value_error>(op, "D's rows lie on spheres, so W's row norms need row gains; gains are ",
                                 scope_name(), " (use gain_scope::rows or both, or absorb_scale = false)");
    if (absorb_scale && sphere == sphere_scope::cols && !has_cols())
      detail::raise<value_error>(op, "D's columns lie on spheres, so W's column norms need column gains; gains are ",
                                 scope_name(), " (use gain_scope::cols or both, or absorb_scale = false)");
    state<Backend, T> s;
    s.rows = m;
    s.cols = n;
    const index nr = gains == gain_scope::scalar ? 1 : m;
    s.d = be.template allocate<T>(m * n);
    s.r = be.template allocate<T>(nr);
    s.c = be.template allocate<T>(n);
    s.pr = be.template allocate<T>(m);
    s.pc = be.template allocate<T>(n);
    s.gr = be.template allocate<T>(nr);
    s.gc = be.template allocate<T>(n);
    const auto v0 = views_of(be, s);
    const auto D = v0.D, R = v0.R, C = v0.C;
    be.copy(as_const(w), D);
    if constexpr (on_direction_manifold) {
      // D on the direction's manifold; the gains take the norm it lost.
      const double norm = double(be.norm(as_const(D)));
      if (!(norm > 0) || !std::isfinite(norm))
        detail::raise<numerical_error>(op, "the ", m, "x", n, " matrix W has norm ", norm,
                                       "; it cannot be put on the direction's manifold");
      const auto g = detail::own_manifold<Direction>::of(direction);
      typename std::decay_t<decltype(g)>::template workspace<Backend, T> gws;
      g.project(be, D, gws);
      const double on = double(be.norm(as_const(D)));
      const detail::gain_inverse_fn<T> inv{phi == gain_map::softplus};
      be.fill(R, inv(T(1)));
      be.fill(C, inv(T(1)));
      if (absorb_scale) be.fill(absorb_cols ? C : R, inv(T(norm / on)));
      s.dir = direction.init(be, D);
      s.r_dir = gain_direction.init(be, R);
      s.c_dir = gain_direction.init(be, C);
      return s;
    }
    const hypersphere h = geometry(m, n);
    const detail::gain_inverse_fn<T> inv{phi == gain_map::softplus};
    be.fill(R, inv(T(1)));
    be.fill(C, inv(T(1)));
    if (absorb_scale) {
      if (sphere == sphere_scope::flat) {
        // ||W|| / radius: the scale of the whole matrix, in the row gains,
        // else the column gains, else the scalar gain.
        const double norm = double(be.norm(as_const(D)));
        if (!(norm > 0))
          detail::raise<numerical_error>(op, "the ", m, "x", n, " matrix W has norm ", norm,
                                         "; a zero matrix cannot be put on D's sphere");
        const T scale = T(norm / h.radius);
        if (absorb_cols)
          be.fill(C, inv(scale));
        else
          be.fill(R, inv(scale));  // row gains, or the scalar gain
      } else {
        // Each row's (column's) norm over the radius, in that row's
        // (column's) gain; project() below reports zero groups.
        const bool cols = sphere == sphere_scope::cols;
        const index k = cols ? n : m;
        const auto v = vector_view<T>((cols ? s.pc : s.pr).data(), k, 1, Backend::space);
        be.row_norms(cols ? as_const(D).transpose() : as_const(D), v);
        const auto vm = row_major_view(v.data(), cols ? 1 : k, cols ? k : 1, -1, Backend::space);
        be.map(detail::divide_by_fn<T>{T(h.radius)}, vm, as_const(vm));
        be.map(inv, cols ? C : R, as_const(vm));
      }
    }
    h.project(be, D, detail::scratch_of(s.scratch).ws);
    s.dir = direction.init(be, D);
    s.r_dir = gain_direction.init(be, R);
    s.c_dir = gain_direction.init(be, C);
    return s;
  }

  /// A fresh state for a tensor: a matrix (rank 2), or a convolution kernel
  /// (rank 4 or 5: out, in, kh, kw[, kd]) as the matrix (out, in kh kw ...),
  /// with a row gain per output channel and a column gain per input tap.
  /// @throws unsupported_error for other ranks (see tensor_matrix).
  /// A fresh state for a tensor, seen as its flat matrix (leading extent x the rest).
  template <class Backend, class U, class T = std::remove_const_t<U>>
  state<Backend, T> init(Backend& be, tensor_view<U> w) const {
    return init(be, tensor_matrix("polar::row_col_gains::init", w));
  }

  /// One step of a tensor, as init(tensor_view) reads it.
  /// One step on a tensor, seen as its flat matrix; W and G must have the same shape.
  template <class Backend, class T>
  void step(Backend& be, tensor_view<T> w, tensor_view<const T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::row_col_gains::step";
    detail::check_same_tensor_shape(op, w, g);
    step(be, tensor_matrix(op, w), tensor_matrix(op, g), s);
  }

  /// The matrix a tensor stands for here: rank 2 itself, rank 4 and 5
  /// flattened to (out, in kh kw ...). A stack of matrices (rank 3) needs a
  /// state per matrix and scalars and vectors have no direction to factor:
  /// those raise unsupported_error.
  template <class T>
  static matrix_view<T> tensor_matrix(const char* op, const tensor_view<T>& t) {
    if (t.rank() == 3)
      detail::raise<unsupported_error>(op, "a 3-D tensor (", t.shape_string(),
                                       ") is a stack of matrices; give each matrix (a matrix_view of it) its own "
                                       "state");
    if (t.rank() < 2)
      detail::raise<unsupported_error>(op, "a ", t.rank(), "-D tensor (", t.shape_string(),
                                       ") has no direction to factor; give 1-D parameters to AdamW");
    return as_matrix_stack(op, t).matrix(0);
  }

  /// One step: W and G are the caller's fused weight and its gradient; the
  /// state's D and gains are stepped and W <- phi(r) D phi(c) is written.
  /// @throws shape_error when W, G and the state disagree, non_finite_error
  ///         for NaN or infinity in G, value_error for hyperparameters out
  ///         of range or (identity phi) raw gains below the floor; all
  ///         before anything is written.
  template <class Backend, class T>
  void step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::row_col_gains::step";
    check(op);
    // The fused step runs deferred in a deferred_checks scope (its writes
    // guarded, nothing read back; identity gains checked on the device).
    bool fast = false;
    if constexpr (fusable<Backend>()) fast = takes_fast_path(w, g, s);
    detail::check_step_args(be, op, w, g, s.rows, s.cols, true, fast);
    const bool deferred = fast && detail::deferred_for<Backend>(op) != nullptr;
    detail::debug_check_state(be, op, s);
    const auto v = views_of(be, s);
    if (phi == gain_map::identity) {
      if (deferred)
        defer_identity_gains(be, op, v.R, v.C, s);
      else
        check_identity_gains(be, op, v.R, v.C);
    }
    const hypersphere h = geometry(s.rows, s.cols);
    if constexpr (fusable<Backend>()) {
      if (fast) {
        const std::size_t mark = detail::deferred_mark();
        fused_step(be, w, g, s, h, deferred, mark);
        detail::count_step(s.steps, mark);
        return;
      }
    }
    // The base step or the projection may refuse D (a group of D that
    // stepped to zero, an SVD that does not converge) after the state was
    // written; W is written last, and the state is put back then.
    s.settle(be);
    auto& scratch = detail::scratch_of(s.scratch);
    scratch.backup.save(be, s);
    try {
      split_unchecked(be, g, s);
      // D: the base step, then back onto the sphere (a direction with its
      // own manifold projects and retracts by itself).
      if constexpr (on_direction_manifold) {
        direction.step(be, v.D, as_const(v.P), s.dir);
      } else {
        if (project_gradient) h.project_tangent(be, as_const(v.D), as_const(v.P), v.P, scratch.ws);
        direction.step(be, v.D, as_const(v.P), s.dir);
        h.project(be, v.D, scratch.ws);
      }
      step_gains(be, s);
    } catch (...) {
      scratch.backup.restore(be, s);
      throw;
    }
    fuse(be, s, w);
    ++s.steps;
  }

  /// The chain rule through the fused weight, at the state's D and gains:
  /// afterwards the state's `p` holds dL/dD (rows x cols), `gr` dL/dr (rows,
  /// or 1 for a scalar gain) and `gc` dL/dc (cols); absent gains get no
  /// gradient. step() calls it; it is public so that the gradients can be
  /// inspected (and are tested against finite differences).
  template <class Backend, class T>
  void split(Backend& be, in_matrix<T> g, state<Backend, T>& s) const {
    constexpr const char* op = "polar::row_col_gains::split";
    check(op);
    detail::check_update_args(be, op, g, row_major_view(s.d.data(), s.rows, s.cols, -1, Backend::space), s.rows,
                              s.cols);
    s.settle(be);
    split_unchecked(be, g, s);
    apply_chain(be, s);
  }

  /// fuse() into a tensor, as init(tensor_view) reads it.
  template <class Backend, class T>
  void fuse(Backend& be, state<Backend, T>& s, tensor_view<T> w) const {
    fuse(be, s, tensor_matrix("polar::row_col_gains::fuse", w));
  }

  /// w <- phi(r) D phi(c), the fused weight of the state.
  template <class Backend, class T>
  void fuse(Backend& be, state<Backend, T>& s, matrix_view<T> w) const {
    constexpr const char* op = "polar::row_col_gains::fuse";
    check_output(op, "W", w);
    if (w.rows() != s.rows || w.cols() != s.cols)
      detail::raise_state_mismatch(op, "W", detail::concat(w.rows(), "x", w.cols()), 1, s.rows, s.cols);
    s.settle(be);
    s.seen_valid = false;
    const auto v = views_of(be, s);
    gain_values(be, v.R, v.C, v.PR, v.PC);
    be.copy(as_const(v.D), w);
    scale_by_gains(be, s, w);
  }

  /// Throws value_error for hyperparameters out of range.
  void check(const char* op = "polar::row_col_gains") const {
    direction.check(op);
    gain_direction.check(op);
    if (!(floor > 0) || !std::isfinite(floor)) detail::raise<value_error>(op, "floor must be finite and > 0, got ", floor);
    if (!(radius >= 0) || !std::isfinite(radius))
      detail::raise<value_error>(op, "radius must be finite and >= 0 (0: the default), got ", radius);
    if (on_direction_manifold && (sphere != sphere_scope::flat || radius != 0))
      detail::raise<value_error>(op, "D lies on the direction's own manifold, so sphere must be flat and radius 0; got ",
                                 sphere == sphere_scope::rows ? "rows" : sphere == sphere_scope::cols ? "cols" : "flat",
                                 " and ", radius);
  }

  /// Whether there is a gain per row.
  bool has_rows() const noexcept { return gains == gain_scope::both || gains == gain_scope::rows; }
  /// Whether there is a gain per column.
  bool has_cols() const noexcept { return gains == gain_scope::both || gains == gain_scope::cols; }

  /// Whether step() on this W, G and state runs the fused kernel (see
  /// fast_paths).
  template <class Backend, class T>
  bool takes_fast_path(matrix_view<T> w, in_matrix<T> g, const state<Backend, T>& s) const {
    if constexpr (fusable<Backend>())
      return fast_paths && !project_gradient && w.col_stride() == 1 && g.col_stride() == 1 &&
             s.dir.groups == moment_groups::element && T(1 - direction.lr * direction.weight_decay) != T(0);
    else
      return false;
  }

 private:
  // The state's buffers as the matrices they hold.
  template <class T>
  struct views {
    matrix_view<T> D, P;    // rows x cols: the direction, the scratch
    matrix_view<T> R, C;    // raw gains: nr x 1, 1 x cols
    matrix_view<T> PR, PC;  // phi(r) rows x 1, phi(c) cols x 1
    matrix_view<T> GR, GC;  // their gradients: nr x 1, 1 x cols (the shapes of R, C)
  };
  // P is the scratch's, made room for here.
  template <class Backend, class T>
  views<T> views_of(Backend& be, state<Backend, T>& s) const {
    const index m = s.rows, n = s.cols, nr = gains == gain_scope::scalar ? 1 : m;
    const auto at = [](auto& b, index r, index c) { return row_major_view(b.data(), r, c, -1, Backend::space); };
    auto& scratch = detail::scratch_of(s.scratch);
    scratch.reserve(be, m * n);
    return {at(s.d, m, n), at(scratch.p, m, n), at(s.r, nr, 1), at(s.c, 1, n),
            at(s.pr, m, 1), at(s.pc, n, 1), at(s.gr, nr, 1), at(s.gc, 1, n)};
  }
  // Whether r is stepped: row gains, or the scalar gain.
  bool has_r() const noexcept { return has_rows() || gains == gain_scope::scalar; }

  // The fused step: AdamW on D, and a backend with row kernels and their
  // column sums (every polar backend).
  template <class Backend>
  static constexpr bool fusable() {
    return std::is_same_v<Direction, adamw_direction> && detail::has_column_sums<Backend>::value;
  }

  // GR, GC: the gradients of phi(r), phi(c) -> of the raw gains (times
  // phi'(raw), from PR and PC, which hold phi(raw); GC seen as 1 x n, the
  // shape of C).
  template <class Backend, class T>
  void apply_chain(Backend& be, state<Backend, T>& s) const {
    const auto v = views_of(be, s);
    const detail::gain_chain_fn<T> chain{phi == gain_map::softplus, T(floor)};
    if (has_r()) be.map(chain, v.GR, as_const(v.GR), as_const(v.PR).block(0, 0, v.GR.rows(), 1));
    if (has_cols()) be.map(chain, v.GC, as_const(v.GC), as_const(v.PC).transpose());
  }

  // The gains' gradients (GR, GC) times phi', the gains' own steps, and the
  // identity gains floored.
  template <class Backend, class T>
  void step_gains(Backend& be, state<Backend, T>& s) const {
    const auto v = views_of(be, s);
    apply_chain(be, s);
    if (has_r()) gain_direction.step(be, v.R, as_const(v.GR), s.r_dir);
    if (has_cols()) gain_direction.step(be, v.C, as_const(v.GC), s.c_dir);
    if (phi == gain_map::identity) {
      be.for_each_element(detail::guarded(detail::floor_step<T>{T(floor)}), v.R);
      be.for_each_element(detail::guarded(detail::floor_step<T>{T(floor)}), v.C);
    }
  }

  // The fused step (gains/detail/fused_md.hpp): AdamW on D, in two row
  // passes on any backend with row kernels.
  // The kernels that write the state and W are guarded (the guard is null
  // outside a deferred_checks scope). Deferred (in a scope): the sums stay
  // on the device, and a factor that cannot put D back on its sphere goes
  // to a slot instead of being read back.
  template <class Backend, class T>
  void fused_step(Backend& be, matrix_view<T> w, in_matrix<T> g, state<Backend, T>& s, const hypersphere& h,
                  bool deferred, std::size_t mark) const {
    constexpr const char* op = "polar::row_col_gains::step";
    const index m = s.rows, n = s.cols;
    const auto v = views_of(be, s);
    auto& scratch = detail::scratch_of(s.scratch);
    scratch.reserve_sums(be, m, n);
    if (s.d_rows.size() < m) s.d_rows = be.template allocate<T>(m);
    if (s.d_cols.size() < n) s.d_cols = be.template allocate<T>(n);
    const auto a = row_major_view(s.d_rows.data(), m, 1, -1, Backend::space);
    const auto b = row_major_view(s.d_cols.data(), 1, n, -1, Backend::space);
    if (!s.rows_pending) be.fill(a, T(1));
    // A skipped step leaves the column factors pending: ones, not garbage.
    if (deferred && !s.cols_pending) be.fill(b, T(1));
    fused_gain_values(be, s);
    const long t = s.dir.steps + 1;
    const bool col_sphere = sphere == sphere_scope::cols;
    const double bc1 = 1 - std::pow(direction.beta1, double(t)), bc2 = 1 - std::pow(direction.beta2, double(t));
    const auto rsum = row_major_view(scratch.rsum.data(), 2, m, -1, Backend::space);
    const auto csum = row_major_view(scratch.csum.data(), has_cols() ? 2 : 1, n, -1, Backend::space);
    const auto M = row_major_view(s.dir.m.data(), m, n, -1, Backend::space);
    const auto V = row_major_view(s.dir.v.data(), m, n, -1, Backend::space);
    // Pass 1, with D's pending column factors or without, and the column
    // sums the gains and the sphere need.
    const auto pass1 = [&](auto col_factor, auto col_grad, auto col_norm) {
      constexpr bool cf = decltype(col_factor)::value, cg = decltype(col_grad)::value, cn = decltype(col_norm)::value;
      using K = detail::md_adamw_kernel<T, cf, cg, cn>;
      const K k{T(direction.beta1), T(direction.beta2), T(1 - direction.lr * direction.weight_decay),
                T(direction.lr / bc1), T(1 / std::sqrt(bc2)), T(direction.eps),
                s.pr.data(), s.pc.data(), s.d_rows.data(), cf ? s.d_cols.data() : nullptr,
                has_rows() ? s.gr.data() : nullptr, scratch.rsum.data(), m};
      const auto run = [&](const auto& kernel) {
        if constexpr (cn)
          be.for_each_row(kernel, column_sums<double>{csum}, g, v.D, M, V);
        else if constexpr (cg)
          be.for_each_row(kernel, column_sums<T>{v.GC}, g, v.D, M, V);
        else
          be.for_each_row(kernel, g, v.D, M, V);
      };
      run(detail::guarded(k));  // outside a scope the guard is null: the bare kernel runs
    };
    const auto with_sums = [&](auto col_factor) {
      if (col_sphere) {
        if (has_cols())
          pass1(col_factor, std::true_type{}, std::true_type{});
        else
          pass1(col_factor, std::false_type{}, std::true_type{});
      } else if (has_cols()) {
        pass1(col_factor, std::true_type{}, std::false_type{});
      } else {
        pass1(col_factor, std::false_type{}, std::false_type{});
      }
    };
    if (s.cols_pending)
      with_sums(std::true_type{});
    else
      with_sums(std::false_type{});
    // Pass 1 wrote D itself into d.
    detail::count_step(s.dir.steps, mark);
    s.rows_pending = s.cols_pending = false;
    if (col_sphere && has_cols())
      be.for_each_element(detail::narrow_fn<T>{}, v.GC, as_const(csum).block(0, 0, 1, n));
    // The factors that put D back on its sphere.
    const auto unplaceable = [&](double sq, const char* what, index k) {
      detail::raise<numerical_error>(op, "after the step, ", what, k, " of the ", m, "x", n,
                                     " direction D has squared norm ", sq,
                                     " and cannot be put back on its sphere; D and its moments took the step "
                                     "(the fused kernel writes them as it goes), W and the gains did not");
    };
    // The first group whose factor is not finite, read on the host (an
    // error path).
    const auto first_bad = [&](matrix_view<const double> sq, const char* what) {
      std::vector<double> on_host(std::size_t(sq.cols()));
      be.copy_to_host(sq, row_major_view(on_host.data(), 1, sq.cols(), -1, memory_space::host));
      for (std::size_t k = 0; k < on_host.size(); ++k)
        if (!(on_host[k] > 0) || !std::isfinite(on_host[k])) unplaceable(on_host[k], what, index(k));
    };
    // Deferred: a factor that is not finite sets the skip word through a
    // slot, so the gains and W are not written, as when it raises.
    const auto defer_factors = [&](matrix_view<const T> f, const char* what) {
      detail::defer_check(be, *detail::deferred(), op, f,
                          detail::concat("after the step, a ", what, " of D has no finite factor that puts it back on "
                                         "its sphere; D and its moments took the step, W and the gains did not"),
                          detail::deferred_slot::numerical);
    };
    const auto totals = row_major_view(scratch.totals.data(), 2, 1, -1, Backend::space);
    if (deferred && (sphere == sphere_scope::flat || gains == gain_scope::scalar))
      be.row_sums(as_const(rsum), vector_view<double>(scratch.totals.data(), 2, 1, Backend::space));
    if (sphere == sphere_scope::flat) {
      if (deferred) {
        be.for_each_element(detail::guarded(detail::flat_factor_fn<T>{h.radius, scratch.totals.data()}), a);
        defer_factors(as_const(a).block(0, 0, 1, 1), "matrix");
      } else {
        const double sq = double(be.sum(as_const(rsum).block(0, 0, 1, m)));
        if (!(sq > 0) || !std::isfinite(sq)) unplaceable(sq, "matrix ", 0);
        be.fill(a, T(h.radius / std::sqrt(sq)));
      }
    } else if (sphere == sphere_scope::rows) {
      be.for_each_element(detail::guarded(detail::sphere_factor_fn<T>{h.radius}), a.transpose(),
                          as_const(rsum).block(0, 0, 1, m));
      if (deferred)
        defer_factors(as_const(a), "row");
      else if (!be.all_finite(as_const(a)))
        first_bad(as_const(rsum).block(0, 0, 1, m), "row ");
    } else {
      be.fill(a, T(1));
      const auto sq = as_const(csum).block(has_cols() ? 1 : 0, 0, 1, n);
      be.for_each_element(detail::guarded(detail::sphere_factor_fn<T>{h.radius}), b, sq);
      if (deferred)
        defer_factors(as_const(b), "column");
      else if (!be.all_finite(as_const(b)))
        first_bad(sq, "column ");
    }
    // The scalar gain's gradient, sum P.
    if (gains == gain_scope::scalar) {
      if (deferred)
        be.for_each_element(detail::narrow_fn<T>{}, v.GR, as_const(totals).block(1, 0, 1, 1));
      else
        be.fill(v.GR, T(be.sum(as_const(rsum).block(1, 0, 1, m))));
    }
    step_gains(be, s);
    fused_gain_values(be, s);
    // W from D on its sphere; the factors stay pending for d.
    const auto fuse_w = [&](const auto& k) { be.for_each_row(detail::guarded(k), w, as_const(v.D)); };
    if (col_sphere)
      fuse_w(detail::md_fuse_kernel<T, true>{s.d_rows.data(), s.d_cols.data(), s.pr.data(), s.pc.data()});
    else
      fuse_w(detail::md_fuse_kernel<T, false>{s.d_rows.data(), nullptr, s.pr.data(), s.pc.data()});
    s.rows_pending = true;
    s.cols_pending = col_sphere;
  }

  // pr, pc <- phi(r), phi(c) for the fused step: where seen holds, phi is
  // recomputed only for the gains that differ from it (one pass over the
  // gain vectors, no synchronization), else for all of them.
  template <class Backend, class T>
  void fused_gain_values(Backend& be, state<Backend, T>& s) const {
    const auto v = views_of(be, s);
    const index nr = v.R.rows(), n = s.cols;
    const bool softplus = phi == gain_map::softplus;
    if (s.seen.size() < nr + n) s.seen = be.template allocate<T>(nr + n);
    const auto seen_r = row_major_view(s.seen.data(), nr, 1, -1, Backend::space);
    const auto seen_c = row_major_view(s.seen.data() + nr, 1, n, -1, Backend::space);
    if (!s.seen_valid || s.seen_floor != floor || s.seen_softplus != softplus) {
      gain_values(be, v.R, v.C, v.PR, v.PC);
      be.copy(as_const(v.R), seen_r);
      be.copy(as_const(v.C), seen_c);
      s.seen_valid = true;
      s.seen_floor = floor;
      s.seen_softplus = softplus;
      return;
    }
    const detail::gain_refresh_fn<T> f{{softplus, T(floor)}};
    if (has_rows())
      be.for_each_element(f, v.PR, seen_r, as_const(v.R));
    else if (gains == gain_scope::scalar)
      gain_values(be, v.R, v.C, v.PR, v.PC);  // pr repeats the one gain
    if (has_cols()) be.for_each_element(f, v.PC.transpose(), seen_c, as_const(v.C));
  }

  template <class Backend, class T>
  void split_unchecked(Backend& be, in_matrix<T> g, state<Backend, T>& s) const {
    const auto v = views_of(be, s);
    // phi(r) (rows x 1, the scalar gain repeated) and phi(c) (cols x 1);
    // ones for the gains that are not there.
    s.seen_valid = false;
    gain_values(be, v.R, v.C, v.PR, v.PC);

    // P = D . G, then the gradients of phi(r) and phi(c).
    be.map(detail::times_fn<T>{}, v.P, as_const(v.D), g);
    if (gains == gain_scope::scalar) {
      // W = phi(s) D: dL/dphi(s) = sum P.
      be.fill(v.GR, T(be.sum(as_const(v.P))));
    } else {
      if (has_rows()) be.gemm(T(1), op::n, as_const(v.P), op::n, as_const(v.PC), T(0), v.GR);
      if (has_cols()) be.gemm(T(1), op::t, as_const(v.P), op::n, as_const(v.PR), T(0), v.GC.transpose());
    }

    // dL/dD = G . phi(r) phi(c)^T, in P.
    be.copy(g, v.P);
    scale_by_gains(be, s, v.P);
  }

  // x <- diag(phi(r)) x diag(phi(c)), with phi(r), phi(c) as gain_values
  // last left them.
  template <class Backend, class T>
  void scale_by_gains(Backend& be, state<Backend, T>& s, matrix_view<T> x) const {
    be.scale_rows(vector_view<const T>(s.pr.data(), s.rows, 1, Backend::space), x);
    be.scale_cols(vector_view<const T>(s.pc.data(), s.cols, 1, Backend::space), x);
  }

  const char* scope_name() const noexcept {
    return gains == gain_scope::both ? "both" : gains == gain_scope::rows ? "rows" : gains == gain_scope::cols ? "cols"
                                                                                                               : "scalar";
  }

  // PR (m x 1) and PC (n x 1) = the gains, ones where there are none.
  template <class Backend, class T>
  void gain_values(Backend& be, matrix_view<T> R, matrix_view<T> C, matrix_view<T> PR, matrix_view<T> PC) const {
    const detail::gain_phi_fn<T> f{phi == gain_map::softplus, T(floor)};
    if (has_rows()) {
      be.map(f, PR, as_const(R));
    } else if (gains == gain_scope::scalar) {
      be.for_each_element(detail::scalar_gain_fn<T>{f, R.data()}, PR);
    } else {
      be.fill(PR, T(1));
    }
    if (has_cols())
      be.map(f, PC, as_const(C).transpose());
    else
      be.fill(PC, T(1));
  }

  // check_identity_gains queued in a deferred_checks scope: the gains
  // below the floor (or NaN) become NaN in an indicator (in the scratch p)
  // whose check counts them into a slot; check() raises value_error.
  template <class Backend, class T>
  void defer_identity_gains(Backend& be, const char* op, matrix_view<T> R, matrix_view<T> C,
                            state<Backend, T>& s) const {
    auto& scratch = detail::scratch_of(s.scratch);
    scratch.reserve(be, R.rows() * R.cols() + C.rows() * C.cols());
    const auto test = [&](matrix_view<T> x, T* at, const char* name) {
      const auto ind = row_major_view(at, x.rows(), x.cols(), -1, Backend::space);
      be.map(detail::below_floor_fn<T>{T(floor), std::numeric_limits<T>::quiet_NaN()}, ind, as_const(x));
      detail::defer_check(be, *detail::deferred(), op, as_const(ind),
                          detail::concat("with phi = identity the ", name, " gains must be >= floor = ", floor,
                                         "; some are not (or are NaN), so nothing was stepped"),
                          detail::deferred_slot::value);
    };
    if (has_r()) test(R, scratch.p.data(), "row");
    if (has_cols()) test(C, scratch.p.data() + R.rows() * R.cols(), "column");
  }

  template <class Backend, class T>
  void check_identity_gains(Backend& be, const char* op, matrix_view<T> R, matrix_view<T> C) const {
    const auto low = [&](matrix_view<T> x, const char* name) {
      // The gains are vectors: look at them on the host.
      std::vector<T> h(std::size_t(x.rows() * x.cols()));
      be.copy_to_host(as_const(x), row_major_view(h.data(), x.rows(), x.cols(), -1, memory_space::host));
      for (std::size_t i = 0; i < h.size(); ++i)
        if (!(h[i] >= T(floor)))
          detail::raise<value_error>(op, "with phi = identity the ", name, " gains must be >= floor = ", floor,
                                     "; gain ", i, " of ", h.size(), " is ", double(h[i]));
    };
    if (has_r()) low(R, "row");
    if (has_cols()) low(C, "column");
  }
};

/// AdamW steps D, Adam steps the gains.
using md_adamw = row_col_gains<adamw_direction>;
/// Muon steps D (Newton-Schulz), Adam steps the gains.
using md_muon = row_col_gains<muon_direction<>>;

}  // namespace polar
