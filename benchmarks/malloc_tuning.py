"""What vericar/_infra/runtime.tune_malloc buys on this machine: a CNN forward pass and a training step.

    python benchmarks/malloc_tuning.py [--backbone tf_efficientnet_lite2] [--batch 32] [--size 224] [--json out.json]

Each mode runs in a fresh process (malloc settings are process-wide): glibc defaults, then
tune_malloc(). Reports ms per batch and the kernel (sys) time and minor page faults per batch;
random-init weights, since the cost measured is memory traffic, not what the weights say.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _measure(backbone: str, batch: int, size: int, runs: int, threads: int) -> dict:
    import resource
    import time

    import timm
    import torch

    torch.set_num_threads(threads)
    m = timm.create_model(backbone, pretrained=False)
    x = torch.randn(batch, 3, size, size)
    out = {}

    def clock(step, name):
        step()  # warm-up: the first pass allocates everything once in any mode
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(runs):
            step()
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out[name] = {"ms": 1000 * (t1 - t0) / runs, "sys_s": (r1.ru_stime - r0.ru_stime) / runs,
                     "minor_faults": (r1.ru_minflt - r0.ru_minflt) / runs}

    m.eval()
    with torch.inference_mode():
        clock(lambda: m(x), "forward")
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)

    def train_step():
        opt.zero_grad()
        m(x).sum().backward()
        opt.step()

    clock(train_step, "train_step")
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run both modes in subprocesses and print a table; returns {mode: {phase: figures}}."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="tf_efficientnet_lite2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        if args.child == "tuned":
            from vericar._infra.runtime import tune_malloc

            if not tune_malloc():
                raise SystemExit("tune_malloc() did not apply here (not glibc, LD_PRELOAD or opt-out set).")
        print(json.dumps(_measure(args.backbone, args.batch, args.size, args.runs, args.threads)))
        return {}
    results = {}
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    for mode in ("default", "tuned"):
        cmd = [sys.executable, __file__, "--child", mode, "--backbone", args.backbone, "--batch", str(args.batch),
               "--size", str(args.size), "--runs", str(args.runs), "--threads", str(args.threads)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"{args.backbone}, batch {args.batch} at {args.size} px, {args.threads} threads\n"
          "| malloc | phase | ms / batch | sys s / batch | minor faults / batch |\n|---|---|---|---|---|")
    for mode, phases in results.items():
        for phase, r in phases.items():
            print(f"| {mode} | {phase} | {r['ms']:.0f} | {r['sys_s']:.2f} | {r['minor_faults']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
