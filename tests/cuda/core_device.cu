// Compile check: the device-usable core headers (config, views, the
// counter-based generator and its reproducible math) build under nvcc and
// their functions can be called from a kernel. CI compiles this file for
// sm_80 and sm_90; it is not run there (no GPU).
#include "polar/core/config.hpp"
#include "polar/core/random.hpp"
#include "polar/core/view.hpp"

static_assert(POLAR_CUDA_COMPILER == 1, "nvcc must define __CUDACC__");

__global__ void fill_normal(polar::matrix_view<float> x, polar::rng_key key) {
  const polar::philox_stream st(key);
  const polar::index i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < x.size()) x(i / x.cols(), i % x.cols()) = st.normal<float>(std::uint64_t(i));
}

__global__ void fill_blocks(double* out, polar::rng_key key, polar::distribution d) {
  const polar::philox_stream st(key);
  st.fill_block<double>(d, blockIdx.x, out + 128 * blockIdx.x);
}

__global__ void transpose_and_batch(polar::batch_view<float> s) {
  auto m = s[blockIdx.x].transpose();
  if (threadIdx.x == 0) m(0, 0) = polar::philox_stream(polar::rng_key{}).rademacher<float>(0);
}

void launch(polar::matrix_view<float> x, double* out, polar::batch_view<float> s) {
  fill_normal<<<1, 128>>>(x, polar::rng_key{1, 2, 3, 4});
  fill_blocks<<<2, 1>>>(out, polar::rng_key{}, polar::distribution::normal);
  transpose_and_batch<<<1, 1>>>(s);
}
