// A user's program in a project that asks for a serial build: it links
// polar::serial, so no OpenMP flags reach it, and polar runs on the calling
// thread until the program asks for more (docs/threads.md).
#include <polar/polar.hpp>

#include <cstdio>

#if defined(_OPENMP)
#error "polar::serial passed OpenMP's flags to a serial build"
#endif

int main() {
  if (polar::threads() != 1) return 1;
  Eigen::MatrixXf g = Eigen::MatrixXf::Random(256, 1024), one(256, 1024), two(256, 1024);
  polar::backend::eigen be;
  polar::newton_schulz ns;
  polar::newton_schulz::workspace<polar::backend::eigen, float> ws;
  ns(be, polar::make_view(g), polar::make_view(one), ws);
  // polar's pool needs no OpenMP: two threads when asked for, the same bits.
  polar::set_threads(2);
  ns(be, polar::make_view(g), polar::make_view(two), ws);
  if (polar::threads() != 2 || !(one.array() == two.array()).all()) return 1;
  std::printf("consumer (serial build): polar ran on 1 and on %d threads, the same bits\n", polar::threads());
  return 0;
}
