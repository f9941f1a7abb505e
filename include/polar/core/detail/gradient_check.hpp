// polar/core/detail/gradient_check.hpp: the check of a gradient for NaN
// and infinity that every step makes first, and the way the model-level
// optimizer tells the policies that it has made it already.
//
// polar::optimizer checks every gradient before it steps any (its
// non-finite policy decides what a bad one does) and under policy zero
// hands the policies a cleaned copy, so their own check would be a second
// pass over G that cannot fail: a read of G is an eighth of an AdamW step's
// traffic, and on the GPU a wait for the device. While it steps, a scope
// marks the gradients as checked on the calling thread.
#pragma once

#include <string>
#include <type_traits>
#include <utility>

#include "polar/core/detail/deferred_record.hpp"

namespace polar::detail {

/// True on this thread while the model-level optimizer steps gradients it
/// has checked itself.
inline bool& gradients_checked() noexcept {
  thread_local bool on = false;
  return on;
}

/// Marks the gradients as checked while it lives; puts back what it found.
class checked_gradients_scope {
 public:
  checked_gradients_scope() noexcept : previous_(gradients_checked()) { gradients_checked() = true; }
  ~checked_gradients_scope() { gradients_checked() = previous_; }
  checked_gradients_scope(const checked_gradients_scope&) = delete;
  checked_gradients_scope& operator=(const checked_gradients_scope&) = delete;

 private:
  bool previous_;
};

/// Whether a backend has count_nonfinite (optional in the concept).
template <class B, class G, class = void>
struct has_count_nonfinite : std::false_type {};
template <class B, class G>
struct has_count_nonfinite<B, G,
                           std::void_t<decltype(std::declval<B&>().count_nonfinite(
                               std::declval<const G&>(), std::declval<check_word*>(), std::declval<check_word*>()))>>
    : std::true_type {};

/// Queues the check of operand g into a slot of the deferred_checks scope d:
/// a kernel counts its non-finite entries into the slot and sets the skip
/// word when there are any; nothing is read back. `what` names g (a
/// gradient: non_finite_error) or says what went wrong (numerical).
template <class Backend, class G>
void defer_check(Backend& be, deferred_record& d, const char* op, const G& g, std::string what,
                 deferred_slot::kind_t kind) {
  deferred_slot s;
  s.kind = kind;
  s.op = op;
  s.rows = g.rows();
  s.cols = g.cols();
  s.what = std::move(what);
  check_word* w = d.open(op, std::move(s));
  if constexpr (has_count_nonfinite<Backend, G>::value) {
    be.count_nonfinite(g, w, d.skip());
  } else if (!be.all_finite(g)) {
    // A backend without count_nonfinite: the check reads back, and the
    // slot says one bad entry (at least one).
    const check_word one = 1;
    const auto host_one = matrix_view<const check_word>(&one, 1, 1, 1, 1, memory_space::host);
    be.copy_from_host(host_one, matrix_view<check_word>(w, 1, 1, 1, 1, Backend::space));
    be.copy_from_host(host_one, matrix_view<check_word>(d.skip(), 1, 1, 1, 1, Backend::space));
  }
}
/// defer_check of a gradient.
template <class Backend, class G>
void defer_nonfinite(Backend& be, deferred_record& d, const char* op, const G& g, std::string what) {
  defer_check(be, d, op, g, std::move(what), deferred_slot::nonfinite);
}

/// In a deferred_checks scope, for a step that reads back and writes
/// unguarded: raises non_finite_error when a check queued before it in the
/// scope has failed (the step would otherwise write after a failure).
template <class Backend>
void raise_if_deferred_failed(Backend& be, const char* op) {
  deferred_record* d = deferred_for<Backend>(op);
  if (d == nullptr) return;
  check_word skip = 0;
  be.copy_to_host(matrix_view<const check_word>(d->skip(), 1, 1, 1, 1, Backend::space),
                  matrix_view<check_word>(&skip, 1, 1, 1, 1, memory_space::host));
  if (skip != 0)
    raise<non_finite_error>(op, "a check queued earlier in the deferred_checks scope has failed, so this step "
                                "(which does not run deferred) wrote nothing; check() says which");
}

/// Whether G holds NaN or infinity: false without a pass over G where the
/// caller has checked it (gradients_checked). A step whose kernels that
/// write are guarded (unless_flagged) passes deferrable: in a
/// deferred_checks scope the check is then queued on the backend
/// (defer_nonfinite) and false returned, the kernels reading its verdict.
/// Any other step reads the answer back, in a scope too, after
/// raise_if_deferred_failed.
template <class Backend, class G>
bool nonfinite_gradient(Backend& be, const G& g, const char* op = "polar::step", bool deferrable = false) {
  if (gradients_checked()) {
    // The model-level optimizer checked G; in a scope it queued the check,
    // and a step that writes unguarded must see its verdict first.
    if (!deferrable && deferred() != nullptr) raise_if_deferred_failed(be, op);
    return false;
  }
  if (deferred_record* d = deferred_for<Backend>(op)) {
    if (deferrable) {
      defer_nonfinite(be, *d, op, g, "G");
      return false;
    }
    raise_if_deferred_failed(be, op);
  }
  return !be.all_finite(g);
}

}  // namespace polar::detail
