// A user's program: includes polar, makes views of its Eigen matrices and
// multiplies them through the Eigen backend.
#include <polar/polar.hpp>

#include <cstdio>

int main() {
  Eigen::MatrixXd a = Eigen::MatrixXd::Random(20, 10), c(20, 20);
  polar::backend::eigen b;
  b.syrk(polar::uplo::lower, 1.0, polar::op::n, polar::make_view(a), 0.0, polar::make_view(c));
  b.symmetrize(polar::uplo::lower, polar::make_view(c));
  const double err = (c - a * a.transpose()).norm();
  if (err > 1e-10) {
    std::printf("consumer: syrk error %g\n", err);
    return 1;
  }
  std::printf("consumer: polar %s ok\n", POLAR_VERSION_STRING);
  return 0;
}
