"""Latency of whole-photo recognition on this machine: ``predict_all`` on one-vehicle frames (the
frames of benchmarks/scenes.py), the detector alone on them (network passes counted), and ``predict``
on the tight dev photos themselves (detector + recognition), after a warm-up.

    python benchmarks/scene_latency.py [--photos 40] [--rounds 2] [--model default] [--json OUT]

Run it on an otherwise idle machine: the load average is printed with the figures.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

import benchmarks.scenes as S
from vericar._infra.runtime import tune_malloc
from vericar.artifacts import hub

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "stanford_cars"


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--photos", type=int, default=40, help="the first N dev photos")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="write the figures here")
    return ap.parse_args(argv)


def _inputs(n: int) -> tuple[list[Image.Image], list[Image.Image]]:
    """One-vehicle frames (seed 0) and the tight dev photos they were made from."""
    with open(DATA / "dev.csv") as f:
        rows = list(csv.DictReader(f))[:n]
    photos = [Image.open(DATA / r["file"]).convert("RGB") for r in rows]
    rng = np.random.default_rng(0)
    frames = [S.make_frame(rng, [(p, 1.8)])[0] for p in photos]
    return frames, photos


def _timed(fn: Callable[[Image.Image], Any], images: Sequence[Image.Image], rounds: int) -> list[float]:
    """Seconds per call of ``fn`` on each image, ``rounds`` times."""
    out = []
    for _ in range(rounds):
        for im in images:
            t = time.perf_counter()
            fn(im)
            out.append(time.perf_counter() - t)
    return out


def _summary(xs: list[float]) -> dict[str, float]:
    """p50 / p95 in ms and the sample size."""
    return {"p50_ms": 1000 * statistics.median(xs), "p95_ms": 1000 * float(np.percentile(xs, 95)), "n": len(xs)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure and print; returns the figures."""
    args = _args(argv)
    tune_malloc()
    rec = hub.load(args.model)
    frames, photos = _inputs(args.photos)
    rec.predict_all(frames[0]), rec.predict(photos[0])  # warm-up
    det = rec.detector
    p0 = det.passes
    result = {"model": args.model, "detector": det.spec,
              "predict_all_frame": _summary(_timed(rec.predict_all, frames, args.rounds))}
    result["passes_per_frame"] = (det.passes - p0) / (len(frames) * args.rounds)
    result["detect_frame"] = _summary(_timed(lambda f: det.detect(f, min_score=0.05), frames, args.rounds))
    p0 = det.passes
    result["predict_tight_photo"] = _summary(_timed(rec.predict, photos, args.rounds))
    result["passes_per_tight_photo"] = (det.passes - p0) / (len(photos) * args.rounds)
    result["load_avg"] = os.getloadavg()
    for key in ("predict_all_frame", "detect_frame", "predict_tight_photo"):
        r = result[key]
        print(f"{key}: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms (n={r['n']})")
    print(f"SSD passes: {result['passes_per_frame']:.2f} per frame, {result['passes_per_tight_photo']:.2f} "
          f"per tight photo; load {result['load_avg']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
