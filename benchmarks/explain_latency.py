"""Grad-CAM++ latency (p50 / p95) on CPU for one model spec.

    python benchmarks/explain_latency.py                                  # tf_efficientnet_lite2, offline weights
    python benchmarks/explain_latency.py --spec timm:test_vit --no-pretrained --runs 50 --json out.json

Times, per run: one plain embedding forward (for scale), ``gradcam_pp`` (forward + backward +
CAM) and ``overlay`` on the original photo. The image is synthetic unless ``--image`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vericar.models.explain import gradcam_pp, overlay  # noqa: E402
from vericar.models.model import create_model  # noqa: E402
from vericar.models.transforms import eval_transform  # noqa: E402
from vericar.vision.images import open_image  # noqa: E402


def synthetic_image(width: int = 640, height: int = 427, seed: int = 0) -> Image.Image:
    """A car-sized scene: noisy background with a few coloured boxes (deterministic)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    draw.rectangle([120, 180, 520, 330], fill=(200, 30, 30))
    draw.ellipse([160, 290, 240, 370], fill=(20, 20, 20))
    draw.ellipse([400, 290, 480, 370], fill=(20, 20, 20))
    return img


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min())}


def run(spec: str, embed_dim: int, pretrained: bool, runs: int, warmup: int, image: Image.Image) -> dict:
    """Time embed / gradcam_pp / overlay ``runs`` times after ``warmup`` untimed runs."""
    model = create_model(spec, embed_dim=embed_dim, pretrained=pretrained).eval()
    x = eval_transform(model.pretrained_cfg)(image).unsqueeze(0)
    with torch.inference_mode():
        # stand-in for the predicted class's gallery rows: the flipped photo's embedding
        targets = model(torch.cat([x, x.flip(-1)])).numpy()
    times: dict[str, list[float]] = {"embed": [], "gradcam_pp": [], "overlay": []}
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(x)
        t1 = time.perf_counter()
        heat = gradcam_pp(model, x, targets)
        t2 = time.perf_counter()
        overlay(image, heat)
        t3 = time.perf_counter()
        if i >= warmup:
            times["embed"].append((t1 - t0) * 1e3)
            times["gradcam_pp"].append((t2 - t1) * 1e3)
            times["overlay"].append((t3 - t2) * 1e3)
    return {
        "spec": spec, "embed_dim": embed_dim, "pretrained": pretrained, "runs": runs, "warmup": warmup,
        "input_size": list(x.shape[-2:]), "image_size": list(image.size), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "results": {k: _stats(v) for k, v in times.items()},
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse arguments, run the benchmark, print a table (and write JSON with ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="timm:tf_efficientnet_lite2", help="model spec (timm:NAME | open_clip:ARCH/TAG)")
    p.add_argument("--embed-dim", type=int, default=0, help="projection head size; 0 = raw backbone features")
    p.add_argument("--no-pretrained", action="store_true", help="random init (no weights needed)")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--image", help="photo to explain (default: a synthetic 640x427 image)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    image = open_image(args.image) if args.image else synthetic_image()
    res = run(args.spec, args.embed_dim, not args.no_pretrained, args.runs, args.warmup, image)

    print(f"{res['spec']} embed_dim={res['embed_dim']} input={res['input_size']} image={res['image_size']} "
          f"threads={res['torch_threads']} runs={res['runs']} (CPU, torch {res['torch']})")
    print(f"{'step':<12}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}{'min ms':>10}")
    for step, s in res["results"].items():
        print(f"{step:<12}{s['p50_ms']:>10.1f}{s['p95_ms']:>10.1f}{s['mean_ms']:>10.1f}{s['min_ms']:>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
