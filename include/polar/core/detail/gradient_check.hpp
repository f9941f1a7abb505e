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

/// Whether G holds NaN or infinity: false without a pass over G where the
/// caller has checked it (gradients_checked).
template <class Backend, class G>
bool nonfinite_gradient(Backend& be, const G& g) {
  return !gradients_checked() && !be.all_finite(g);
}

}  // namespace polar::detail
