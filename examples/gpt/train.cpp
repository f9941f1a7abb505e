// examples/gpt/train.cpp: trains the character-level GPT of model.hpp on
// Shakespeare with one of polar's optimizers, and reports what the GPT
// experiment (scripts/gpt-bench, docs/gpt.md) compares: validation bits per
// character against steps and seconds, the optimizer's share of the step
// time, its state, the throughput over the GEMM rate measured in the same
// run, and a sample of text.
//
//   polar_gpt --optimizer muon --lr 0.02 --steps 1000 --csv muon.csv
//   polar_gpt --help
//
// Every optimizer trains the same model from the same initialization (the
// seed) on the same batches (the seed too): batch k is a function of the
// seed and k only. The parameters go to one polar::optimizer with groups
// by name (recipes.hpp: the optimizer named on the attention's and MLP's
// matrices, AdamW on the embeddings, head and gains). spsa fine-tunes a
// checkpoint (--load) with forward passes only: two-sided SPSA over every
// tensor, one direction per step, plain SGD on the estimate.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "data.hpp"
#include "recipes.hpp"

namespace {

using backend = polar::backend::eigen;
using model_t = gpt::model<backend, float>;
using clock_type = std::chrono::steady_clock;


struct options {
  std::string optimizer = "muon";
  double lr = -1;        // the hidden group's (all groups' for adamw); -1: the optimizer's default
  double lr_adam = 3e-3;  // the embed and gains groups' for the others
  double weight_decay = -1;  // AdamW's on matrices; -1: 0.1 for adamw, 0 otherwise
  long warmup = -1;       // steps of linear warmup; -1: steps / 20 (0 for md-*)
  long steps = 1000;
  int batch = 16, context = 128, width = 128, layers = 4, heads = 4;
  std::uint64_t seed = 1;
  long eval_every = 100;
  int eval_batches = 16;
  int sample = 300;
  int threads = 0;  // 0: OpenMP's default
  int dual_steps = 10;  // manifold Muon's dual-ascent cap
  double qk_clip = 0;  // QK-clip's tau after each step; 0: off
  double target = 0;  // report the first step whose validation bpc is at most this
  std::string csv, save, load, data = gpt::default_text_path();
  bool quick = false;
};

[[noreturn]] void usage(int code) {
  std::printf(
      "usage: polar_gpt [options]\n"
      "  --optimizer NAME   adamw, muon, normuon, adamuon, polargrad, dion, md-adamw, md-muon, sphere,\n"
      "                     manifold-muon or spsa (default muon)\n"
      "  --lr X             the hidden matrices' learning rate (every group's for adamw);\n"
      "                     defaults: adamw 3e-3, muon 0.02, normuon 0.02, adamuon 3e-3, polargrad 1, dion 0.01,\n"
      "                     md-adamw 3e-3, md-muon 0.02, sphere 3e-3, manifold-muon 0.05, spsa 1e-4\n"
      "  --lr-adam X        the embeddings', head's and gains' AdamW learning rate (default 3e-3)\n"
      "  --weight-decay X   AdamW's decoupled weight decay on matrices (default 0.1 for adamw, else 0)\n"
      "  --warmup N         steps of linear warmup before the cosine decay (default steps/20; 0 for md-*)\n"
      "  --steps N          training steps (default 1000)\n"
      "  --batch N --context N --width N --layers N --heads N   the model and batch (16 128 128 4 4)\n"
      "  --seed N           initialization and batch order (default 1)\n"
      "  --eval-every N --eval-batches N   validation cadence and size (100, 16)\n"
      "  --target X         also report the first evaluation at or below X bits per character\n"
      "  --sample N         characters of text to sample at the end (default 300)\n"
      "  --threads N        OpenMP threads (default: OpenMP's)\n"
      "  --dual-steps N     manifold Muon's dual-ascent iterations at most (default 10)\n"
      "  --qk-clip TAU      after each step, cap every head's largest attention logit at TAU (MuonClip's\n"
      "                     QK-clip, polar::qk_clip; Kimi K2 used 100). Default 0: off. adamw and muon\n"
      "                     only: the others keep the weights on a manifold or in their own state\n"
      "  --csv FILE         the curve: one row per evaluation\n"
      "  --save FILE --load FILE   the model's weights (spsa needs --load)\n"
      "  --data FILE        the corpus (default %s)\n"
      "  --quick            defaults for a tiny run (batch 4 x 32, width 32, 2 layers, 2 heads, 40 steps,\n"
      "                     evaluation every 20 steps on 2 batches): the test suite's check\n",
      gpt::default_text_path().c_str());
  std::exit(code);
}

[[noreturn]] void bad(const std::string& what) {
  std::fprintf(stderr, "polar_gpt: %s (try --help)\n", what.c_str());
  std::exit(2);
}

double number(const std::string& opt, const char* s) {
  char* end;
  const double v = std::strtod(s, &end);
  if (end == s || *end || !std::isfinite(v)) bad(opt + " needs a number, got '" + s + "'");
  return v;
}

long integer(const std::string& opt, const char* s, long lo) {
  char* end;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end || v < lo) bad(opt + " needs an integer >= " + std::to_string(lo) + ", got '" + s + "'");
  return v;
}

