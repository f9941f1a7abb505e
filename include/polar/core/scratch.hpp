// polar/core/scratch.hpp: buffers a step needs only while it runs, shared by
// every tensor an optimizer steps.
//
// Muon's orthogonalizer input, output and Newton–Schulz iterates, a
// Riemannian step's tangent gradient and increment, the copy of a state
// taken before a step that may be refused: none of it is remembered from one
// step to the next. A state keeps such buffers behind a shared pointer to a
// scratch object of its own; a model-level optimizer (polar/optimizer.hpp)
// hands every state one object per scratch type from a scratch_pool, so the
// model holds one set of scratch buffers, sized by the largest tensor that
// needs them, instead of one set per tensor.
//
// A scratch type is default-constructible, grows its buffers on demand (a
// call no larger than the last allocates nothing) and reports what it holds:
//
//   struct my_scratch {
//     std::size_t bytes() const;   // bytes of the backend's memory it holds
//   };
//
// States that share a scratch object must not be stepped at the same time
// (the optimizer steps its tensors one after another).
#pragma once

#include <cstddef>
#include <memory>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

namespace polar {

/// One scratch object per type, handed to every state that asks (see the
/// header comment). Not thread-safe: one optimizer, one pool.
class scratch_pool {
 public:
  /// The pool's object of type S, made on first use.
  template <class S>
  std::shared_ptr<S> get() {
    static_assert(std::is_default_constructible_v<S>, "polar::scratch_pool: a scratch type is default-constructible");
    for (auto& e : entries_)
      if (e.type == std::type_index(typeid(S))) return std::static_pointer_cast<S>(e.object);
    auto s = std::make_shared<S>();
    entries_.push_back(entry{std::type_index(typeid(S)), s, [](const void* p) {
                               return static_cast<const S*>(p)->bytes();
                             }});
    return s;
  }
  /// Bytes of the backends' memory that the pool's objects hold now.
  std::size_t bytes() const {
    std::size_t n = 0;
    for (const auto& e : entries_) n += e.bytes(e.object.get());
    return n;
  }
  /// Number of scratch types in the pool.
  std::size_t size() const noexcept { return entries_.size(); }

 private:
  struct entry {
    std::type_index type;
    std::shared_ptr<void> object;
    std::size_t (*bytes)(const void*);
  };
  std::vector<entry> entries_;
};

namespace detail {

/// Bytes held by buffers (anything with size() and a data() pointer).
template <class... Buffers>
std::size_t buffer_bytes(const Buffers&... b) {
  return (std::size_t(0) + ... +
          (std::size_t(b.size()) * sizeof(std::remove_pointer_t<decltype(b.data())>)));
}

/// Bytes held by a workspace: its bytes(), or 0 for an empty one.
template <class W>
std::size_t workspace_bytes(const W& w) {
  if constexpr (std::is_empty_v<W>)
    return 0;
  else
    return w.bytes();
}

template <class S, class = void>
struct shares_scratch : std::false_type {};
template <class S>
struct shares_scratch<S, std::void_t<decltype(std::declval<S&>().share_scratch(std::declval<scratch_pool&>()))>>
    : std::true_type {};

/// Points every scratch object of the state s (and of the states nested in
/// it) at the pool's; a state without scratch is left alone.
template <class State>
void share_scratch(State& s, scratch_pool& pool) {
  if constexpr (shares_scratch<State>::value) s.share_scratch(pool);
}

/// The scratch object of a state: its own until shared.
template <class S>
S& scratch_of(std::shared_ptr<S>& p) {
  if (!p) p = std::make_shared<S>();
  return *p;
}

}  // namespace detail
}  // namespace polar
