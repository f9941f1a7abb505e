// polar/deferred.hpp: steps that do not wait for the device. Their checks
// keep their verdicts in device memory, and the error reaches the host when
// the user asks for it, as CUDA reports the errors of asynchronous work.
//
//   polar::deferred_checks<B> checks(be);
//   {
//     auto scope = checks.scope();      // on this thread, until it ends
//     muon.step(be, W1, G1, s1);        // queues kernels, reads nothing back
//     adamw.step(be, W2, G2, s2);
//   }
//   ...                                 // the next forward pass, on the same stream
//   checks.check();                     // waits; throws what a step found
//
// Outside a scope every step checks its gradient for NaN and infinity and
// reads the answer back before it writes anything, which makes the host wait
// for the GPU at every step. Inside one:
//
//   - the check of a gradient queues a kernel that counts its bad entries
//     into a word of its own (a slot) and sets the skip word when there are
//     any; the kernels that write weights or optimizer state read the skip
//     word and do nothing once it is set. So a bad gradient still changes
//     nothing, and neither does any step queued after it until check();
//   - the flags of row kernels (a row of the row sphere whose step cannot be
//     scaled back onto the sphere, a zero row of W) go to slots the same way;
//   - what each slot checks (the operation, the shape, the tensor) is kept
//     on the host, so that check() can name it.
//
// check() waits for the backend's queued work, reads the words, and when one
// is set throws the error the first failed check would have thrown at once:
// non_finite_error for a gradient, numerical_error for a flagged row. Before
// it throws it moves back the step counts (Adam's bias corrections, the
// steps of a Riemannian state) of the steps that did nothing, so the states
// are as they were before the failed step, and it clears the words, so that
// steps can go on. ok() says whether a check failed without throwing.
//
// A scope records into its deferred_checks, which has room for `capacity`
// checks (4096 by default; a step takes one or two); check() frees them.
// The steps that run in a scope today: SGD, momentum and AdamW (direction
// steps, and riemannian<..., euclidean>), Muon's step (momentum, Newton-Schulz
// and the update), and the fused row-sphere steps of riemannian<...,
// hypersphere> (SGD, momentum, Adam). Any other step in a scope still works,
// and still reads back what it reads back outside one (docs/reliability.md).
//
// With a CUDA graph: capture the steps in a scope; the graph's kernels keep
// the words' addresses, so the graph must be checked through the same
// deferred_checks. Set `recycle = false` on it so that check() keeps the
// slots' descriptions for every replay. A replay runs the steps with the
// hyperparameters and step counts they were captured with (bias
// corrections included) and does not move the host's step counts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "polar/backend/concept.hpp"
#include "polar/core/detail/deferred_record.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// The verdicts of the checks that steps in its scope queue on the device,
/// read when the user asks (see the header comment). A scope must end
/// before the object does, and the states stepped in it must live until
/// check() (it may move their step counts back).
template <class Backend>
class deferred_checks {
 public:
  /// Words for `capacity` checks in Backend's memory, all clear.
  /// @throws value_error for a capacity under 1.
  explicit deferred_checks(Backend& be, index capacity = 4096)
      : be_(&be), rec_(std::make_unique<detail::deferred_record>()) {
    if (capacity < 1) detail::raise<value_error>("polar::deferred_checks", "capacity must be >= 1, got ", capacity);
    words_ = be.template allocate<check_word>(capacity + 1);
    rec_->words = words_.data();
    rec_->capacity = capacity;
    rec_->space = Backend::space;
    be.fill(all_words(), check_word(0));
  }
  deferred_checks(const deferred_checks&) = delete;
  deferred_checks& operator=(const deferred_checks&) = delete;
  /// Moves the words and the slots (a scope open on them stays valid).
  deferred_checks(deferred_checks&&) = default;
  /// Moves the words and the slots (a scope open on them stays valid).
  deferred_checks& operator=(deferred_checks&&) = default;

  /// While it lives, the steps on this thread check into this object (the
  /// scope it replaced comes back when it ends).
  class scope_guard {
   public:
    /// Makes r the record of this thread's scope (use scope()).
    explicit scope_guard(detail::deferred_record* r) noexcept : previous_(detail::deferred()) {
      detail::deferred() = r;
    }
    ~scope_guard() { detail::deferred() = previous_; }
    scope_guard(const scope_guard&) = delete;
    scope_guard& operator=(const scope_guard&) = delete;

