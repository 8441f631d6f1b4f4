"""What colour + viewpoint add per vehicle, on this CPU: p50 / p95 in milliseconds.

The stage reuses what the tap catches in the embedding pass (vericar/attributes/tap.py), so its own
cost is the crop's pixel summaries (body, scene) and two small matrix products (``Attributes.describe``
on one vehicle); the hooks' share of the pass shows in the whole-predict difference. The
whole one-vehicle ``predict`` with the stage on and off is timed too, interleaved, for context
(on a shared CPU its difference is noisier than the stage's own time):

    python benchmarks/attributes_latency.py --photos ../shared/data/stanford_cars/dev --n 60
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pct(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms (n={len(ms)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default="../shared/data/stanford_cars/dev")
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--model", default="default")
    a = p.parse_args()
    import torch

    import vericar
    from vericar._infra.runtime import tune_malloc
    from vericar.attributes.tap import PARTS
    from vericar.vision.images import open_image

    tune_malloc()
    torch.set_num_threads(2)
    rec = vericar.load(a.model)
    off = vericar.load(a.model, attributes=False)
    if not rec.attributes.active:
        sys.exit(f"{a.model} has no attribute heads; fit them first (benchmarks/attributes_fit.py)")
    files = sorted(Path(a.photos).glob("*.jpg"))[: a.n]
    photos = [open_image(f) for f in files]
    stage, with_on, with_off = [], [], []
    for photo in photos[:3]:  # warm-up
        rec.predict(photo), off.predict(photo)
    for photo in photos:
        with rec.attributes.tap(rec.model).capture() as rows:
            rec._embed_pil([photo])
        caught = {part: rows.part(part, 1) for part in PARTS}
        t = time.perf_counter()
        rec.attributes.describe([photo], caught)
        stage.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        rec.predict(photo)
        with_on.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        off.predict(photo)
        with_off.append(1000 * (time.perf_counter() - t))
    print(f"colour + viewpoint stage per vehicle: {pct(stage)}")
    print(f"predict, one vehicle, stage on:  {pct(with_on)}")
    print(f"predict, one vehicle, stage off: {pct(with_off)}")


if __name__ == "__main__":
    main()
