// tests/core/state_bytes.hpp: what the reliability and non-finite tests
// share: the backends they run on, and what they compare states by (the
// bytes a checkpoint writes for them).
#pragma once

#include <boost/mpl/list.hpp>
#include <cstdint>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "backends.hpp"
#include "polar/checkpoint.hpp"

namespace core_test {

/// Eigen and the Thrust host systems.
using host_backends = polar_test::host_backends;

/// The checkpoint bytes of the state s, under the name "s".
template <class B, class S>
std::vector<std::uint8_t> state_bytes(B& be, const S& s) {
  polar::checkpoint ck;
  ck.put_state(be, "s", s);
  return ck.serialize();
}

}  // namespace core_test
