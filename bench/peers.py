#!/usr/bin/env python3
"""Times the Muon steps that users run today beside polar's, in one run.

    python3 bench/peers.py [--bench build/release/bench/bench_muon] [--json out.json]

On the same CPU and the same float32 shapes as bench_muon's bm_step
(256 x 1024, 512 x 2048, 1024 x 4096), it times one whole optimizer step
(momentum, five Newton-Schulz steps with Jordan's coefficients, update) of:

  polar     bench_muon --benchmark_filter=^bm_step (muon_direction with
            optax's bias-corrected Nesterov momentum), run as a subprocess
  optax     optax.contrib.muon on JAX's CPU backend, the update and
            apply_updates under one jax.jit, timed to block_until_ready
  torch     torch.optim.Muon (PyTorch 2.9 and later) on the CPU, where torch
            is installed; it runs Newton-Schulz in bfloat16, which CPUs
            with AMX (Sapphire Rapids and later) multiply in hardware
  torch-f32 the same step written with torch's float32 matmuls (momentum,
            Nesterov, five Newton-Schulz steps, update): torch.optim.Muon's
            arithmetic without its cast to bfloat16, for the float figure

and prints each peer's median step time over polar's (above 1: polar is
faster). A peer that is not installed is reported as such and skipped; the
script needs only the polar binary. Each peer runs with its library's
default threads (JAX's and torch's use every core; polar, OMP_NUM_THREADS or
POLAR_NUM_THREADS, every core by default).

Install the peers from PyPI into a virtual environment: pip install jax
optax torch (PyPI's torch is the CUDA build, about 5 GB with its libraries;
it runs on the CPU where there is no GPU).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = [(256, 1024), (512, 2048), (1024, 4096)]
LR = 1e-4


def median_seconds(step, budget=2.0, min_calls=5):
    step()  # warm-up (and compilation, for JAX)
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def polar_times(binary):
    out = subprocess.run(
        [binary, "--benchmark_filter=^bm_step/", "--benchmark_format=json", "--benchmark_min_time=2"],
        check=True, capture_output=True, text=True).stdout
    times = {}
    for b in json.loads(out)["benchmarks"]:
        # bm_step/256/1024/real_time, time in milliseconds
        parts = b["name"].split("/")
        times[(int(parts[1]), int(parts[2]))] = b["real_time"] * 1e-3
    return times


def optax_times():
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as e:
        return None, f"not installed ({e.name})"
    jax.config.update("jax_platforms", "cpu")
    times = {}
    for n, m in SHAPES:
        key = jax.random.PRNGKey(0)
        w = 0.02 * jax.random.normal(key, (n, m), jnp.float32)
        g = 1e-3 * jax.random.normal(jax.random.PRNGKey(1), (n, m), jnp.float32)
        tx = optax.contrib.muon(learning_rate=LR, ns_coeffs=(3.4445, -4.7750, 2.0315), ns_steps=5,
                                beta=0.95, nesterov=True)
        state = tx.init(w)

        @jax.jit
        def step(w, state, g):
            updates, state = tx.update(g, state, w)
            return optax.apply_updates(w, updates), state

        holder = [w, state]

        def run():
            holder[0], holder[1] = step(holder[0], holder[1], g)
            holder[0].block_until_ready()

        times[(n, m)] = median_seconds(run)
    return times, f"jax {jax.__version__}, optax {optax.__version__}"


def torch_times():
    try:
        import torch
    except ImportError as e:
        return None, f"not installed ({e.name})"
    if not hasattr(torch.optim, "Muon"):
        return None, f"torch {torch.__version__} has no torch.optim.Muon (2.9 and later)"
    times = {}
    for n, m in SHAPES:
        gen = torch.Generator().manual_seed(0)
        w = torch.nn.Parameter(0.02 * torch.randn(n, m, generator=gen))
        w.grad = 1e-3 * torch.randn(n, m, generator=gen)
        opt = torch.optim.Muon([w], lr=LR, momentum=0.95, nesterov=True, ns_steps=5)
        times[(n, m)] = median_seconds(opt.step)
    return times, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def torch_f32_times():
    try:
        import torch
    except ImportError as e:
        return None, f"not installed ({e.name})"
    a, b, c = 3.4445, -4.7750, 2.0315
    times = {}
    for n, m in SHAPES:
        gen = torch.Generator().manual_seed(0)
        w = 0.02 * torch.randn(n, m, generator=gen)
        g = 1e-3 * torch.randn(n, m, generator=gen)
        buf = torch.zeros_like(w)

        def step():
            buf.lerp_(g, 1 - 0.95)
            x = g.lerp(buf, 0.95)
            x = x / (x.norm() + 1e-7)
            for _ in range(5):
                s = x @ x.T
                x = torch.addmm(x, torch.addmm(s, s, s, beta=b, alpha=c), x, beta=a)
            w.add_(x, alpha=-LR)

        times[(n, m)] = median_seconds(step)
    return times, f"torch {torch.__version__} float32 matmuls, {torch.get_num_threads()} threads"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default=os.path.join(here, "..", "build", "release", "bench", "bench_muon"))
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"peers: {args.bench} is not built (cmake --preset release && cmake --build --preset release --target bench_muon, or --bench PATH)")

    polar = polar_times(args.bench)
    peers = {"optax": optax_times(), "torch": torch_times(), "torch-f32": torch_f32_times()}
    rows = []
    print(f"{'shape':>12} {'polar ms':>9} " + " ".join(f"{p + ' ms':>9} {p + '/polar':>12}" for p in peers))
    for shape in SHAPES:
        line = f"{shape[0]:>5} x {shape[1]:<4} {polar[shape] * 1e3:9.1f} "
        row = {"shape": list(shape), "polar_ms": polar[shape] * 1e3}
        for name, (times, _) in peers.items():
            if times is None:
                line += f"{'-':>9} {'-':>12} "
            else:
                line += f"{times[shape] * 1e3:9.1f} {times[shape] / polar[shape]:12.2f} "
                row[name + "_ms"] = times[shape] * 1e3
                row[name + "_over_polar"] = times[shape] / polar[shape]
        rows.append(row)
        print(line)
    for name, (_, what) in peers.items():
        print(f"peers: {name}: {what}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "peers": {k: v[1] for k, v in peers.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
