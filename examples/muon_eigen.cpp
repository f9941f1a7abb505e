// Muon on an Eigen matrix: fit W to a target with the gradient of
// 1/2 ||W - target||^2. The lines between the markers are all a user needs.
#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <polar/polar.hpp>

int main() {
  Eigen::MatrixXf target = Eigen::MatrixXf::Random(128, 512), w = Eigen::MatrixXf::Zero(128, 512);
  const float start = (w - target).norm();
  // ---- Muon in ten lines -------------------------------------------------
  polar::backend::eigen be;                            // the CPU backend
  polar::muon_direction<> muon;                        // Nesterov, Jordan NS5, original scale
  muon.orthogonalizer.schedule = polar::schedules::polar_express5;
  auto state = muon.init(be, polar::make_view(w));     // momentum buffer and workspace
  for (int step = 0; step < 150; ++step) {
    const Eigen::MatrixXf g = w - target;              // your backward pass goes here
    muon.lr = 2.0 * std::pow(0.97, step);              // any schedule: lr is a plain member
    muon.step(be, polar::make_view(w), polar::make_view(g), state);
  }
  // -------------------------------------------------------------------------
  const float end = (w - target).norm();
  std::printf("muon_eigen: |W - target| from %.3f to %.3f after %ld steps\n", start, end, state.steps);
  if (!(end < 0.05f * start)) return 1;
  std::printf("muon_eigen: ok\n");
  return 0;
}
