// polar/hyperparameters.hpp: one way to reach a policy's learning rates and
// weight decays, whatever the nesting.
//
// Policies nest: riemannian<adamw_direction, hypersphere> keeps AdamW's
// settings in `direction`, row_col_gains keeps D's in `direction` and the
// gains' in `gain_direction`, nonfinite_guard keeps the wrapped policy's in
// `optimizer`. for_each_hyperparameter walks every such member and calls
//
//   f(kind, path, value)   kind: hyperparameter::lr or ::weight_decay
//                          path: "direction.lr", "gain_direction.lr", ...
//                          value: a double& to read or change
//
// so a schedule or a user reaches every learning rate of a group without
// knowing how its policy is built:
//
//   polar::md_muon p;
//   polar::hyperparameter_ref(p, "gain_direction.lr") = 1e-2;
//   polar::for_each_hyperparameter(p, [](auto kind, const std::string&, double& v) {
//     if (kind == polar::hyperparameter::lr) v *= 0.5;   // every learning rate
//   });
//
// A policy of the user's own joins by naming its fields `lr` and
// `weight_decay`, and its nested policies `direction`, `gain_direction` or
// `optimizer`.
#pragma once

#include <string>
#include <type_traits>
#include <utility>

#include "polar/core/error.hpp"

namespace polar {

/// Which kind of hyperparameter for_each_hyperparameter found.
enum class hyperparameter : unsigned char {
  lr,            ///< a learning rate (a member named `lr`)
  weight_decay,  ///< a decoupled weight decay (a member named `weight_decay`)
};

namespace detail {
#define POLAR_DETAIL_HAS_MEMBER(trait, member)                                                            \
  template <class P, class = void>                                                                        \
  struct trait : std::false_type {};                                                                      \
  template <class P>                                                                                      \
  struct trait<P, std::void_t<decltype(std::declval<P&>().member)>> : std::true_type {};
POLAR_DETAIL_HAS_MEMBER(has_lr_member, lr)
POLAR_DETAIL_HAS_MEMBER(has_weight_decay_member, weight_decay)
POLAR_DETAIL_HAS_MEMBER(has_direction_member, direction)
POLAR_DETAIL_HAS_MEMBER(has_gain_direction_member, gain_direction)
POLAR_DETAIL_HAS_MEMBER(has_optimizer_member, optimizer)
#undef POLAR_DETAIL_HAS_MEMBER

// Walks p's hyperparameters; with a path (Path = std::string) f gets
// (kind, path, value), without (Path = void, no string is built: what a
// step's schedules use) f gets (kind, value).
template <class Path, class P, class F>
void walk_hyperparameters(P& p, F& f, Path* path) {
  constexpr bool named = !std::is_void_v<Path>;
  const auto visit = [&](hyperparameter kind, const char* name, double& v) {
    if constexpr (named) {
      const std::size_t at = path->size();
      *path += name;
      f(kind, static_cast<const std::string&>(*path), v);
      path->resize(at);
    } else {
      (void)name;
      f(kind, v);
    }
  };
  if constexpr (has_lr_member<P>::value)
    if constexpr (std::is_same_v<std::decay_t<decltype(p.lr)>, double>) visit(hyperparameter::lr, "lr", p.lr);
  if constexpr (has_weight_decay_member<P>::value)
    if constexpr (std::is_same_v<std::decay_t<decltype(p.weight_decay)>, double>)
      visit(hyperparameter::weight_decay, "weight_decay", p.weight_decay);
  const auto nest = [&](const char* name, auto& inner) {
    if constexpr (named) {
      const std::size_t at = path->size();
      *path += name;
      *path += '.';
      walk_hyperparameters(inner, f, path);
      path->resize(at);
    } else {
      (void)name;
      walk_hyperparameters(inner, f, path);
    }
  };
  if constexpr (has_direction_member<P>::value) nest("direction", p.direction);
  if constexpr (has_gain_direction_member<P>::value) nest("gain_direction", p.gain_direction);
  if constexpr (has_optimizer_member<P>::value) nest("optimizer", p.optimizer);
}

/// f(kind, value&) for every learning rate and weight decay of p, without
/// building their paths (no allocation: the form a step uses).
template <class Policy, class F>
void for_each_hyperparameter_value(Policy& p, F&& f) {
  walk_hyperparameters(p, f, static_cast<void*>(nullptr));
}
}  // namespace detail

/// Calls f(kind, path, value&) for every learning rate and weight decay of
/// policy p and of the policies nested in it (see the header comment).
template <class Policy, class F>
void for_each_hyperparameter(Policy& p, F&& f) {
  std::string path;
  detail::walk_hyperparameters(p, f, &path);
}

/// The hyperparameter at path ("lr", "direction.lr", "gain_direction.weight_decay", ...).
/// @throws value_error naming the paths the policy has when path is not one of them.
template <class Policy>
double& hyperparameter_ref(Policy& p, const std::string& path) {
  double* found = nullptr;
  std::string known;
  for_each_hyperparameter(p, [&](hyperparameter, const std::string& at, double& v) {
    if (at == path) found = &v;
    known += known.empty() ? at : ", " + at;
  });
  if (!found)
    detail::raise<value_error>("polar::hyperparameter_ref", "the policy has no hyperparameter '", path,
                               "'; it has: ", known.empty() ? std::string("none") : known);
  return *found;
}

/// The policy's first learning rate: its own `lr`, else its direction's
/// (the learning rate of D for MD gains, of the wrapped policy for a guard).
/// @throws value_error when it has none.
template <class Policy>
double& learning_rate(Policy& p) {
  double* found = nullptr;
  for_each_hyperparameter(p, [&](hyperparameter kind, const std::string&, double& v) {
    if (!found && kind == hyperparameter::lr) found = &v;
  });
  if (!found) detail::raise<value_error>("polar::learning_rate", "the policy has no learning rate");
  return *found;
}

}  // namespace polar
