// A user's program, the one docs/getting-started.md walks through: Muon on
// an Eigen matrix, from a separate CMake project that finds polar with
// find_package (or add_subdirectory).
#include <polar/polar.hpp>

#include <cmath>
#include <cstdio>

int main() {
  // Fit W to a target with the gradient of 1/2 |W - target|^2.
  Eigen::MatrixXf target = Eigen::MatrixXf::Random(64, 256), w = Eigen::MatrixXf::Zero(64, 256);
  polar::backend::eigen be;
  polar::muon_direction<> muon;                     // Nesterov 0.95, Jordan's 5 steps
  auto state = muon.init(be, polar::make_view(w));  // the momentum (the step makes its scratch)
  const float start = (w - target).norm();
  for (int step = 0; step < 150; ++step) {
    const Eigen::MatrixXf g = w - target;           // the backward pass goes here
    muon.lr = 2.0 * std::pow(0.97, step);
    muon.step(be, polar::make_view(w), polar::make_view(g), state);
  }
  const float end = (w - target).norm();
  std::printf("consumer: polar %s, Muon took |W - target| from %.3f to %.4f\n", POLAR_VERSION_STRING, start, end);
  if (!(end < 0.05f * start)) return 1;
  std::printf("consumer: ok\n");
  return 0;
}