options parse(int argc, char** argv) {
  options o;
  // --quick sets the defaults of a tiny run; options given with it still apply.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--quick") {
      o.quick = true;
      o.batch = 4, o.context = 32, o.width = 32, o.layers = 2, o.heads = 2;
      o.steps = 40, o.eval_every = 20, o.eval_batches = 2, o.sample = 60;
    }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") usage(0);
    if (a == "--quick") continue;
    if (i + 1 >= argc) bad(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--optimizer") {
      o.optimizer = v;
      const auto& names = gpt::optimizer_names();
      if (std::find(names.begin(), names.end(), o.optimizer) == names.end())
        bad("unknown optimizer '" + o.optimizer + "'");
    } else if (a == "--lr") {
      o.lr = number(a, v);
      if (!(o.lr > 0)) bad("--lr must be > 0, got " + std::string(v));
    } else if (a == "--lr-adam") {
      o.lr_adam = number(a, v);
      if (!(o.lr_adam > 0)) bad("--lr-adam must be > 0, got " + std::string(v));
    } else if (a == "--weight-decay") {
      o.weight_decay = number(a, v);
      if (o.weight_decay < 0) bad("--weight-decay must be >= 0, got " + std::string(v));
    } else if (a == "--warmup") {
      o.warmup = integer(a, v, 0);
    } else if (a == "--steps") {
      o.steps = integer(a, v, 1);
    } else if (a == "--batch") {
      o.batch = int(integer(a, v, 1));
    } else if (a == "--context") {
      o.context = int(integer(a, v, 2));
    } else if (a == "--width") {
      o.width = int(integer(a, v, 1));
    } else if (a == "--layers") {
      o.layers = int(integer(a, v, 1));
    } else if (a == "--heads") {
      o.heads = int(integer(a, v, 1));
    } else if (a == "--seed") {
      o.seed = std::uint64_t(integer(a, v, 0));
    } else if (a == "--eval-every") {
      o.eval_every = integer(a, v, 1);
    } else if (a == "--eval-batches") {
      o.eval_batches = int(integer(a, v, 1));
    } else if (a == "--target") {
      o.target = number(a, v);
    } else if (a == "--sample") {
      o.sample = int(integer(a, v, 0));
    } else if (a == "--dual-steps") {
      o.dual_steps = int(integer(a, v, 1));
    } else if (a == "--qk-clip") {
      o.qk_clip = number(a, v);
      if (o.qk_clip < 0) bad("--qk-clip must be >= 0, got " + std::string(v));
    } else if (a == "--threads") {
      o.threads = int(integer(a, v, 1));
    } else if (a == "--csv") {
      o.csv = v;
    } else if (a == "--save") {
      o.save = v;
    } else if (a == "--load") {
      o.load = v;
    } else if (a == "--data") {
      o.data = v;
    } else {
      bad("unknown option " + a);
    }
  }
  if (o.width % o.heads != 0)
    bad("--width (" + std::to_string(o.width) + ") must be a multiple of --heads (" + std::to_string(o.heads) + ")");
  if (o.optimizer == "spsa" && o.load.empty()) bad("spsa fine-tunes a trained model: give --load FILE");
  const bool md = o.optimizer.compare(0, 3, "md-") == 0;
  if (o.lr < 0) {
    o.lr = o.optimizer == "muon" || o.optimizer == "md-muon" || o.optimizer == "normuon" ? 0.02
           : o.optimizer == "dion"                                                        ? 0.01
           : o.optimizer == "manifold-muon"                                               ? 0.05
           : o.optimizer == "polargrad"                                                   ? 1.0
           : o.optimizer == "spsa"                                                        ? 1e-4
                                                                                          : 3e-3;
  }
  const bool clippable = o.optimizer == "adamw" || o.optimizer == "muon" || o.optimizer == "normuon" ||
                         o.optimizer == "adamuon" || o.optimizer == "polargrad" || o.optimizer == "dion";
  if (o.qk_clip > 0 && !clippable)
    bad("--qk-clip rescales the weights, which " + o.optimizer +
        " keeps on its manifold or in its own state (D and gains): use it with adamw or a Muon");
  if (o.weight_decay < 0) o.weight_decay = o.optimizer == "adamw" ? 0.1 : 0.0;
  if (o.warmup < 0) o.warmup = md || o.optimizer == "spsa" ? 0 : o.steps / 20;
  return o;
}

