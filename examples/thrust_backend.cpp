// examples/thrust_backend.cpp: the Thrust backend on the host.
//
// polar::backend::thrust<System> runs the same code on Thrust's OpenMP and
// serial systems (both here, compiled by the host compiler) and on CUDA
// (examples/thrust_cuda.cu, compiled by nvcc). Pick the system with the
// template argument, or use polar::backend::thrust_device, the system the
// polar::thrust CMake target was configured for.
#include <polar/backend/thrust.hpp>

#include <cmath>
#include <cstdio>

// One function for any backend: the system is a template argument.
template <class Backend, template <class> class Vector>
bool run() {
  using backend = Backend;
  backend b;

  // Memory of the backend's system; views over Thrust vectors carry their
  // memory space.
  Vector<float> w(256 * 128), g(256 * 128);
  const auto wv = polar::make_view(w, 256, 128);
  const auto gv = polar::make_view(g, 256, 128);

  b.fill_random(wv, polar::rng_key{1}, polar::distribution::normal, 0.02f);
  b.fill_random(gv, polar::rng_key{2}, polar::distribution::rademacher);
  b.axpby(-0.01f, gv, 1.0f, wv);  // w -= 0.01 g

  // G^T G on 128 x 128, one triangle, then mirrored.
  Vector<float> gram(128 * 128);
  const auto gram_v = polar::make_view(gram, 128, 128);
  b.syrk(polar::uplo::lower, 1.0f, polar::op::t, gv, 0.0f, gram_v);
  b.symmetrize(polar::uplo::lower, gram_v);

  // Rademacher entries: the Gram matrix has exactly 256 on its diagonal.
  const float diag = gram[0];
  std::printf("%s: |w| = %.4f, (G^T G)(0,0) = %.1f\n", backend::name(), double(b.norm(wv)), double(diag));
  return diag == 256.0f && std::abs(b.norm(wv) - std::sqrt(256 * 128 * (0.0004f + 0.0001f))) < 0.5f;
}

template <class T>
using omp_vector = ::thrust::omp::vector<T>;
template <class T>
using cpp_vector = ::thrust::cpp::vector<T>;

int main() {
  const bool ok = run<polar::backend::thrust<polar::system::omp>, omp_vector>() &&
                  run<polar::backend::thrust<polar::system::cpp>, cpp_vector>();
  std::printf("thrust_backend: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
