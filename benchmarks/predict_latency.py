"""Recognizer.predict latency on this machine: embed + gallery search (+ density re-ranking) + KNN+ OOD + votes.

    python benchmarks/predict_latency.py [--model default] [--image PHOTO] [--runs 50] [--threads 2] [--json out.json]
                                         [--detector none]

``predict`` runs the model's vehicle detector first (and the attribute stage); ``--detector none`` times
the recognition alone, on the photo as a crop.

The photo defaults to a real dev photo (../shared/data/stanford_cars/dev) when it is there, else
a synthetic drawing; it is decoded once, so the figure is the model's, not the JPEG decoder's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _photo(path: str | None):
    from PIL import Image, ImageDraw

    from vericar.vision.images import open_image

    default = ROOT.parent / "shared/data/stanford_cars/dev/00001.jpg"
    if path or default.is_file():
        return open_image(path or default), str(path or default)
    img = Image.new("RGB", (640, 400), (90, 120, 150))
    ImageDraw.Draw(img).rounded_rectangle([80, 150, 560, 320], 40, fill=(200, 30, 40))
    return img, "synthetic drawing"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> dict:
    """Time predict() end to end and its parts; print a markdown table."""
    import numpy as np
    import torch

    import vericar

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--image")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's defaults (the app tunes them)")
    ap.add_argument("--detector", help="override the model's detector (none: recognition alone)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tuned = False if args.no_malloc_tuning else vericar.tune_malloc()
    rec = vericar.load(args.model, **({"detector": args.detector} if args.detector else {}))
    img, what = _photo(args.image)
    for _ in range(3):  # warm-up: oneDNN picks its kernels on the first calls
        rec.predict(img)
    t_pred, t_embed, t_search = [], [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        rec.predict(img)
        t_pred.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        emb = rec.embed([img])
        t_embed.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        rec.search(np.asarray(emb), max(rec.k, rec.ood.k))
        t_search.append(1000 * (time.perf_counter() - t0))
    rows = {name: {"p50_ms": round(statistics.median(v), 2), "p95_ms": round(_pct(v, 0.95), 2)}
            for name, v in (("predict (embed+search+OOD+vote)", t_pred), ("embed", t_embed), ("gallery search (+ density re-ranking)", t_search))}
    result = {"model": args.model, "detector": rec.detector.spec, "backbone": rec.model.spec, "input_size": list(rec.model.pretrained_cfg["input_size"]),
              "gallery_size": len(rec.gallery), "threads": args.threads, "runs": args.runs, "photo": what, "malloc_tuned": tuned, "rows": rows}
    print(f"model {args.model} ({rec.model.spec}, input {tuple(rec.model.pretrained_cfg['input_size'][1:])}), "
          f"gallery {len(rec.gallery)}, {args.threads} threads, {args.runs} runs, malloc tuned: {tuned}, photo: {what}")
    print("| step | p50 ms | p95 ms |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
