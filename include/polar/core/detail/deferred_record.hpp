// polar/core/detail/deferred_record.hpp: what a step records while a
// polar::deferred_checks scope is open on its thread (polar/deferred.hpp),
// and the functor wrapper through which update kernels read the skip word.
// Not for users.
//
// Outside a scope nothing here changes a step: the checks read their result
// back and raise at once. Inside one, a check queues a kernel that writes
// its verdict into a word of backend memory (a slot) and sets word 0, the
// skip word, when it fails; the kernels that write weights or optimizer
// state are wrapped in unless_flagged, so they do nothing once the skip
// word is set. The host learns what happened when the user calls check().
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "polar/backend/rows.hpp"
#include "polar/core/config.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// A word of a deferred check in backend memory.
using check_word = unsigned long long;

namespace detail {

/// What one slot of a deferred_checks records, for the message of check().
struct deferred_slot {
  enum kind_t : unsigned char {
    nonfinite,  ///< the word counts the NaN and infinite entries of an operand
    row_flag,   ///< the word is (first flagged row + 1) * codes + code, or 0
    numerical,  ///< the word counts non-finite entries of a computed operand: numerical_error saying `what`
    value       ///< the same, of an indicator of values out of range: value_error saying `what`
  };
  kind_t kind = nonfinite;
  const char* op = "";       ///< the public operation that queued the check
  index rows = 0, cols = 0;  ///< the operand's shape
  std::string what;          ///< the operand's name (nonfinite) or what each code means (row_flag)
  std::string codes[row_flags::codes];  ///< row_flag: what a row flagged under code k means
  int nonfinite_code = -1;  ///< row_flag: the code that means NaN or infinity (non_finite_error), or -1
};

/// The host side of a deferred_checks: where its words are, the slots
/// opened since the last check(), and the step counts advanced since then.
struct deferred_record {
  check_word* words = nullptr;  ///< backend memory: [0] the skip word, [1 + k] slot k
  index capacity = 0;           ///< slots available
  memory_space space = memory_space::host;
  std::vector<deferred_slot> slots;
  /// (slots open when the count moved, the count): check() moves back the
  /// counts of steps that a failed check skipped.
  std::vector<std::pair<std::size_t, long*>> counts;
  /// Descriptions that the next row_flag slot takes (set by the caller of
  /// for_each_row just before it).
  const char* next_row_op = nullptr;
  std::string next_row_codes[row_flags::codes];
  int next_row_nonfinite = -1;

