// polar/polar.hpp: everything polar offers, in one include.
//
// polar is a header-only C++17 library of geometry-aware optimizers. This
// header includes the core (views, tensors, tensor traits, errors, the
// counter-based generator), the backend concept, the Eigen backend, the
// orthogonalizers, the directions (SGD, momentum, AdamW, Muon and its family:
// NorMuon, AdaMuon, PolarGrad, Dion), QK-clip, the
// geometries, the gains, the SPSA estimator with its one-byte codes and
// decentralized protocol (with the in-process loopback transport), and the
// model-level optimizer (groups, rules, schedules, clipping). Opt-in: the
// Thrust backend (include polar/backend/thrust.hpp and link polar::thrust)
// and the MPI transport (include polar/dist/mpi.hpp and link polar::mpi).
#pragma once

#include "polar/core/check.hpp"
#include "polar/core/config.hpp"
#include "polar/core/eigen_traits.hpp"
#include "polar/core/error.hpp"
#include "polar/core/random.hpp"
#include "polar/core/tensor_traits.hpp"
#include "polar/core/threads.hpp"
#include "polar/core/view.hpp"
#include "polar/backend/concept.hpp"
#include "polar/backend/eigen.hpp"
#include "polar/core/tensor.hpp"
#include "polar/checkpoint.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/dion.hpp"
#include "polar/direction/muon.hpp"
#include "polar/direction/sgd.hpp"
#include "polar/estimator/byte_code.hpp"
#include "polar/estimator/decentralized.hpp"
#include "polar/estimator/spsa.hpp"
#include "polar/dist/loopback.hpp"
#include "polar/gains/row_col_gains.hpp"
#include "polar/geometry/euclidean.hpp"
#include "polar/geometry/hypersphere.hpp"
#include "polar/geometry/manifold_muon.hpp"
#include "polar/geometry/riemannian.hpp"
#include "polar/geometry/stiefel.hpp"
#include "polar/deferred.hpp"
#include "polar/nonfinite.hpp"
#include "polar/orthogonalize/gram_newton_schulz.hpp"
#include "polar/orthogonalize/newton_schulz.hpp"
#include "polar/optimizer.hpp"
#include "polar/qk_clip.hpp"