// The mean loss over the validation batches (fixed: the same for every run).
double validation_loss(model_t& m, const gpt::corpus& c, const options& o) {
  std::vector<int> x, y;
  double s = 0;
  for (int k = 0; k < o.eval_batches; ++k) {
    gpt::batch(c.valid, 0xBA5Eull, std::uint64_t(k), o.batch, o.context, x, y);
    s += double(m.forward(x.data(), y.data(), o.batch, o.context));
  }
  return s / o.eval_batches;
}

std::string sample_text(model_t& m, const gpt::corpus& c, const options& o, const std::string& prompt) {
  std::vector<int> ids = c.encode(prompt);
  std::uint64_t state = o.seed * 7919 + 17;
  std::vector<double> p(std::size_t(c.vocab()));
  for (int n = 0; n < o.sample; ++n) {
    const int len = int(std::min<std::size_t>(ids.size(), std::size_t(o.context)));
    m.forward(ids.data() + ids.size() - std::size_t(len), nullptr, 1, len);
    const float* lg = m.logits() + std::ptrdiff_t(len - 1) * c.vocab();
    const float mx = *std::max_element(lg, lg + c.vocab());
    double total = 0;
    for (int v = 0; v < c.vocab(); ++v) total += (p[std::size_t(v)] = std::exp(double(lg[v] - mx)));
    state = gpt::mix(state);
    double u = double(state >> 11) * 0x1.0p-53 * total;
    int v = 0;
    while (v + 1 < c.vocab() && (u -= p[std::size_t(v)]) > 0) ++v;
    ids.push_back(v);
  }
  return c.decode(ids);
}

void save_weights(backend& be, model_t& m, const std::string& path) {
  polar::checkpoint ck;
  for (std::size_t k = 0; k < m.tensors().size(); ++k) ck.put(be, m.tensors()[k].name, m.view(k).elements());
  ck.save(path);
}

