// examples/custom_tensor.cpp: plugging your own tensor type into polar.
//
// polar works on views of memory it does not own. A type joins by
// specializing polar::tensor_traits with a `scalar` and two `view` functions;
// nothing is copied, and every polar operation then accepts
// polar::make_view(your_tensor).
#include <polar/polar.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

namespace mylib {
// Stand-in for a framework's tensor: row-major storage with a shape.
struct tensor {
  int rows = 0, cols = 0;
  std::vector<float> storage;
  tensor(int r, int c) : rows(r), cols(c), storage(std::size_t(r) * std::size_t(c)) {}
};
}  // namespace mylib

// The whole integration: four lines of trait.
template <>
struct polar::tensor_traits<mylib::tensor> {
  using scalar = float;
  static polar::matrix_view<float> view(mylib::tensor& t) {
    return polar::row_major_view(t.storage.data(), t.rows, t.cols);
  }
  static polar::matrix_view<const float> view(const mylib::tensor& t) {
    return polar::row_major_view(t.storage.data(), t.rows, t.cols);
  }
};

int main() {
  mylib::tensor w(64, 32), g(64, 32);
  polar::backend::eigen backend;
  // Random data from the counter-based generator, written into the user's memory.
  backend.fill_random(polar::make_view(w), polar::rng_key{7}, polar::distribution::normal, 0.02f);
  backend.fill_random(polar::make_view(g), polar::rng_key{8}, polar::distribution::normal);
  // w <- w - 0.1 g, in place, on the user's storage.
  backend.axpby(-0.1f, polar::make_view(static_cast<const mylib::tensor&>(g)), 1.0f, polar::make_view(w));
  // Row norms into a plain std::vector through a vector view.
  std::vector<float> norms(64);
  backend.row_norms(polar::make_view(static_cast<const mylib::tensor&>(w)),
                    polar::vector_view<float>(norms.data(), 64));
  const float expect = std::sqrt(32.0f * (0.02f * 0.02f + 0.01f));
  std::printf("row 0 norm %.4f (about %.4f expected)\n", double(norms[0]), double(expect));
  const bool ok = std::abs(norms[0] - expect) < 0.5f * expect;
  std::printf("custom_tensor: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
