"""Whole photos, measured: real car photos pasted into drawn scenes, then detected and recognised.

    python benchmarks/scenes.py --source dev                        # every dev photo, default model + SSD
    python benchmarks/scenes.py --source train --photos 300 --margins 0,0.05,0.1,0.15,0.2   # choose a margin
    python benchmarks/scenes.py --source dev --zoom-looks 0                 # without the detector's second look

Each frame (3:2, 800-1200 px wide) has 1-3 vehicles on a background this script draws (sky
gradient, buildings, a road with lane marks, noise: no photos from elsewhere). Each vehicle is a
photo pasted at 25-50 % of the frame width (at most 95 %/n for n vehicles, so they sit side by
side), off-centre, at a random height. Every photo appears once in a one-vehicle frame and once
in a 2-3-vehicle frame. Fixed seed.

- ``--source dev``: the dev photos were squashed to 224x224, so each gets back the median aspect
  (width / height) of its class's train photos (which keep theirs). Measure only: never choose on dev.
- ``--source train``: train photos (their own aspect), with each one's own gallery entry removed
  so it cannot match itself; the model has seen them in training, so figures are optimistic in
  absolute terms, but fair for comparing crop margins against each other.

Reports detection recall / precision (a detection matches a pasted box at IoU >= 0.5),
end-to-end top-1 at model / make / type for one-vehicle and 2-3-vehicle frames against the same
photos sent as tight crops (no detector), and ms per frame (``Recognizer.predict_all``: detection
+ cropping + recognition) for one-vehicle frames, and the detector's network passes per frame
(more than one when it looks again at faint boxes). Running figures go to stderr every 100 frames
(one-vehicle frames come first). With several ``--margins`` it sweeps the crop
margin on the same detections instead (no timing).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.artifacts import hub  # noqa: E402
from vericar.core.recognizer import Recognizer  # noqa: E402
from vericar.evaluate import TOP1_LEVELS as LEVELS  # noqa: E402
from vericar.search.gallery import Gallery  # noqa: E402
from vericar.search.taxonomy import Taxonomy  # noqa: E402
from vericar.vision.detect import Box, create_detector, iou  # noqa: E402
from vericar.vision.scene import FAINT_SCORE, plan  # noqa: E402


def background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A drawn street: sky gradient, building blocks, a road with lane marks, mild noise."""
    top, bottom = rng.integers(90, 230, 3), rng.integers(150, 255, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    img = Image.fromarray(((1 - t) * top + t * bottom).repeat(w, axis=1).astype(np.uint8))
    d = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.35, 0.55))
    x = 0
    while x < w:  # buildings
        bw, bh = int(rng.uniform(0.08, 0.25) * w), int(rng.uniform(0.1, 0.4) * h)
        d.rectangle([x, horizon - bh, x + bw, horizon], fill=tuple(int(c) for c in rng.integers(60, 200, 3)))
        for _ in range(int(rng.integers(2, 8))):  # windows
            wx, wy = x + rng.uniform(0.1, 0.8) * bw, horizon - rng.uniform(0.2, 0.9) * bh
            d.rectangle([wx, wy, wx + 0.1 * bw, wy + 0.06 * bh], fill=tuple(int(c) for c in rng.integers(20, 250, 3)))
        x += bw + int(rng.integers(0, w // 20))
    grey = int(rng.integers(60, 130))
    d.polygon([(0, horizon), (w, horizon), (w, h), (0, h)], fill=(grey, grey, grey + int(rng.integers(0, 10))))
    for lane in (0.3, 0.6):  # dashed lane marks
        y = int(horizon + lane * (h - horizon))
        for x0 in range(int(rng.integers(0, 60)), w, 120):
            d.rectangle([x0, y, x0 + 60, y + max(2, h // 150)], fill=(235, 235, 225))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1))).astype(np.int16)
    arr += rng.normal(0, 6, arr.shape).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_frame(rng: np.random.Generator, photos: list[tuple[Image.Image, float]]) -> tuple[Image.Image, list[Box]]:
    """Paste ``(photo, aspect)`` pairs side by side, off-centre, into a drawn frame; their boxes."""
    n = len(photos)
    w = int(rng.integers(800, 1201))
    h = w * 2 // 3
    frame = background(rng, w, h)
    widths = [int(rng.uniform(0.25, min(0.5, 0.95 / n)) * w) for _ in photos]
    free = w - sum(widths)
    gaps = rng.dirichlet(np.ones(n + 1)) * free
    if n == 1:  # off-centre: the car's centre at least 8 % of the width from the middle
        side = rng.integers(2)
        lo = 0.0 if side == 0 else (free / 2 + 0.08 * w)
        hi = (free / 2 - 0.08 * w) if side == 0 else free
        gaps = [rng.uniform(lo, max(lo, hi))]
    boxes, x = [], 0.0
    for (photo, aspect), bw, gap in zip(photos, widths, gaps):
        x += gap
        bh = min(int(bw / aspect), int(0.95 * h))
        y2 = int(rng.uniform(max(bh, 0.55 * h), h))
        x1, y1 = int(x), y2 - bh
        frame.paste(photo.convert("RGB").resize((bw, bh), Image.BICUBIC), (x1, y1))
        boxes.append(Box(x1, y1, x1 + bw, y2))
        x += bw
    return frame, boxes


def class_aspects(data: Path) -> dict[str, float]:
    """Median width / height of each class's train photos (cropped to the car, aspect kept)."""
    per: dict[str, list[float]] = {}
    for r in csv.DictReader(open(data / "train.csv")):
        with Image.open(data / r["file"]) as im:
            per.setdefault(r["class_name"], []).append(im.width / im.height)
    return {k: float(np.median(v)) for k, v in per.items()}


def match(preds: list, truth: list[Box]) -> list:
    """For each pasted box the prediction that matches it (IoU >= 0.5, best first), or None."""
    used, out = set(), []
    for t in truth:
        best, bi = 0.5, None
        for i, p in enumerate(preds):
            if i not in used and p.box is not None:
                v = iou(Box(*p.box), t)
                if v >= best:
                    best, bi = v, i
        if bi is not None:
            used.add(bi)
        out.append(None if bi is None else preds[bi])
    return out


def score(names: list[str], preds: list, tax: Taxonomy) -> dict[str, float]:
    """Top-1 per level; a missing prediction (None) is wrong."""
    out = {}
    for lvl in LEVELS:
        ok = [p is not None and p.label is not None
              and tax.level_value(p.label, lvl) == tax.level_value(n, lvl) for n, p in zip(names, preds)]
        out[lvl] = 100.0 * float(np.mean(ok)) if ok else float("nan")
    return out


def load_samples(args: argparse.Namespace, rec: Recognizer) -> tuple[list[dict], Recognizer]:
    """The photos to paste (with the aspect each gets) and the recognizer to use."""
    data = Path(args.data)
    rows = list(csv.DictReader(open(data / f"{args.source}.csv")))
    rng = np.random.default_rng(args.seed)
    if args.photos:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), args.photos, replace=False))]
    if args.source == "dev":
        aspects = class_aspects(data)
        for r in rows:
            r["aspect"] = aspects[r["class_name"]]
        return rows, rec
    for r in rows:
        with Image.open(data / r["file"]) as im:
            r["aspect"] = im.width / im.height
    drop = {f"stanford_cars:{r['file']}" for r in rows}  # each photo must not find itself
    g = rec.gallery
    keep = [i for i, ref in enumerate(g.refs) if ref not in drop]
    gallery = Gallery(g.dim)
    gallery.add(g.embeddings[keep], [g.labels[i] for i in keep], refs=[g.refs[i] for i in keep])
    return rows, Recognizer(rec.model, gallery, rec.ood, k=rec.k, density=rec.density, detector=rec.detector)


def frames_of(rows: list[dict], data: Path, seed: int):
    """(kind, frame, boxes, class names): every photo once alone and once among 2-3 vehicles."""
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(rows))
    groups, i = [], 0
    while i < len(order):
        n = int(rng.integers(2, 4))
        groups.append(list(order[i:i + n]))
        i += n
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups[-2] += groups.pop()
    jobs = [("single", [j]) for j in range(len(rows))] + [("multi", g) for g in groups]
    for kind, idx in jobs:
        photos = [(Image.open(data / rows[j]["file"]).convert("RGB"), rows[j]["aspect"]) for j in idx]
        frame, boxes = make_frame(rng, photos)
        yield kind, frame, boxes, [rows[j]["class_name"] for j in idx], [photos[k][0] for k in range(len(idx))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/stanford_cars")
    ap.add_argument("--source", choices=("dev", "train"), default="dev")
    ap.add_argument("--photos", type=int, default=0, help="a fixed random subset of N photos (0 = all)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--detector", default="opencv-ssd:mobilenet_v2_coco")
    ap.add_argument("--zoom-looks", type=int, default=None,
                    help="second looks at faint boxes per photo (default: the detector's, vericar/vision/detect.py)")
    ap.add_argument("--margins", default=None, help="comma-separated crop margins to sweep (no timing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-frames", help="write the first 12 frames here (to look at)")
    ap.add_argument("--json", help="write the result here")
    return ap.parse_args(argv)


def tight_scores(rec: Recognizer, rows: list[dict], data: Path, tax: Taxonomy) -> dict[str, float]:
    """Top-1 of the same photos sent whole, as tight crops without a detector."""
    tight = Recognizer(rec.model, rec.gallery, rec.ood, k=rec.k, density=rec.density)
    tpreds = []
    for i in range(0, len(rows), 32):
        tpreds += tight.predict_batch([data / r["file"] for r in rows[i:i + 32]])
    return score([r["class_name"] for r in rows], tpreds, tax)


def predict_frame(rec: Recognizer, frame: Image.Image, kind: str, margins: list, ms: list[float]) -> dict:
    """The predictions per margin: the whole pipeline, timed on one-vehicle frames, or one detection cropped at
    every margin of a sweep."""
    if margins == [None]:
        t0 = time.perf_counter()
        preds = rec.predict_all(frame)
        if kind == "single":
            ms.append(1000 * (time.perf_counter() - t0))
        return {None: preds}
    dets = rec.detector.detect(frame, min_score=FAINT_SCORE)
    plans = {m: plan(dets, frame.size, score_threshold=rec.detector.score_threshold, margin=m) for m in margins}
    crops = [r.image(frame) for m in margins for r in plans[m]]  # one batch for every margin
    every = rec.predict_embeddings(rec._embed_pil(crops)) if crops else []
    found, i = {}, 0
    for m in margins:
        found[m], i = every[i:i + len(plans[m])], i + len(plans[m])
        for p, r in zip(found[m], plans[m]):
            p.box = r.box.to_list()
    return found


@dataclass
class Tally:
    """The frames so far: class names and matched predictions per kind (and margin), counts, timings."""

    margins: list
    names: dict = field(default_factory=lambda: {"single": [], "multi": []})
    n_frames: dict = field(default_factory=lambda: {"single": 0, "multi": 0})
    got: dict = field(default_factory=dict)
    n_truth: int = 0
    n_det: int = 0
    n_hit: int = 0
    frames: int = 0
    ms: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.got = {(k, m): [] for k in self.names for m in self.margins}

    def add(self, kind: str, classes: list[str], boxes: list[Box], found: dict) -> None:
        """Count one frame's vehicles, detections and matches (detection figures at the first margin)."""
        self.names[kind] += classes
        self.n_frames[kind] += 1
        preds = found[self.margins[0]]
        self.n_truth += len(boxes)
        self.n_det += len(preds)
        self.n_hit += sum(p is not None for p in match(preds, boxes))
        for m in self.margins:
            self.got[(kind, m)] += match(found[m], boxes)
        self.frames += 1


def run_frames(rec: Recognizer, rows: list[dict], args: argparse.Namespace, margins: list, tax: Taxonomy) -> Tally:
    """Detect and recognise every frame; running figures to stderr every 100 frames."""
    tally = Tally(margins)
    for f, (kind, frame, boxes, classes, _) in enumerate(frames_of(rows, Path(args.data), args.seed)):
        if args.save_frames and f < 12:
            os.makedirs(args.save_frames, exist_ok=True)
            frame.save(Path(args.save_frames) / f"frame{f:02d}-{kind}.jpg", quality=90)
        tally.add(kind, classes, boxes, predict_frame(rec, frame, kind, margins, tally.ms))
        if (f + 1) % 100 == 0:  # running figures, so a run cut short still says something
            t = tally
            print(f"{f + 1} frames: recall {100 * t.n_hit / t.n_truth:.2f}% precision "
                  f"{100 * t.n_hit / max(1, t.n_det):.2f}% "
                  f"{json.dumps({k: score(t.names[k], t.got[(k, margins[0])], tax) for k in t.names})}",
                  file=sys.stderr, flush=True)
    return tally


def summarise(args: argparse.Namespace, rows: list[dict], rec: Recognizer, t: Tally, passes: int,
              by_name: dict, tax: Taxonomy) -> dict:
    """The result: detection figures, top-1 per kind (and margin) after the tight crops', ms per frame."""
    for kind in t.names:
        for m in t.margins:
            by_name[kind if m is None else f"{kind} margin {m}"] = score(t.names[kind], t.got[(kind, m)], tax)
    result = {
        "source": args.source, "photos": len(rows), "frames": t.n_frames, "model": args.model,
        "detector": args.detector, "seed": args.seed,
        "detection": {"recall": 100.0 * t.n_hit / t.n_truth, "precision": 100.0 * t.n_hit / max(1, t.n_det),
                      "vehicles": t.n_truth, "detections": t.n_det,
                      "network_passes_per_frame": (rec.detector.passes - passes) / max(1, t.frames),
                      "zoom_looks": getattr(rec.detector, "zoom_looks", 0)},
        "top1": by_name, "load_avg": os.getloadavg(),
    }
    if t.ms:
        result["ms_per_single_frame"] = {"p50": statistics.median(t.ms), "p95": float(np.percentile(t.ms, 95)),
                                         "n": len(t.ms)}
    return result


def main(argv: list[str] | None = None) -> dict:
    """Load, measure the tight crops and the frames, print (and optionally save) the result."""
    args = parse_args(argv)
    from vericar._infra.runtime import tune_malloc

    tune_malloc()  # as evaluate and the app do (vericar/_infra/runtime.py)
    rec = hub.load(args.model, detector=create_detector(
        args.detector, **({} if args.zoom_looks is None else {"zoom_looks": args.zoom_looks})))
    rows, rec = load_samples(args, rec)
    tax = Taxonomy.from_labels(sorted(set(rec.gallery.classes) | {r["class_name"] for r in rows}))
    margins = [float(m) for m in args.margins.split(",")] if args.margins else [None]
    by_name = {"tight": tight_scores(rec, rows, Path(args.data), tax)}
    passes = rec.detector.passes
    tally = run_frames(rec, rows, args, margins, tax)
    result = summarise(args, rows, rec, tally, passes, by_name, tax)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
