#include <Eigen/Dense>
#include <cstdio>
#include <polar/backend/eigen.hpp>
#include <polar/geometry/riemannian.hpp>
#include <polar/geometry/stiefel.hpp>

int main() {
  using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  mat W = mat::Random(64, 16), G = mat::Random(64, 16);
  polar::backend::eigen be;
  polar::riemannian_adam<polar::stiefel<>> opt;  // Riemannian Adam on Stiefel
  opt.direction.lr = 1e-2;
  opt.geometry.retraction = polar::stiefel_retraction::cayley;
  polar::stiefel<>::workspace<polar::backend::eigen, float> ws;
  opt.geometry.project(be, polar::make_view(W), ws);  // start on the manifold
  auto state = opt.init(be, polar::make_view(W));
  opt.step(be, polar::make_view(W), polar::make_view(G), state);  // W stays on it
  const double off = (W.transpose() * W - mat::Identity(16, 16)).norm();
  std::printf("riemannian_stiefel: |W^T W - I| = %.1e\n", off);
  if (!(off < 1e-5)) return 1;
  std::printf("riemannian_stiefel: ok\n");
}
