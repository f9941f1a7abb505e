// examples/thrust_cuda.cu: the Thrust backend on a GPU.
//
// Built by the `cuda` preset (nvcc). The same calls as
// examples/thrust_backend.cpp, on device memory: views of
// thrust::device_vector carry memory_space::device, and the backend checks
// it (host memory given to it raises polar::memory_space_error).
#include <polar/backend/thrust.hpp>

#include <cstdio>
#include <vector>

int main() {
  polar::backend::thrust<polar::system::cuda> b;
  ::thrust::device_vector<float> w(1024 * 4096), g(1024 * 4096), a(1024 * 1024);
  const auto wv = polar::make_view(w, 1024, 4096);
  const auto gv = polar::make_view(g, 1024, 4096);
  const auto av = polar::make_view(a, 1024, 1024);

  b.fill_random(wv, polar::rng_key{1}, polar::distribution::normal, 0.02f);
  b.fill_random(gv, polar::rng_key{2}, polar::distribution::normal);
  b.syrk(polar::uplo::lower, 1.0f, polar::op::n, gv, 0.0f, av);  // G G^T with cuBLAS
  b.axpby(-0.01f, gv, 1.0f, wv);

  // The generator gives the host's bits on the device.
  std::vector<float> first(4);
  b.copy_to_host(wv.block(0, 0, 1, 4), polar::row_major_view(first.data(), 1, 4));
  std::printf("%s: w(0, 0..3) = %g %g %g %g, |w| = %g\n", decltype(b)::name(), first[0], first[1], first[2],
              first[3], double(b.norm(wv)));
  return 0;
}
