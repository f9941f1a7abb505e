// examples/digits.hpp: reads data/digits.csv.gz (see data/README.md), and
// the perceptron the demo, the width-transfer experiment and the
// decentralized example train on it.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <polar/polar.hpp>

#include "gz_text.hpp"

#ifndef POLAR_DATA_DIR
#define POLAR_DATA_DIR "data"
#endif

namespace examples {

using rmatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct digits {
  rmatrix x;                // one image per row, pixels scaled to [0, 1]
  std::vector<int> labels;  // 0..9
};

/// The default path of the data set: the source tree's data/ folder.
inline std::string default_digits_path() { return std::string(POLAR_DATA_DIR) + "/digits.csv.gz"; }

/// Reads the gzipped CSV: 64 pixels 0..16 and a label 0..9 per line.
inline digits load_digits(const std::string& path) {
  const std::string text = read_gz(path);
  std::vector<float> values;
  std::vector<int> labels;
  const char* p = text.c_str();
  while (*p) {
    for (int k = 0; k < 65; ++k) {
      char* end;
      const long v = std::strtol(p, &end, 10);
      if (end == p) throw std::runtime_error("malformed line in " + path);
      if (k < 64) {
        if (v < 0 || v > 16) throw std::runtime_error("pixel out of 0..16 in " + path);
        values.push_back(float(v) / 16.0f);
      } else {
        if (v < 0 || v > 9) throw std::runtime_error("label out of 0..9 in " + path);
        labels.push_back(int(v));
      }
      p = end;
      while (*p == ',' || *p == '\r' || *p == '\n' || *p == ' ') ++p;
    }
  }
  if (labels.empty()) throw std::runtime_error("no images in " + path);
  digits d;
  d.x = Eigen::Map<rmatrix>(values.data(), polar::index(labels.size()), 64);
  d.labels = labels;
  return d;
}

/// The digits cut into a training and a test set.
struct split {
  rmatrix train_x, test_x;
  std::vector<int> train_y, test_y;
};

/// A fixed shuffle (the same on every machine and standard library: the
/// generator's output is specified, the modulo is ours), then the first
/// 1500 (at most 6/7) train.
inline split split_digits(const digits& d) {
  const std::size_t n = d.labels.size();
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 g(20260101);
  for (std::size_t i = n; i-- > 1;) std::swap(order[i], order[std::size_t(g() % (i + 1))]);
  if (n < 14) throw std::runtime_error("the data set has " + std::to_string(n) + " images; the examples need at least 14");
  const std::size_t n_train = std::min<std::size_t>(1500, n - n / 7);  // 1500 of the 1797 digits
  split s;
  s.train_x.resize(polar::index(n_train), 64);
  s.test_x.resize(polar::index(n - n_train), 64);
  for (std::size_t i = 0; i < n; ++i) {
    if (i < n_train) {
      s.train_x.row(polar::index(i)) = d.x.row(polar::index(order[i]));
      s.train_y.push_back(d.labels[order[i]]);
    } else {
      s.test_x.row(polar::index(i - n_train)) = d.x.row(polar::index(order[i]));
      s.test_y.push_back(d.labels[order[i]]);
    }
  }
  return s;
}

// ---- the perceptron --------------------------------------------------------

/// A perceptron without biases: 64 -> width [-> width ...] -> 10, ReLU.
struct network {
  std::vector<rmatrix> w;  // w[0]: width x 64, then width x width, last: 10 x width
};

inline network make_network(int width, int depth, std::uint64_t seed) {
  polar::backend::eigen be;
  network net;
  int fan_in = 64;
  for (int l = 0; l <= depth; ++l) {
    const int out = l == depth ? 10 : width;
    rmatrix w(out, fan_in);
    // He's initialization for the ReLU layers, LeCun's for the output.
    const double gain = l == depth ? 1.0 : 2.0;
    be.fill_random(polar::make_view(w), polar::rng_key{seed, std::uint32_t(l), std::uint32_t(width)},
                   polar::distribution::normal, float(std::sqrt(gain / fan_in)));
    net.w.push_back(std::move(w));
    fan_in = out;
  }
  return net;
}

// Mean cross-entropy of the rows of x (labels y); with grads, dL/dW of each
// layer. acts is scratch: the layers' inputs.
inline double loss_and_grads(const network& net, const rmatrix& x, const int* y, std::vector<rmatrix>* grads,
                             std::vector<rmatrix>& acts) {
  const std::size_t layers = net.w.size();
  acts.resize(layers);
  acts[0] = x;
  for (std::size_t l = 0; l + 1 < layers; ++l) {
    acts[l + 1].resize(x.rows(), net.w[l].rows());
    acts[l + 1].noalias() = acts[l] * net.w[l].transpose();
    acts[l + 1] = acts[l + 1].cwiseMax(0.0f);
  }
  rmatrix logits = acts[layers - 1] * net.w[layers - 1].transpose();
  double loss = 0;
  const float inv_n = 1.0f / float(x.rows());
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    auto row = logits.row(i);
    const float top = row.maxCoeff();
    const float sum = (row.array() - top).exp().sum();
    loss += double(top) + std::log(double(sum)) - double(row(y[i]));
    if (grads) {  // softmax - one-hot, over the batch
      row = ((row.array() - top).exp() / sum).matrix();
      row(y[i]) -= 1.0f;
      row *= inv_n;
    }
  }
  if (grads) {
    grads->resize(layers);
    rmatrix delta = std::move(logits);
    for (std::size_t l = layers; l-- > 0;) {
      (*grads)[l].resize(net.w[l].rows(), net.w[l].cols());
      (*grads)[l].noalias() = delta.transpose() * acts[l];
      if (l == 0) break;
      rmatrix back = delta * net.w[l];
      delta = (acts[l].array() > 0.0f).select(back, 0.0f);
    }
  }
  return loss / double(x.rows());
}

/// The fraction of the rows of x whose largest logit is their label (y[i]).
inline double accuracy(const network& net, const rmatrix& x, const int* y) {
  rmatrix a = x;
  for (std::size_t l = 0; l < net.w.size(); ++l) {
    rmatrix next = a * net.w[l].transpose();
    a = l + 1 < net.w.size() ? rmatrix(next.cwiseMax(0.0f)) : next;
  }
  int right = 0;
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    Eigen::Index k;
    a.row(i).maxCoeff(&k);
    right += int(k) == y[i];
  }
  return double(right) / double(a.rows());
}

}  // namespace examples
