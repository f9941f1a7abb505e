// examples/digits.hpp: reads data/digits.csv.gz (see data/README.md), for
// the demo and the width-transfer experiment.
#pragma once

#include <zlib.h>

#include <Eigen/Core>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <polar/core/view.hpp>

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
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string text;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) text.append(buf, std::size_t(n));
  gzclose(f);
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

}  // namespace examples