void load_weights(backend& be, model_t& m, const std::string& path) {
  const auto ck = polar::checkpoint::load(path);
  for (std::size_t k = 0; k < m.tensors().size(); ++k) ck.get(be, m.tensors()[k].name, m.view(k).elements());
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress appears as it happens, also in a log file
  const options o = parse(argc, argv);
#if defined(_OPENMP)
  if (o.threads > 0) omp_set_num_threads(o.threads);
#endif
  // The model's own loops are OpenMP's: polar's products and steps run on
  // the same threads (docs/threads.md).
  polar::use_openmp_threads(true);
  backend be;
  gpt::corpus corpus;
  try {
    corpus = gpt::load_corpus(o.data);
  } catch (const std::exception& e) {
    bad(e.what());
  }
  gpt::config cfg;
  cfg.vocab = corpus.vocab(), cfg.context = o.context, cfg.width = o.width, cfg.heads = o.heads,
  cfg.layers = o.layers;
  model_t m(be, cfg, o.seed);
  if (!o.load.empty()) load_weights(be, m, o.load);

  std::unique_ptr<polar::optimizer<backend, float>> opt;
  polar::spsa est;
  polar::spsa_params<float> sp;
  polar::spsa::workspace<backend, float> sws;
  if (o.optimizer == "spsa") {
    est.epsilon = 1e-3;
    est.seed = o.seed;
    for (std::size_t k = 0; k < m.tensors().size(); ++k) sp.add(m.view(k).elements());
  } else {
    gpt::recipe r;
    r.optimizer = o.optimizer, r.lr = o.lr, r.lr_adam = o.lr_adam, r.weight_decay = o.weight_decay;
    r.warmup = o.warmup, r.steps = o.steps, r.dual_steps = o.dual_steps;
    opt = gpt::make_optimizer(be, m, r);
  }

  const double rate = gpt::gemm_rate(be, polar::index(o.batch) * o.context, o.width, o.quick ? 0.02 : 0.2);
  const double flops_step = gpt::flops_per_token(cfg, o.context) * o.batch * o.context;
  std::printf("gpt: %s, %zu parameters (V %d, context %d, width %d, %d layers, %d heads), batch %d x %d, %d threads\n",
              o.optimizer.c_str(), m.parameter_count(), cfg.vocab, cfg.context, cfg.width, cfg.layers, cfg.heads,
              o.batch, o.context, be.threads());
  std::printf("gpt: lr %g, lr-adam %g, weight decay %g, warmup %ld, steps %ld, seed %llu; GEMM rate %.1f GFLOP/s\n",
              o.lr, o.lr_adam, o.weight_decay, o.warmup, o.steps, static_cast<unsigned long long>(o.seed),
              rate * 1e-9);
  if (opt)
    for (polar::index k = 0; k < opt->groups(); ++k)
      std::printf("gpt: group %-6s %s, %zu tensors\n", opt->group_at(k).name().c_str(),
                  opt->group_at(k).policy_name().c_str(), std::size_t(opt->group_at(k).size()));

  std::FILE* csv = nullptr;
  if (!o.csv.empty()) {
    csv = std::fopen(o.csv.c_str(), "w");
    if (!csv) bad("cannot write " + o.csv);
    std::fprintf(csv, "optimizer,width,lr,seed,step,tokens,seconds,optimizer_seconds,train_loss,val_bpc\n");
  }
  const double ln2 = std::log(2.0);
  const double initial = validation_loss(m, corpus, o) / ln2;
  std::printf("gpt: step %5d  val %.4f bpc\n", 0, initial);
  if (csv)
    std::fprintf(csv, "%s,%d,%g,%llu,0,0,0,0,,%.6f\n", o.optimizer.c_str(), o.width, o.lr,
                 static_cast<unsigned long long>(o.seed), initial);

  std::vector<polar::param_view<const float>> grads;  // views of the model's gradients: made once
  for (std::size_t k = 0; k < m.tensors().size(); ++k) grads.push_back(m.gradient(k));
  polar::qk_clip clip;
  clip.tau = o.qk_clip > 0 ? o.qk_clip : 100;
  long clipped = 0;  // head-steps QK-clip rescaled
  std::vector<int> x, y;
  double model_seconds = 0, opt_seconds = 0, train_loss = 0, last_val = initial, window = 0;
  long window_n = 0, target_step = -1;
  double target_seconds = 0;
  for (long step = 1; step <= o.steps; ++step) {
    gpt::batch(corpus.train, o.seed, std::uint64_t(step), o.batch, o.context, x, y);
    if (opt) {
      const auto t0 = clock_type::now();
      train_loss = double(m.forward(x.data(), y.data(), o.batch, o.context));
      m.backward();
      const auto t1 = clock_type::now();
      try {
        opt->step(grads);
      } catch (const polar::non_finite_error& e) {
        std::printf("gpt: %s\n", e.what());
        train_loss = std::numeric_limits<double>::quiet_NaN();
      }
      if (o.qk_clip > 0)
        for (int l = 0; l < cfg.layers; ++l)
          clipped += clip.apply(be, m.view(m.query_index(l)).matrix(), m.view(m.key_index(l)).matrix(), cfg.heads,
                                m.max_logits(l));
      const auto t2 = clock_type::now();
      model_seconds += std::chrono::duration<double>(t1 - t0).count();
      opt_seconds += std::chrono::duration<double>(t2 - t1).count();
    } else {
      const auto t0 = clock_type::now();
      const auto g = est.estimate(
          be, sp, [&] { return m.forward(x.data(), y.data(), o.batch, o.context); }, std::uint32_t(step), sws);
      train_loss = g.loss;
      const auto t1 = clock_type::now();
      polar::spsa_sgd_step(be, sp, g, o.lr);
      const auto t2 = clock_type::now();
      model_seconds += std::chrono::duration<double>(t1 - t0).count();
      opt_seconds += std::chrono::duration<double>(t2 - t1).count();
    }
    if (!std::isfinite(train_loss)) {
      std::printf("gpt: diverged: the training loss or a gradient is not finite at step %ld; stopping\n", step);
      last_val = std::numeric_limits<double>::quiet_NaN();
      break;
    }
    window += train_loss, ++window_n;
    if (step % o.eval_every == 0 || step == o.steps) {
      last_val = validation_loss(m, corpus, o) / ln2;
      const double secs = model_seconds + opt_seconds;
      std::printf("gpt: step %5ld  train %.4f bpc  val %.4f bpc  %.1f s (optimizer %.1f%%)\n", step,
                  window / double(window_n) / ln2, last_val, secs, 100 * opt_seconds / secs);
      if (csv)
        std::fprintf(csv, "%s,%d,%g,%llu,%ld,%lld,%.4f,%.4f,%.6f,%.6f\n", o.optimizer.c_str(), o.width, o.lr,
                     static_cast<unsigned long long>(o.seed), step,
                     static_cast<long long>(step) * o.batch * o.context, secs, opt_seconds,
                     window / double(window_n) / ln2, last_val);
      if (o.target > 0 && target_step < 0 && last_val <= o.target) target_step = step, target_seconds = secs;
      window = 0, window_n = 0;
    }
  }
  if (csv) std::fclose(csv);
  const double secs = model_seconds + opt_seconds;
  const double tokens = double(o.steps) * o.batch * o.context;
  const double achieved = flops_step * double(o.steps) / secs;
  std::printf("gpt: %.0f tokens/s, %.1f GFLOP/s = %.1f%% of the GEMM rate; optimizer %.1f%% of the step; "
              "optimizer state %zu bytes (%.2f x the parameters)\n",
              tokens / secs, achieved * 1e-9, 100 * achieved / rate, 100 * opt_seconds / secs,
              opt ? opt->state_bytes() : std::size_t(0),
              opt ? double(opt->state_bytes()) / double(m.parameter_count() * sizeof(float)) : 0.0);
  if (o.qk_clip > 0)
    std::printf("gpt: QK-clip at tau %g rescaled %ld head-steps of %ld\n", o.qk_clip, clipped,
                long(cfg.layers) * cfg.heads * o.steps);
  if (o.target > 0) {
    if (target_step > 0)
      std::printf("gpt: reached %.4f bpc at step %ld (%.1f s)\n", o.target, target_step, target_seconds);
    else
      std::printf("gpt: did not reach %.4f bpc\n", o.target);
  }
  std::printf("gpt: summary optimizer=%s width=%d lr=%g seed=%llu val_bpc=%.6f seconds=%.3f opt_share=%.4f "
              "mfu=%.4f state_bytes=%zu target_step=%ld qk_clipped=%ld\n",
              o.optimizer.c_str(), o.width, o.lr, static_cast<unsigned long long>(o.seed), last_val, secs,
              opt_seconds / secs, achieved / rate, opt ? opt->state_bytes() : std::size_t(0), target_step, clipped);
  if (o.sample > 0) std::printf("gpt: sample:\n%s\n", sample_text(m, corpus, o, "ROMEO:").c_str());
  if (!o.save.empty()) save_weights(be, m, o.save);
  // The quick run's check: the training moved the validation loss the
  // right way (SPSA, one direction per step, is allowed to stand still).
  const bool ok = std::isfinite(last_val) && (o.optimizer == "spsa" ? last_val <= initial * 1.001 : last_val < initial);
  if (!ok) {
    std::printf("gpt: validation went from %.4f to %.4f bpc\n", initial, last_val);
    return 1;
  }
  std::printf("gpt: ok\n");
  return 0;
}
