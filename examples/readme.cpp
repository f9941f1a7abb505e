#include <Eigen/Dense>
#include <cstdio>
#include <polar/polar.hpp>

int main() {
  polar::backend::eigen be;
  Eigen::MatrixXf w1 = Eigen::MatrixXf::Random(256, 784), g1(256, 784);  // your model's tensors,
  Eigen::VectorXf b1 = Eigen::VectorXf::Zero(256), gb1(256);             // weights stored (out x in)
  polar::optimizer<polar::backend::eigen, float> opt(be);
  opt.add_group("hidden", polar::muon_direction<>{}, polar::rule::matrices());  // Muon for matrices
  opt.add_group("rest", polar::adamw_direction{});                               // AdamW for the rest
  opt.add("fc1.weight", polar::make_view(w1));
  opt.add("fc1.bias", polar::make_view(b1));
  for (int step = 0; step < 3; ++step) {
    g1 = Eigen::MatrixXf::Random(256, 784);  // your backward pass fills the gradients
    gb1 = Eigen::VectorXf::Random(256);
    opt.step({polar::make_view(g1), polar::make_view(gb1)});
  }
  std::printf("readme: ok\n");
}
