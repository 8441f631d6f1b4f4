"""What a public-mode visitor's own vehicles cost per prediction: shared recognizer vs a session's view.

    python benchmarks/session_search.py [--model default] [--runs 200] [--threads 2]

Both answer the same 16 query embeddings (real dev photos when ../shared/data/stanford_cars is there,
else drawings), so the figure is the search + vote, not the network: the base recognizer over the
shipped gallery, and a SessionRecognizer over it plus the most a visitor may add (5 vehicles x 32
photos, here dev photos of other classes). Also times a visitor's densities after an enrolment.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared/data/stanford_cars/dev"


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table of per-call times (median, p90) in ms."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    from PIL import Image, ImageDraw

    from vericar.artifacts import hub
    from vericar.search.gallery import Gallery
    from vericar.vision.images import make_thumbnail
    from vericar.ui.sessions import SessionRecognizer, own_densities

    torch.set_num_threads(args.threads)
    rec = hub.load(args.model)
    files = sorted(DEV.glob("*.jpg")) if DEV.is_dir() else []

    def photos(n: int, offset: int) -> list:
        if files:
            return [Image.open(p).convert("RGB") for p in files[offset:offset + n]]
        out = []
        for i in range(n):
            im = Image.new("RGB", (320, 200), (40 + i * 7 % 200, 90, 150))
            ImageDraw.Draw(im).rectangle([40, 80, 280, 160], fill=(200, (i * 37) % 255, 40))
            out.append(im)
        return out

    queries = rec.embed(photos(16, 0))
    own = Gallery(rec.gallery.dim)
    for v in range(5):  # the cap: 5 vehicles x 32 photos
        pil = photos(32, 16 + 32 * v)
        own.add(rec.embed(pil), [f"Visitor Car {v} Sedan 2024"] * len(pil), thumbnails=[make_thumbnail(p) for p in pil])
    t = time.perf_counter()
    dens = own_densities(rec, own)
    t_dens = (time.perf_counter() - t) * 1000
    view = SessionRecognizer.over(rec, own, dens)
    rec.predict_embeddings(queries[:1])  # warm the shared densities

    def timed(r) -> list[float]:
        out = []
        for _ in range(args.runs):
            q = queries[len(out) % len(queries)][None]
            t0 = time.perf_counter()
            r.predict_embeddings(q)
            out.append((time.perf_counter() - t0) * 1000)
        return sorted(out)

    print(f"model {args.model}, gallery {len(rec.gallery)} + {len(own)} session photos, "
          f"density weight {rec.density.weight}, {args.threads} threads, {args.runs} runs\n")
    print("| what | median ms | p90 ms |\n|---|---|---|")
    for name, r in (("shared recognizer (no own vehicles)", rec), ("session view (+5x32 own photos)", view)):
        xs = timed(r)
        print(f"| {name} | {statistics.median(xs):.2f} | {xs[int(0.9 * (len(xs) - 1))]:.2f} |")
    print(f"| a visitor's densities after an enrolment (160 photos) | {t_dens:.2f} | - |")


if __name__ == "__main__":
    main()
