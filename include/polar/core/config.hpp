// polar/core/config.hpp: version macros and the host/device annotation.
//
// polar is header-only. Code that must run both on the host and inside CUDA
// kernels (views, the counter-based generator, elementwise functors) is marked
// POLAR_HOST_DEVICE, which expands to `__host__ __device__ inline` when nvcc
// (or clang in CUDA mode) compiles the translation unit and to plain `inline`
// otherwise, so the same headers build with g++ for Thrust's OMP and CPP
// systems.
#pragma once

/// Major version of polar.
#define POLAR_VERSION_MAJOR 0
/// Minor version of polar.
#define POLAR_VERSION_MINOR 1
/// Patch version of polar.
#define POLAR_VERSION_PATCH 0
/// The version as one integer, major * 10000 + minor * 100 + patch.
#define POLAR_VERSION \
  (POLAR_VERSION_MAJOR * 10000 + POLAR_VERSION_MINOR * 100 + POLAR_VERSION_PATCH)

#define POLAR_STRINGIFY_IMPL(x) #x
#define POLAR_STRINGIFY(x) POLAR_STRINGIFY_IMPL(x)
/// The version as a string literal, "major.minor.patch".
#define POLAR_VERSION_STRING                                  \
  POLAR_STRINGIFY(POLAR_VERSION_MAJOR)                        \
  "." POLAR_STRINGIFY(POLAR_VERSION_MINOR) "." POLAR_STRINGIFY( \
      POLAR_VERSION_PATCH)

#if defined(__CUDACC__) || defined(__HIPCC__)
/// Set when the translation unit is compiled by a CUDA compiler.
#define POLAR_CUDA_COMPILER 1
/// Marks a function callable from host and device code.
#define POLAR_HOST_DEVICE __host__ __device__ inline
/// Marks a function callable from device code only.
#define POLAR_DEVICE __device__ inline
/// Put before a host-and-device function template that calls host-only
/// or device-only functions depending on its arguments (a row kernel, which
/// gets the host backends' row context or the GPU's): nvcc then checks each
/// instantiation only where it runs.
#define POLAR_HD_TEMPLATE _Pragma("nv_exec_check_disable")
#else
#define POLAR_CUDA_COMPILER 0
#define POLAR_HOST_DEVICE inline
#define POLAR_DEVICE inline
#define POLAR_HD_TEMPLATE
#endif

#if defined(__CUDA_ARCH__)
/// Set while compiling the device side of a CUDA translation unit.
#define POLAR_DEVICE_CODE 1
#else
#define POLAR_DEVICE_CODE 0
#endif

#if defined(_OPENMP)
/// Set when OpenMP is enabled for the host code.
#define POLAR_HAS_OPENMP 1
#else
#define POLAR_HAS_OPENMP 0
#endif

/// Expands to `#pragma omp x` when OpenMP is enabled, to nothing otherwise
/// (so builds without -fopenmp see no unknown pragmas).
#if defined(_OPENMP)
#define POLAR_PRAGMA(x) _Pragma(#x)
#define POLAR_OMP(x) POLAR_PRAGMA(omp x)
#else
#define POLAR_OMP(x)
#endif

#ifndef POLAR_DEBUG_CHECKS
#if defined(NDEBUG)
/// Extra checks that cost time (points on their manifold, finite state);
/// on by default in debug builds, off when NDEBUG is set. Define to 0 or 1 to
/// force either.
#define POLAR_DEBUG_CHECKS 0
#else
#define POLAR_DEBUG_CHECKS 1
#endif
#endif

#include <cstddef>
#include <cstdint>

namespace polar {

/// Signed index type used for shapes, strides and offsets.
using index = std::ptrdiff_t;

namespace detail::host {
/// Below this many elements a host loop runs on one thread (the Eigen
/// backend's loops, the fused kernels, and the Thrust OpenMP system's calls):
/// handing out the work costs more than the loop saves.
inline constexpr index parallel_threshold = index(1) << 15;
}  // namespace detail::host

/// Version of the headers in use, as {major, minor, patch}.
struct version_info {
  int major;  ///< incompatible API changes
  int minor;  ///< added functionality
  int patch;  ///< fixes
};

/// The version of the polar headers compiled into the caller.
constexpr version_info version() noexcept {
  return {POLAR_VERSION_MAJOR, POLAR_VERSION_MINOR, POLAR_VERSION_PATCH};
}

}  // namespace polar
