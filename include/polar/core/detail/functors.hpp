// polar/core/detail/functors.hpp: small elementwise functors that the
// algorithms hand to a backend's map; usable in device code.
#pragma once

#include "polar/core/config.hpp"

namespace polar {
namespace detail {

/// a + b.
template <class T>
struct plus_fn {
  POLAR_HOST_DEVICE T operator()(T a, T b) const { return T(a + b); }
};

/// a * b.
template <class T>
struct times_fn {
  POLAR_HOST_DEVICE T operator()(T a, T b) const { return T(a * b); }
};

/// x + value.
template <class T>
struct shift_fn {
  T value;
  POLAR_HOST_DEVICE T operator()(T x) const { return T(x + value); }
};

}  // namespace detail
}  // namespace polar
