// An unusual combination in one `using` line: magnitude-direction gains
// whose direction D steps by Riemannian Adam on the Stiefel manifold, so
// that W = diag(r) Q diag(c) with Q's columns orthonormal at every step.
// It fits a linear map of that form from noisy samples, and checks that the
// optimizer's Q never leaves the manifold.
#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <polar/polar.hpp>

using md_stiefel_adam = polar::row_col_gains<polar::riemannian_adam<polar::stiefel<>>>;

int main() {
  using mat = Eigen::MatrixXf;
  const int out = 48, in = 16, samples = 256;
  // The truth: row scales 0.5..1.5, orthonormal columns, column scales 1..4.
  const mat q = Eigen::HouseholderQR<mat>(mat::Random(out, in)).householderQ() * mat::Identity(out, in);
  const Eigen::VectorXf rows = Eigen::VectorXf::LinSpaced(out, 0.5f, 1.5f), cols = Eigen::VectorXf::LinSpaced(in, 1, 4);
  const mat truth = rows.asDiagonal() * q * cols.asDiagonal();
  const mat x = mat::Random(in, samples), y = truth * x + 0.01f * mat::Random(out, samples);

  polar::backend::eigen be;
  md_stiefel_adam opt;                        // the line above is the whole composition
  opt.direction.direction.lr = 1e-2;          // Riemannian Adam's learning rate, for Q
  opt.gain_direction.lr = 1e-2;               // Adam's, for the gains
  mat w = mat::Random(out, in) * 0.1f;
  auto state = opt.init(be, polar::make_view(w));  // Q <- the polar factor of W; the gains keep its norm
  const float start = (w - truth).norm();
  for (int step = 0; step < 1500; ++step) {
    const mat g = (w * x - y) * x.transpose() / float(samples);   // d/dW of the mean squared error / 2
    opt.step(be, polar::make_view(w), polar::make_view(g), state);
  }
  const Eigen::Map<const mat> d(state.d.data(), in, out);  // D, row-major: its transpose in column-major
  const float off = (d * d.transpose() - mat::Identity(in, in)).norm();
  const float end = (w - truth).norm();
  std::printf("unusual_combination: |W - truth| from %.3f to %.4f; |Q^T Q - I| = %.1e\n", start, end, off);
  if (!(end < 0.05f * start) || !(off < 1e-4f)) return 1;
  std::printf("unusual_combination: ok\n");
  return 0;
}
