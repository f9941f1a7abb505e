#!/usr/bin/env python3
"""Times what GPU users of Muon run today, on the GPU that polar's
bench_cuda runs on, in the same scripts/gpu run.

    python3 bench/torch_gpu.py [--json out.json] [--reps 20]

Needs PyTorch with CUDA; exits 0 with a note where torch or a GPU is
missing, so scripts/gpu can call it unconditionally. On float32 matrices of
GPT-2-small's shapes (768 x 768, 768 x 2304, 768 x 3072, 3072 x 768),
1024 x 4096, 4096 x 4096 and a stack of 64 expert matrices 1024 x 4096:

  ns_bf16/<coeffs>/<shape>   five Newton-Schulz steps in bf16, the form the
                             Muon implementations iterate (normalize by the
                             Frobenius norm, work on the wide orientation,
                             X <- a X + (b A + c A^2) X with A = X X^T),
                             with Jordan's coefficients and with Polar
                             Express's five triples; eager, and under
                             torch.compile
  ns_bf16_loop/<coeffs>/64x1024x4096   the stack, one matrix at a time
  ns_bf16_batched/<coeffs>/64x1024x4096  the stack as one batched call
  muon_step/gpt2_small       torch.optim.Muon.step() over GPT-2-small's 48
                             matrices (12 layers of the four shapes), eager
                             and under torch.compile, where torch.optim.Muon
                             exists (PyTorch 2.9 and later)

Each figure is the median over --reps calls timed by CUDA events after two
warm-up calls. The JSON holds the device, torch's version and every median
in milliseconds; docs/benchmarks.md puts them beside bench_cuda's.
"""
import argparse
import json
import statistics
import sys

# Jordan's quintic coefficients (KellerJordan/Muon), the same triple each step.
JORDAN = [(3.4445, -4.7750, 2.0315)] * 5
# Polar Express's five steps with the safety factor folded in (Amsel et al.,
# 2025; the triples modded-nanogpt and dion use), input scaled by 1.02.
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]
COEFFS = {"jordan": (JORDAN, 1.0), "polar_express": (POLAR_EXPRESS, 1.02)}
GPT2_SHAPES = [(768, 768), (768, 2304), (768, 3072), (3072, 768)]


def newton_schulz_bf16(torch, g, coeffs, scale):
    """The polar factor's approximation that Muon implementations compute,
    on a matrix or a stack of matrices (the last two dimensions)."""
    x = g.bfloat16()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * scale + 1e-7)
    for a, b, c in coeffs:
        s = x @ x.mT
        x = a * x + (b * s + c * (s @ s)) @ x
    if tall:
        x = x.mT
    return x


def median_ms(torch, fn, reps):
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("torch_gpu.py: PyTorch is not installed; nothing to time")
        return 0
    if not torch.cuda.is_available():
        print("torch_gpu.py: torch sees no GPU; nothing to time")
        return 0
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(1)
    results = []

    def record(name, ms):
        results.append({"name": name, "median_ms": ms})
        print(f"{name:48s} {ms:10.3f} ms", flush=True)

    shapes = GPT2_SHAPES + [(1024, 4096), (4096, 4096)]
    for cname, (coeffs, scale) in COEFFS.items():
        ns = lambda g, c=coeffs, s=scale: newton_schulz_bf16(torch, g, c, s)
        ns_compiled = torch.compile(ns)
        for r, c in shapes:
            g = torch.randn(r, c, device=dev, generator=gen)
            record(f"ns_bf16/{cname}/{r}x{c}", median_ms(torch, lambda: ns(g), args.reps))
            record(f"ns_bf16_compiled/{cname}/{r}x{c}", median_ms(torch, lambda: ns_compiled(g), args.reps))
        stack = torch.randn(64, 1024, 4096, device=dev, generator=gen)
        record(f"ns_bf16_loop/{cname}/64x1024x4096",
               median_ms(torch, lambda: [ns(stack[k]) for k in range(stack.size(0))], max(3, args.reps // 4)))
        record(f"ns_bf16_batched/{cname}/64x1024x4096", median_ms(torch, lambda: ns(stack), max(3, args.reps // 4)))

    if hasattr(torch.optim, "Muon"):
        params = [torch.nn.Parameter(torch.randn(r, c, device=dev, generator=gen) * 0.02)
                  for _ in range(12) for (r, c) in GPT2_SHAPES]
        for p in params:
            p.grad = torch.randn(p.shape, device=dev, generator=gen)
        opt = torch.optim.Muon(params, lr=0.02)
        record("muon_step/gpt2_small/eager", median_ms(torch, opt.step, args.reps))
        compiled_step = torch.compile(opt.step)
        record("muon_step/gpt2_small/compiled", median_ms(torch, compiled_step, args.reps))
    else:
        print(f"torch_gpu.py: torch {torch.__version__} has no torch.optim.Muon; its step is not timed")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
