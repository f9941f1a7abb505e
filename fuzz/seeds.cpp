// fuzz/seeds.cpp: writes the checkpoint fuzzer's seed inputs, small valid
// checkpoints of each kind of entry and of a few optimizer states, into the
// directory given as its argument. fuzz/corpus/checkpoint/seed_* were made
// by it (scripts/fuzz --seeds); the fuzzer's own finds sit beside them.
#include <cstdio>
#include <string>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "polar/checkpoint.hpp"
#include "polar/direction/adamw.hpp"
#include "polar/direction/muon.hpp"
#include "polar/gains/row_col_gains.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  polar::backend::eigen be;
  int written = 0;
  const auto write = [&](const char* name, const polar::checkpoint& ck) {
    ck.save(dir + "/seed_" + name);
    ++written;
  };

  write("empty", polar::checkpoint{});

  polar::checkpoint scalars;
  scalars.put_integer("steps", 3);
  scalars.put_real("lr", 0.02);
  write("scalars", scalars);

  std::vector<float> wf = {0.5f, -1.0f, 0.25f, 2.0f, -0.75f, 1.5f};
  std::vector<double> wd = {0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 0.125, -2.5};
  polar::checkpoint tensors;
  tensors.put(be, "w", polar::matrix_view<float>(wf.data(), 2, 3, 3, 1));
  tensors.put(be, "v", polar::matrix_view<double>(wd.data(), 4, 2, 2, 1));
  write("tensors", tensors);

  // The name "s" is the one the harness loads into an AdamW state of 2x3.
  polar::adamw_direction adamw;
  auto sa = adamw.init(be, polar::matrix_view<float>(wf.data(), 2, 3, 3, 1));
  std::vector<float> g = {0.1f, 0.2f, -0.3f, 0.4f, -0.5f, 0.6f};
  adamw.step(be, polar::matrix_view<float>(wf.data(), 2, 3, 3, 1),
             polar::matrix_view<const float>(g.data(), 2, 3, 3, 1), sa);
  polar::checkpoint a;
  a.put_state(be, "s", sa);
  write("adamw", a);

  polar::muon_direction<> muon;
  auto sm = muon.init(be, polar::matrix_view<double>(wd.data(), 4, 2, 2, 1));
  polar::checkpoint m;
  m.put_state(be, "s", sm);
  write("muon", m);

  polar::md_adamw md;
  auto sd = md.init(be, polar::matrix_view<float>(wf.data(), 2, 3, 3, 1));
  polar::checkpoint d;
  d.put_state(be, "md", sd);
  d.put(be, "w", polar::matrix_view<float>(wf.data(), 2, 3, 3, 1));
  write("md_adamw", d);

  std::printf("seeds: %d checkpoints in %s\n", written, dir.c_str());
  return 0;
}