   private:
    detail::deferred_record* previous_;
  };
  /// Opens a scope on this thread: `auto s = checks.scope();`.
  [[nodiscard]] scope_guard scope() { return scope_guard(rec_.get()); }

  /// Whether check() keeps the slots' descriptions (false: for a CUDA graph
  /// captured in the scope, checked after each replay) or frees them for
  /// the next steps (true, the default).
  bool recycle = true;

  /// Checks queued since the last check().
  index pending() const noexcept { return index(rec_->slots.size()); }
  /// The most checks between two calls of check().
  index capacity() const noexcept { return rec_->capacity; }

  /// Waits for the backend's queued work; true when no check has failed.
  /// Throws nothing and clears nothing.
  bool ok() {
    const std::vector<check_word> h = read();
    return h[0] == 0;
  }

  /// Waits for the backend's queued work and throws what the first failed
  /// check found (non_finite_error, numerical_error), after moving back the
  /// step counts of the steps that did nothing and clearing the words. When
  /// none failed, returns.
  void check() {
    const std::vector<check_word> h = read();
    auto& r = *rec_;
    if (h[0] == 0) {
      r.counts.clear();
      if (recycle) r.slots.clear();
      return;
    }
    std::size_t first = r.slots.size();
    for (std::size_t k = 0; k < r.slots.size(); ++k)
      if (h[k + 1] != 0) {
        first = k;
        break;
      }
    long moved = 0;
    for (const auto& [mark, count] : r.counts)
      if (mark > first) {
        --*count;
        ++moved;
      }
    r.counts.clear();
    be_->fill(all_words(), check_word(0));
    const std::string after = detail::concat(
        "; that step and the steps queued after it in the scope changed nothing (", moved,
        " step counts were moved back)");
    if (first == r.slots.size()) {
      if (recycle) r.slots.clear();
      detail::raise<value_error>("polar::deferred_checks::check",
                                 "a check failed whose slot is no longer described (a graph replayed after "
                                 "check() freed the slots of its capture: set recycle = false)",
                                 after);
    }
    const detail::deferred_slot s = r.slots[first];
    const check_word w = h[first + 1];
    if (recycle) r.slots.clear();
    if (s.kind == detail::deferred_slot::numerical)
      detail::raise<numerical_error>(s.op, s.what, " (", w, " of ", s.rows * s.cols, "; a deferred check)", after);
    if (s.kind == detail::deferred_slot::value)
      detail::raise<value_error>(s.op, s.what, " (", w, " of ", s.rows * s.cols, "; a deferred check)", after);
    if (s.kind == detail::deferred_slot::nonfinite)
      detail::raise<non_finite_error>(s.op, s.what.empty() ? std::string("G") : s.what, " (", s.rows, "x", s.cols,
                                      ") held ", w, " NaN or infinite entries (a deferred check)", after);
    const index row = index(w / check_word(row_flags::codes)) - 1;
    const int code = int(w % check_word(row_flags::codes));
    if (code == s.nonfinite_code)
      detail::raise<non_finite_error>(s.op, "row ", row, " of the ", s.rows, "x", s.cols, " operands: ", s.codes[code],
                                      " (a deferred check)", after);
    detail::raise<numerical_error>(s.op, "row ", row, " of the ", s.rows, "x", s.cols, " operands: ",
                                   s.codes[code].empty() ? detail::concat("flagged under code ", code) : s.codes[code],
                                   " (a deferred check)", after);
  }

 private:
  matrix_view<check_word> all_words() {
    return row_major_view(words_.data(), 1, rec_->capacity + 1, -1, Backend::space);
  }
  // The skip word and the words of the open slots, on the host.
  std::vector<check_word> read() {
    const index n = 1 + index(rec_->slots.size());
    std::vector<check_word> h(std::size_t(n), 0);
    be_->copy_to_host(as_const(row_major_view(words_.data(), 1, n, -1, Backend::space)),
                      row_major_view(h.data(), 1, n, -1, memory_space::host));
    return h;
  }

  Backend* be_;
  typename Backend::template buffer<check_word> words_;
  std::unique_ptr<detail::deferred_record> rec_;
};

}  // namespace polar
