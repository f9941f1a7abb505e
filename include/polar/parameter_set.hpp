// polar/parameter_set.hpp: many tensors, one optimizer per group.
//
// A model's parameters are matrices (hidden layers), stacks of them (experts,
// heads), convolution kernels, and vectors (biases, norm gains). A
// parameter_set holds views of all of them and routes each to one of two
// directions: by default matrices, stacks and kernels to Muon, everything
// else to AdamW (as optax's `partition` does with labels). A route can be
// forced per tensor (embeddings and output heads are usually given to AdamW).
//
//   polar::parameter_set<polar::backend::eigen, float> params(be);
//   params.add("fc1.weight", polar::make_view(w1));
//   params.add("fc1.bias", polar::tensor_view<float>(b1.data(), {64}));
//   params.add("embed", polar::make_view(e), polar::route::other);
//   ...
//   params.step({g_w1, g_b1, g_e});   // gradients in the order of add()
//
// A step checks every gradient (shape, finiteness) before it writes any
// parameter, so a bad gradient anywhere leaves the whole set unchanged.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/checkpoint.hpp"
#include "polar/core/param_view.hpp"
#include "polar/core/tensor.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"

namespace polar {

/// Which direction a parameter goes to.
enum class route : unsigned char {
  automatic,  ///< matrices, stacks and kernels to the matrix direction, the rest to the other
  matrix,     ///< the matrix direction (Muon by default)
  other,      ///< the other direction (AdamW by default)
};

/// Parameters routed between a matrix direction and an other direction.
template <class Backend, class T, class MatrixDirection = muon_direction<>, class OtherDirection = adamw_direction>
class parameter_set {
 public:
  /// The state of a matrix parameter.
  using matrix_state = typename MatrixDirection::template state<Backend, T>;
  /// The state of any other parameter.
  using other_state = typename OtherDirection::template state<Backend, T>;

  /// The directions' hyperparameters; change them between steps (learning
  /// rate schedules) freely.
  MatrixDirection matrix_direction;
  OtherDirection other_direction;  ///< steps vectors and scalars (AdamW by default)

  /// An empty set on be, with the two directions' hyperparameters.
  explicit parameter_set(Backend& be, MatrixDirection md = {}, OtherDirection od = {})
      : matrix_direction(std::move(md)), other_direction(std::move(od)), be_(&be) {}

  /// Adds a parameter and makes its state; returns its position (the order
  /// step() expects its gradient in).
  /// @throws unsupported_error when a 1-D tensor is forced to the matrix
  ///         direction; shape_error, value_error for bad views or a name
  ///         already used.
  index add(std::string name, param_view<T> w, polar::route r = polar::route::automatic) {
    constexpr const char* op = "polar::parameter_set::add";
    for (const auto& e : entries_)
      if (e.name == name) detail::raise<value_error>(op, "a parameter named '", name, "' is already in the set");
    const bool to_matrix = r == polar::route::matrix || (r == polar::route::automatic && w.matrix_like());
    entry e{std::move(name), w, to_matrix, 0};
    if (to_matrix) {
      auto st = matrix_direction.init(*be_, w.stack(op));
      e.slot = index(matrix_states_.size());
      matrix_states_.push_back(std::move(st));
    } else {
      check_output(op, "W", w.elements());
      auto st = other_direction.init(*be_, w.elements());
      e.slot = index(other_states_.size());
      other_states_.push_back(std::move(st));
    }
    entries_.push_back(std::move(e));
    return index(entries_.size()) - 1;
  }

  /// Number of parameters.
  index size() const noexcept { return index(entries_.size()); }
  /// The name a parameter was added under.
  const std::string& name(index i) const { return entries_.at(std::size_t(i)).name; }
  /// True when parameter i goes to the matrix direction.
  bool routed_to_matrix(index i) const { return entries_.at(std::size_t(i)).to_matrix; }
  /// The state of parameter i; it must be routed accordingly.
  matrix_state& state_of_matrix(index i) { return matrix_states_.at(std::size_t(slot(i, true))); }
  /// The state of parameter i, which must not be a matrix.
  other_state& state_of_other(index i) { return other_states_.at(std::size_t(slot(i, false))); }
  /// Steps taken.
  long steps() const noexcept { return steps_; }

