// polar/orthogonalize/schedules.hpp: Newton–Schulz coefficient schedules.
//
// One Newton–Schulz step on X (n x m, n <= m) is
//
//   A = X X^T,   X <- a X + (b A + c A^2) X,
//
// which applies p(s) = a s + b s^3 + c s^5 to every singular value s of X and
// leaves the singular vectors alone; a schedule's polynomials drive every s
// of the scaled input towards 1, so X tends to the polar factor U V^T of the
// input. Each schedule is published together with its input scaling
// X0 = G / (scale ||G||_F + eps); the pairs below are as published. Sources:
// jordan5, KellerJordan/Muon muon.py and torch/optim/_muon.py; you5, the
// modded-nanogpt record of 2025-02-14; polar_express5, modded-nanogpt,
// karpathy/nanochat and microsoft/dion polar_express.py; polar_express8,
// NoahAmsel/PolarExpress polar_express/basic.py (Amsel, Persson, Musco and
// Gower, "The Polar Express", arXiv 2505.16932); cans5, arXiv 2506.10935;
// cubic, Higham, "Functions of Matrices" (SIAM 2008), ch. 8:
//
//   jordan5          Keller Jordan's quintic (3.4445, -4.7750, 2.0315) x 5,
//                    G / (||G||_F + 1e-7): singular values end in about
//                    [0.68, 1.13], cheap and good enough for Muon.
//   you5             Jiacheng You's five tuned quintics, G / (||G||_F + 1e-7).
//   polar_express5   Polar Express, 5 steps with the 1.02 safety factor
//                    folded in, G / (1.02 ||G||_F + 1e-6).
//   polar_express8   Polar Express, 8 steps, raw: the first seven triples
//                    divided by (s, s^3, s^5), s = 1.01, the last
//                    (1.875, -1.25, 0.375) repeating; G / (1.01 ||G||_F).
//   cans5            CANS, 5 steps, G / ||G||_F (arXiv 2506.10935).
//   cubic            the classic (1.5, -0.5, 0), G / ||G||_F, converges
//                    quadratically near 1 but slowly from small values.
//   turbo4           Turbo-Muon (Boissin, Massena, Mamalet and Serrurier,
//                    arXiv 2512.04632; thib-s/flash-newton-schulz): AOL
//                    input scaling, then the last four of you5's steps.
//
// AOL scaling (aol = true) replaces the division by the Frobenius norm: with
// A = X X^T for the wide X (n x m), each row i of X is divided by
// sqrt(sum_j |A(i, j)|) (at least eps), which bounds the spectral norm by 1
// (Gershgorin) far more tightly than the Frobenius norm does, so one step
// fewer reaches the same accuracy; the Gram matrix of the scaled X is D A D,
// so the first step reuses A instead of forming it again. The scaling is a
// preconditioner, not a similarity: the result approximates the polar
// factor of D X, which differs from X's (bench_muon's accuracy table
// measures by how much).
#pragma once

#include <array>
#include <cstddef>

namespace polar {

/// The coefficients of one step: X <- a X + (b A + c A^2) X.
struct ns_step {
  double a;  ///< the coefficient of X
  double b;  ///< of X X^T X
  double c;  ///< of (X X^T)^2 X
};

/// A Newton–Schulz schedule: its steps, its input scaling, and how many
/// steps to run by default.
struct ns_schedule {
  static constexpr std::size_t max_steps = 16;  ///< the most distinct steps a schedule lists
  std::array<ns_step, max_steps> steps{};  ///< the distinct steps, in order
  int count = 0;                           ///< how many of `steps` are set
  int iterations = 0;                      ///< steps run by default
  double norm_scale = 1.0;                 ///< X0 = G / (norm_scale ||G||_F + eps)
  double eps = 0.0;  ///< added to the norm the input is divided by
  const char* name = "";  ///< for messages and benchmarks
  bool aol = false;       ///< AOL row scaling instead of the Frobenius norm (see above); eps is its floor

  /// The coefficients of iteration k; past the listed steps the last one
  /// repeats.
  constexpr ns_step at(int k) const noexcept { return steps[std::size_t(k < count ? k : count - 1)]; }
};

namespace schedules {

inline constexpr ns_schedule jordan5 = {
    {{{3.4445, -4.7750, 2.0315}}}, 1, 5, 1.0, 1e-7, "jordan5"};

inline constexpr ns_schedule you5 = {{{{4.0848, -6.8946, 2.9270},
                                       {3.9505, -6.3029, 2.6377},
                                       {3.7418, -5.5913, 2.3037},
                                       {2.8769, -3.1427, 1.2046},
                                       {2.8366, -3.0525, 1.2012}}},
                                     5,
                                     5,
                                     1.0,
                                     1e-7,
                                     "you5"};

inline constexpr ns_schedule polar_express5 = {
    {{{8.156554524902461, -22.48329292557795, 15.878769915207462},
      {4.042929935166739, -2.808917465908714, 0.5000178451051316},
      {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
      {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
      {2.3465413258596377, -1.7097828382687081, 0.42323551169305323}}},
    5,
    5,
    1.02,
    1e-6,
    "polar_express5"};

namespace detail {
// Polar Express 8-step raw triples divided by (s, s^3, s^5), s = 1.01.
constexpr double s1 = 1.01, s3 = 1.01 * 1.01 * 1.01, s5 = 1.01 * 1.01 * 1.01 * 1.01 * 1.01;
constexpr ns_step pe8(double a, double b, double c) { return {a / s1, b / s3, c / s5}; }
}  // namespace detail

inline constexpr ns_schedule polar_express8 = {
    {{detail::pe8(8.28721201814563, -23.595886519098837, 17.300387312530933),
      detail::pe8(4.107059111542203, -2.9478499167379106, 0.5448431082926601),
      detail::pe8(3.9486908534822946, -2.908902115962949, 0.5518191394370137),
      detail::pe8(3.3184196573706015, -2.488488024314874, 0.51004894012372),
      detail::pe8(2.300652019954817, -1.6689039845747493, 0.4188073119525673),
      detail::pe8(1.891301407787398, -1.2679958271945868, 0.37680408948524835),
      detail::pe8(1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
      {1.875, -1.25, 0.375}}},
    8,
    8,
    1.01,
    0.0,
    "polar_express8"};

inline constexpr ns_schedule cans5 = {{{{8.4703, -25.1081, 18.6293},
                                        {4.1828, -3.1087, 0.5806},
                                        {3.9619, -2.9541, 0.5630},
                                        {3.2866, -2.4647, 0.5074},
                                        {2.2737, -1.6447, 0.4162}}},
                                      5,
                                      5,
                                      1.0,
                                      0.0,
                                      "cans5"};

inline constexpr ns_schedule cubic = {{{{1.5, -0.5, 0.0}}}, 1, 12, 1.0, 0.0, "cubic"};

inline constexpr ns_schedule turbo4 = {{{{3.9505, -6.3029, 2.6377},
                                         {3.7418, -5.5913, 2.3037},
                                         {2.8769, -3.1427, 1.2046},
                                         {2.8366, -3.0525, 1.2012}}},
                                       4,
                                       4,
                                       1.0,
                                       1e-7,
                                       "turbo4",
                                       true};

}  // namespace schedules
}  // namespace polar
