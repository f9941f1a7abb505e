// One optimizer for a whole model: a two-layer perceptron
// y = W2 tanh(W1 x + b1) + b2 learns a teacher network of the same shape.
// The hidden matrix steps with Muon on a cosine schedule with warmup, the
// output layer with MD-AdamW, the biases with AdamW without weight decay;
// the gradients are clipped to norm 1 together; one step() call per batch.
#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <polar/polar.hpp>

using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using vec = Eigen::VectorXf;

struct mlp {
  mat w1, w2;  // stored (out x in), as torch's nn.Linear
  vec b1, b2;
  mlp(int in, int hidden, int out, std::uint64_t seed)
      : w1(hidden, in), w2(out, hidden), b1(vec::Zero(hidden)), b2(vec::Zero(out)) {
    polar::backend::eigen be;
    be.fill_random(polar::make_view(w1), polar::rng_key{seed}, polar::distribution::normal, 1 / std::sqrt(float(in)));
    be.fill_random(polar::make_view(w2), polar::rng_key{seed + 1}, polar::distribution::normal,
                   1 / std::sqrt(float(hidden)));
  }
  mat forward(const mat& x, mat* h = nullptr) const {
    mat a = ((x * w1.transpose()).rowwise() + b1.transpose()).array().tanh().matrix();
    if (h) *h = a;
    return (a * w2.transpose()).rowwise() + b2.transpose();
  }
};

int main() {
  const int in = 32, hidden = 128, out = 8, batch = 256, steps = 300;
  polar::backend::eigen be;
  const mlp teacher(in, hidden, out, 100);
  mlp net(in, hidden, out, 200);

  polar::optimizer<polar::backend::eigen, float> opt(be);
  polar::muon_direction<> muon;
  muon.lr = 0.02;
  auto& hidden_group = opt.add_group("hidden", muon, polar::rule::name("w1"));
  hidden_group.lr_schedule = polar::schedule::cosine(steps, 0.1, 10);
  polar::md_adamw md;
  md.direction.lr = 3e-3;
  opt.add_group("head", md, polar::rule::name("w2"));
  opt.add_group("biases", polar::adamw_direction{3e-3, 0.9, 0.999, 1e-8, 0.0}, polar::rule::vectors());
  opt.clip_norm = 1.0;
  opt.add("w1", polar::make_view(net.w1));
  opt.add("b1", polar::make_view(net.b1));
  opt.add("w2", polar::make_view(net.w2));
  opt.add("b2", polar::make_view(net.b2));
  for (polar::index i = 0; i < opt.size(); ++i)
    std::printf("optimizer: %-3s -> %s\n", opt.name(i).c_str(), opt.group_of(i).name().c_str());

  mat gw1(hidden, in), gw2(out, hidden);
  vec gb1(hidden), gb2(out);
  float first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    mat x(batch, in);
    be.fill_random(polar::make_view(x), polar::rng_key{7, 0, std::uint32_t(step)}, polar::distribution::normal);
    mat h;
    const mat y = net.forward(x, &h), r = (y - teacher.forward(x)) / float(batch);
    const float loss = 0.5f * float(batch) * r.squaredNorm();
    if (step == 0) first = loss;
    last = loss;
    // The backward pass, by hand.
    gw2 = r.transpose() * h;
    gb2 = r.colwise().sum().transpose();
    const mat dh = ((r * net.w2).array() * (1 - h.array().square())).matrix();
    gw1 = dh.transpose() * x;
    gb1 = dh.colwise().sum().transpose();
    opt.step({polar::make_view(gw1), polar::make_view(gb1), polar::make_view(gw2), polar::make_view(gb2)});
    if (step % 100 == 0) std::printf("optimizer: step %3d loss %.5f |g| %.3f\n", step, loss, opt.last_norm());
  }
  std::printf("optimizer: loss from %.5f to %.5f; state %zu bytes, shared scratch %zu bytes\n", first, last,
              opt.state_bytes(), opt.scratch_bytes());

  // The whole optimizer (weights, states, schedule positions) round-trips
  // through a checkpoint.
  polar::checkpoint ck;
  opt.save(ck);
  opt.load(polar::checkpoint::parse(ck.serialize()));
  if (!(last < 0.2f * first) || opt.steps() != steps) return 1;
  std::printf("optimizer: ok\n");
  return 0;
}
