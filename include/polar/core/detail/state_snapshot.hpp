// polar/core/detail/state_snapshot.hpp: a copy of the fields a state lists
// through visit() (its buffers and values), taken before a step that may
// fail after writing the state, and put back if it does.
//
// riemannian::step uses it around the direction's update and the
// retraction: the retraction can refuse a point only after the direction
// has moved its moments (a group of X + U that overflowed, a singular Cayley
// system), and the step must then leave the state as it found it. The copy's
// buffers are allocated once and reused (a copy's buffer is kept when it is
// at least as large as the field, so one snapshot serves states of many
// sizes).
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "polar/core/view.hpp"

namespace polar::detail {

template <class Backend, class T>
class state_snapshot {
 public:
  /// Copies every buffer and value of s.
  template <class State>
  void save(Backend& be, State& s) {
    visitor<true> f{be, *this};
    s.visit(f);
  }
  /// Writes them back into s (the same state save() saw).
  template <class State>
  void restore(Backend& be, State& s) {
    visitor<false> f{be, *this};
    s.visit(f);
  }

 /// Bytes of the backend's memory held by the copies.
  std::size_t bytes() const {
    std::size_t n = 0;
    for (const auto& b : buffers_) n += std::size_t(b.size()) * sizeof(T);
    return n;
  }

 private:
  using buffer_t = typename Backend::template buffer<T>;

  template <bool Save>
  struct visitor {
    Backend& be;
    state_snapshot& snap;
    std::size_t buffer_at = 0, integer_at = 0, real_at = 0;

    template <class Buffer>
    void buffer(const char*, Buffer& b) {
      static_assert(std::is_same_v<Buffer, buffer_t>, "state_snapshot: a state buffer of another scalar type");
      const index n = index(b.size());
      if constexpr (Save) {
        if (snap.buffers_.size() == buffer_at) snap.buffers_.emplace_back();
        auto& c = snap.buffers_[buffer_at];
        if (index(c.size()) < n) c = be.template allocate<T>(n);
        if (n > 0) be.copy(view_of(static_cast<const T*>(b.data()), n), view_of(c.data(), n));
      } else {
        const auto& c = snap.buffers_[buffer_at];
        if (n > 0) be.copy(view_of(static_cast<const T*>(c.data()), n), view_of(b.data(), n));
      }
      ++buffer_at;
    }
    template <class Buffer>
    void buffers(const char* name, std::vector<Buffer>& bs) {
      for (auto& b : bs) buffer(name, b);
    }
    template <class V>
    void shape(const char*, V&) {}  // a step never changes a state's shape
    template <class V>
    void value(const char*, V& v) {
      if constexpr (std::is_floating_point_v<V>) {
        if constexpr (Save) {
          if (snap.reals_.size() == real_at) snap.reals_.emplace_back();
          snap.reals_[real_at] = double(v);
        } else {
          v = V(snap.reals_[real_at]);
        }
        ++real_at;
      } else {
        if constexpr (Save) {
          if (snap.integers_.size() == integer_at) snap.integers_.emplace_back();
          snap.integers_[integer_at] = std::int64_t(v);
        } else {
          v = V(snap.integers_[integer_at]);
        }
        ++integer_at;
      }
    }
    template <class S>
    void nested(const char*, S& s) {
      s.visit(*this);
    }

    template <class U>
    static matrix_view<U> view_of(U* p, index n) {
      return matrix_view<U>(p, 1, n, n, 1, Backend::space);
    }
  };

  std::vector<buffer_t> buffers_;
  std::vector<std::int64_t> integers_;
  std::vector<double> reals_;
};

}  // namespace polar::detail
