// A parameter set on a small network: a two-layer perceptron y = W2 tanh(W1 x
// + b1) + b2 learns a teacher network of the same shape. The matrices go to
// Muon, the biases to AdamW, in one step call per batch.
#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <polar/polar.hpp>

using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using vec = Eigen::VectorXf;

struct mlp {
  mat w1, w2;
  vec b1, b2;
  mlp(int in, int hidden, int out, std::uint64_t seed)
      : w1(hidden, in), w2(out, hidden), b1(vec::Zero(hidden)), b2(vec::Zero(out)) {
    polar::backend::eigen be;
    be.fill_random(polar::make_view(w1), polar::rng_key{seed}, polar::distribution::normal, 1.0f / std::sqrt(float(in)));
    be.fill_random(polar::make_view(w2), polar::rng_key{seed + 1}, polar::distribution::normal,
                   1.0f / std::sqrt(float(hidden)));
  }
  mat forward(const mat& x, mat* h = nullptr) const {
    mat a = ((x * w1.transpose()).rowwise() + b1.transpose()).array().tanh().matrix();
    if (h) *h = a;
    return (a * w2.transpose()).rowwise() + b2.transpose();
  }
};

int main() {
  const int in = 32, hidden = 128, out = 8, batch = 256;
  polar::backend::eigen be;
  const mlp teacher(in, hidden, out, 100);
  mlp net(in, hidden, out, 200);

  polar::parameter_set<polar::backend::eigen, float> params(be);  // Muon for matrices, AdamW for the rest
  params.matrix_direction.lr = 0.02;
  params.other_direction.lr = 3e-3;
  params.other_direction.weight_decay = 0;
  params.add("w1", polar::make_view(net.w1));
  params.add("b1", polar::make_view(net.b1));
  params.add("w2", polar::make_view(net.w2));
  params.add("b2", polar::make_view(net.b2));
  for (polar::index i = 0; i < params.size(); ++i)
    std::printf("parameter_set: %-3s -> %s\n", params.name(i).c_str(), params.routed_to_matrix(i) ? "Muon" : "AdamW");

  mat gw1(hidden, in), gw2(out, hidden);
  vec gb1(hidden), gb2(out);
  float first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    mat x(batch, in);
    be.fill_random(polar::make_view(x), polar::rng_key{7, 0, std::uint32_t(step)}, polar::distribution::normal);
    mat h;
    const mat y = net.forward(x, &h), r = (y - teacher.forward(x)) / float(batch);
    const float loss = 0.5f * float(batch) * r.squaredNorm();
    if (step == 0) first = loss;
    last = loss;
    // Backward pass by hand.
    gw2 = r.transpose() * h;
    gb2 = r.colwise().sum().transpose();
    const mat dh = ((r * net.w2).array() * (1 - h.array().square())).matrix();
    gw1 = dh.transpose() * x;
    gb1 = dh.colwise().sum().transpose();
    const float decay = std::pow(0.995f, float(step));
    params.matrix_direction.lr = 0.02 * decay;
    params.other_direction.lr = 3e-3 * decay;
    params.step({polar::make_view(gw1), polar::make_view(gb1), polar::make_view(gw2), polar::make_view(gb2)});
    if (step % 100 == 0) std::printf("parameter_set: step %3d loss %.5f\n", step, loss);
  }
  std::printf("parameter_set: loss from %.5f to %.5f\n", first, last);
  if (!(last < 0.2f * first)) return 1;
  std::printf("parameter_set: ok\n");
  return 0;
}