  /// The skip word.
  check_word* skip() const noexcept { return words; }
  /// Opens slot s and returns its word; raises value_error when every slot is taken.
  check_word* open(const char* op, deferred_slot s) {
    if (index(slots.size()) >= capacity)
      raise<value_error>(op, "the deferred_checks in scope holds ", capacity,
                         " checks and all are taken; call check() (it frees them) or give it more");
    slots.push_back(std::move(s));
    return words + slots.size();
  }
};

/// The record of the deferred_checks scope open on this thread, or null.
inline deferred_record*& deferred() noexcept {
  thread_local deferred_record* r = nullptr;
  return r;
}

/// Raises memory_space_error when a scope is open for another memory space
/// than the backend's: its words could not be read by the backend's kernels.
template <class Backend>
deferred_record* deferred_for(const char* op) {
  deferred_record* d = deferred();
  if (d && d->space != Backend::space)
    raise<memory_space_error>(op, "the deferred_checks in scope keeps its words in ", to_string(d->space),
                              " memory but this backend (", Backend::name(), ") runs in ",
                              to_string(Backend::space), " memory");
  return d;
}

/// The skip word the update kernels read, or null outside a scope.
inline const check_word* step_guard() noexcept {
  deferred_record* d = deferred();
  return d ? d->skip() : nullptr;
}

/// Where a step stands in the scope's slots, taken after its own checks and
/// before any kernel of it that can flag rows (see count_step).
inline std::size_t deferred_mark() noexcept {
  deferred_record* d = deferred();
  return d ? d->slots.size() : 0;
}

/// ++count, recorded in the scope (if any) at `mark`: check() moves it back
/// when a slot opened before the mark failed, since the step's kernels then
/// did nothing; a row flag raised by the step itself (a slot at or after
/// the mark) leaves it, as the eager step does.
inline void count_step(long& count, std::size_t mark) {
  ++count;
  if (deferred_record* d = deferred()) d->counts.emplace_back(mark, &count);
}
/// count_step at the current position.
inline void count_step(long& count) { count_step(count, deferred_mark()); }

/// A functor that does nothing while *skip is nonzero: the update kernels of
/// a step in a deferred_checks scope (skip is the scope's skip word, in
/// backend memory; null never skips). Device backends call it as it is, so
/// every thread reads the word; the host backends read the word once per
/// call and run f (host_unguarded).
template <class F>
struct unless_flagged {
  F f;
  const check_word* skip = nullptr;
  POLAR_HD_TEMPLATE
  template <class... A>
  POLAR_HOST_DEVICE void operator()(A&&... a) const {
    if (skip != nullptr && *skip != 0) return;
    f(std::forward<A>(a)...);
  }
};

template <class F>
struct is_unless_flagged : std::false_type {};
template <class F>
struct is_unless_flagged<unless_flagged<F>> : std::true_type {};

/// f guarded by the skip word of the scope open on this thread (f itself
/// outside a scope).
template <class F>
unless_flagged<F> guarded(F f) {
  return unless_flagged<F>{std::move(f), step_guard()};
}

/// For host backends: body(k) with the kernel to run, k unwrapped from its
/// guard, or nothing (false) when the guard's word is set.
template <class F, class Body>
bool host_unguarded(const F& f, Body&& body) {
  if constexpr (is_unless_flagged<F>::value) {
    if (f.skip != nullptr && *f.skip != 0) return false;
    body(f.f);
  } else {
    body(f);
  }
  return true;
}

/// Whether row kernel K may call row.flag: all kernels but those that
/// declare `static constexpr bool never_flags = true`.
template <class K, class = void>
struct row_kernel_flags : std::true_type {};
template <class K>
struct row_kernel_flags<K, std::void_t<decltype(K::never_flags)>> : std::bool_constant<!K::never_flags> {};
template <class F>
struct row_kernel_flags<unless_flagged<F>, void> : row_kernel_flags<F> {};

/// The NaN and infinite elements of the host matrix x, counted on the
/// calling thread (after a faster pass has found that there are some).
template <class T>
check_word count_nonfinite_serial(matrix_view<const T> x) {
  check_word n = 0;
  for (index i = 0; i < x.rows(); ++i)
    for (index j = 0; j < x.cols(); ++j) {
      const T d = x(i, j) - x(i, j);
      n += d == d ? 0 : 1;
    }
  return n;
}

/// The word a row_flag slot holds for flags f: (first row + 1) * codes + code
/// for the lowest code flagged, 0 when none was.
inline check_word row_flag_word(const row_flags& f) {
  for (int c = 0; c < row_flags::codes; ++c)
    if (f.any(c)) return check_word(f.first[c] + 1) * check_word(row_flags::codes) + check_word(c);
  return 0;
}

/// Opens the row_flag slot of a for_each_row call in scope d over rows x cols.
inline check_word* open_row_slot(deferred_record& d, index rows, index cols) {
  deferred_slot s;
  s.kind = deferred_slot::row_flag;
  s.op = d.next_row_op ? d.next_row_op : "polar::for_each_row";
  s.rows = rows;
  s.cols = cols;
  for (int c = 0; c < row_flags::codes; ++c) s.codes[c] = std::move(d.next_row_codes[c]);
  s.nonfinite_code = d.next_row_nonfinite;
  d.next_row_nonfinite = -1;
  d.next_row_op = nullptr;
  for (auto& c : d.next_row_codes) c.clear();
  return d.open(s.op, std::move(s));
}

/// For host backends: in a scope, a for_each_row's flags go to a slot of
/// their own (and set the skip word when any is set) instead of back to the
/// caller, as on the device, where reading them would wait for the GPU.
template <class K>
row_flags host_defer_flags(const row_flags& f, index rows, index cols) {
  if constexpr (!row_kernel_flags<K>::value) {
    return f;
  } else {
    deferred_record* d = deferred();
    if (d == nullptr) return f;
    check_word* w = open_row_slot(*d, rows, cols);
    *w = row_flag_word(f);
    if (*w != 0) *d->skip() = 1;
    return row_flags::none(rows);
  }
}

/// Describes the row flags of the next for_each_row call of this thread's
/// scope (what check() says when a row is flagged): op and, per code, what
/// the flag means; a row flagged under nonfinite_code raises
/// non_finite_error, any other numerical_error. A no-op outside a scope.
inline void describe_row_flags(const char* op, std::string code0, std::string code1 = {}, int nonfinite_code = -1) {
  if (deferred_record* d = deferred()) {
    d->next_row_op = op;
    d->next_row_codes[0] = std::move(code0);
    d->next_row_codes[1] = std::move(code1);
    d->next_row_nonfinite = nonfinite_code;
  }
}

}  // namespace detail
}  // namespace polar
