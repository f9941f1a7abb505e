// polar/polar.hpp: everything polar offers, in one include.
//
// polar is a header-only C++17 library of geometry-aware optimizers. This
// header includes the core (views, tensor traits, errors, the counter-based
// generator), the backend concept and the Eigen backend. The Thrust backend
// is opt-in: include polar/backend/thrust.hpp and link polar::thrust.
#pragma once

#include "polar/core/check.hpp"
#include "polar/core/config.hpp"
#include "polar/core/eigen_traits.hpp"
#include "polar/core/error.hpp"
#include "polar/core/random.hpp"
#include "polar/core/tensor_traits.hpp"
#include "polar/core/view.hpp"
#include "polar/backend/concept.hpp"
#include "polar/backend/eigen.hpp"