  /// One step of every parameter, gradients in the order of add().
  /// @throws shape_error (count or shapes), non_finite_error (naming the
  ///         parameter), value_error (hyperparameters); nothing is written
  ///         when it throws.
  void step(const std::vector<param_view<const T>>& grads) {
    constexpr const char* op = "polar::parameter_set::step";
    if (grads.size() != entries_.size())
      detail::raise<shape_error>(op, "got ", grads.size(), " gradients for ", entries_.size(), " parameters");
    matrix_direction.check(op);
    other_direction.check(op);
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const auto& e = entries_[i];
      if (!grads[i].same_shape_as(e.w))
        detail::raise<shape_error>(op, "the gradient of '", e.name, "' is ", grads[i].shape_string(),
                                   " but the parameter is ", e.w.shape_string());
      if (!finite(grads[i]))
        detail::raise<non_finite_error>(op, "the gradient of '", e.name, "' (", e.w.shape_string(),
                                        ") holds NaN or infinity");
    }
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const auto& e = entries_[i];
      if (e.to_matrix)
        matrix_direction.step(*be_, e.w.stack(op), grads[i].stack(op), matrix_states_[std::size_t(e.slot)]);
      else
        other_direction.step(*be_, e.w.elements(), grads[i].elements(), other_states_[std::size_t(e.slot)]);
    }
    ++steps_;
  }

  /// Puts every parameter's weights (under prefix + its name), its route and
  /// its state (under prefix + name + "/state"), and the set's step count
  /// into ck.
  void save(checkpoint& ck, const std::string& prefix = "") const {
    ck.put_integer(prefix + "steps", steps_);
    for (const auto& e : entries_) {
      ck.put(*be_, prefix + e.name, as_const(e.w.elements()));
      ck.put_integer(prefix + e.name + "/route", e.to_matrix ? 1 : 0);
      if (e.to_matrix)
        ck.put_state(*be_, prefix + e.name + "/state", matrix_states_[std::size_t(e.slot)]);
      else
        ck.put_state(*be_, prefix + e.name + "/state", other_states_[std::size_t(e.slot)]);
    }
  }

  /// Restores what save() wrote into a set with the same names, routes and
  /// shapes: the weights (written into the parameters' own memory), the
  /// states and the step count. Everything is checked before anything is
  /// written.
  /// @throws format_error (a missing entry, another scalar type),
  ///         shape_error (another shape or route); nothing is written then.
  void load(const checkpoint& ck, const std::string& prefix = "") {
    constexpr const char* op = "polar::parameter_set::load";
    const auto steps = ck.get_integer(prefix + "steps");
    for (auto& e : entries_) {
      ck.check(op, prefix + e.name, e.w.elements());
      const auto route = ck.get_integer(prefix + e.name + "/route");
      if (route != (e.to_matrix ? 1 : 0))
        detail::raise<shape_error>(op, "'", e.name, "' was routed to the ", route ? "matrix" : "other",
                                   " direction in the checkpoint but to the ", e.to_matrix ? "matrix" : "other",
                                   " direction here");
      if (e.to_matrix)
        ck.check_state(*be_, prefix + e.name + "/state", matrix_states_[std::size_t(e.slot)]);
      else
        ck.check_state(*be_, prefix + e.name + "/state", other_states_[std::size_t(e.slot)]);
    }
    for (auto& e : entries_) {
      ck.get(*be_, prefix + e.name, e.w.elements());
      if (e.to_matrix)
        ck.get_state(*be_, prefix + e.name + "/state", matrix_states_[std::size_t(e.slot)]);
      else
        ck.get_state(*be_, prefix + e.name + "/state", other_states_[std::size_t(e.slot)]);
    }
    steps_ = long(steps);
  }

 private:
  struct entry {
    std::string name;
    param_view<T> w;
    bool to_matrix;
    index slot;
  };

  index slot(index i, bool matrix) const {
    const auto& e = entries_.at(std::size_t(i));
    if (e.to_matrix != matrix)
      detail::raise<value_error>("polar::parameter_set", "'", e.name, "' is routed to the ",
                                 e.to_matrix ? "matrix" : "other", " direction");
    return e.slot;
  }

  bool finite(const param_view<const T>& g) {
    const auto v = g.elements();
    check_input("polar::parameter_set::step", "G", v);
    return be_->all_finite(v);
  }

  Backend* be_;
  std::vector<entry> entries_;
  std::vector<matrix_state> matrix_states_;
  std::vector<other_state> other_states_;
  long steps_ = 0;
};

}  // namespace polar
