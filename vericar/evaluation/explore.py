"""Dataset explorer: what the photos of a CSV look like, class by class.

    python -m vericar.evaluation.explore ../shared/data/stanford_cars/train.csv --out DIR

Class distribution, width × height and aspect ratio, mean colour per channel, a blur score
(variance of the Laplacian) and a sample grid per class, as DIR/explore.html (self-contained),
DIR/photos.csv (one row per photo) and DIR/explore.json. ``python -m vericar.evaluate ... --explore
CSV --report DIR`` adds the same figures to an evaluation report and to the app's Insights tab
(without the sample grids: they are photos).

Each photo is decoded once, at reduced size (JPEG draft mode: the decoder scales by 1/2 to 1/8 itself),
in worker processes. Width and height are the file's own; colour and blur are measured on a copy
scaled to ``BLUR_SIDE`` pixels on its long side, so blur scores compare photos of any size.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from vericar.core.errors import VericarError
from vericar.evaluation import charts
from vericar.evaluation.data import load_source

BLUR_SIDE = 256  # long side (px) of the copy colour and blur are measured on
SAMPLE_SIDE = 110  # sample thumbnails' height (px)
SAMPLES = 4  # sample photos per class
STATS = ("width", "height", "mean_r", "mean_g", "mean_b", "blur")


def measure(path: str, sample: bool = False) -> tuple[dict[str, float], bytes | None]:
    """One photo's size, mean colour and blur; a small JPEG of it when ``sample``. NaNs if unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            img.draft("RGB", (max(1, BLUR_SIDE * w // max(w, h)), max(1, BLUR_SIDE * h // max(w, h))))
            small = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return dict.fromkeys(STATS, float("nan")), None
    small.thumbnail((BLUR_SIDE, BLUR_SIDE), Image.Resampling.BILINEAR)
    arr = np.asarray(small)
    gray = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
    out = {"width": float(w), "height": float(h), "mean_r": float(arr[..., 0].mean()),
           "mean_g": float(arr[..., 1].mean()), "mean_b": float(arr[..., 2].mean()),
           "blur": float(cv2.Laplacian(gray, cv2.CV_64F).var())}
    thumb = None
    if sample:
        small.thumbnail((SAMPLE_SIDE * 3, SAMPLE_SIDE), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=80)
        thumb = buf.getvalue()
    return out, thumb


def _measure_args(args: tuple[str, bool]) -> tuple[dict[str, float], bytes | None]:
    return measure(*args)


def scan(source: str, *, workers: int = 2, samples: int = SAMPLES) -> tuple[pd.DataFrame, dict[str, list[bytes]]]:
    """Every photo of ``source`` (a CSV or hf:...) measured: a table (file, class, STATS) and, per class,
    the first ``samples`` photos as small JPEGs."""
    photos = load_source(source, "train")
    seen: dict[str, int] = {}
    tasks = []
    for s in photos:
        if not isinstance(s.image, str):
            raise VericarError(f"{source}: the explorer reads photo files (a local CSV); got a decoded image.")
        seen[s.class_name] = seen.get(s.class_name, 0) + 1
        tasks.append((s.image, seen[s.class_name] <= samples))
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            measured = list(pool.map(_measure_args, tasks, chunksize=64))
    else:
        measured = [measure(*t) for t in tasks]
    table = pd.DataFrame([m for m, _ in measured])
    table.insert(0, "class", [s.class_name for s in photos])
    table.insert(0, "file", [s.ref for s in photos])
    grids: dict[str, list[bytes]] = {}
    for s, (_, thumb) in zip(photos, measured):
        if thumb is not None:
            grids.setdefault(s.class_name, []).append(thumb)
    return table, grids


def _grid(jpegs: list[bytes]) -> bytes:
    """One class's sample photos side by side, as JPEG bytes."""
    imgs = [Image.open(io.BytesIO(j)) for j in jpegs]
    widths = [int(i.width * SAMPLE_SIDE / i.height) for i in imgs]
    out = Image.new("RGB", (sum(widths) + 4 * (len(imgs) - 1), SAMPLE_SIDE), (255, 255, 255))
    x = 0
    for img, w in zip(imgs, widths):
        out.paste(img.resize((w, SAMPLE_SIDE)), (x, 0))
        x += w + 4
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def figures(table: pd.DataFrame) -> dict[str, tuple[str, bytes]]:
    """The explorer's figures (caption, PNG): none of them shows a photo."""
    import matplotlib.pyplot as plt

    ok = table.dropna(subset=["width"])
    counts = table["class"].value_counts().sort_values(kind="stable")
    out = {"class_counts": ("Photos per class", charts.count_bars(counts.index.tolist(), counts.tolist(),
                                                                   title="Class distribution"))}
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.scatter(ok["width"], ok["height"], s=4, alpha=0.3)
    ax.set(xlabel="width (px)", ylabel="height (px)", title="Image size", xscale="log", yscale="log")
    out["sizes"] = ("Width × height", charts.to_png(fig))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.hist(ok["width"] / ok["height"], bins=50, color="#4C72B0")
    ax.set(xlabel="width / height", ylabel="photos", title="Aspect ratio")
    out["aspect"] = ("Aspect-ratio histogram", charts.to_png(fig))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for col, colour in (("mean_r", "red"), ("mean_g", "green"), ("mean_b", "blue")):
        ax.hist(ok[col], bins=50, range=(0, 255), histtype="step", color=colour, lw=1.5,
                label=f"{col[-1].upper()}: mean {ok[col].mean():.0f}")
    ax.set(xlabel="mean value of the channel in a photo (0-255)", ylabel="photos", title="Mean colour per channel")
    ax.legend(fontsize=8)
    out["colour"] = ("Mean colour per channel", charts.to_png(fig))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.hist(np.log10(ok["blur"].clip(lower=1e-3)), bins=50, color="#55A868")
    ax.set(xlabel=f"log10 variance of the Laplacian ({BLUR_SIDE} px copy; low = blurry)", ylabel="photos",
           title="Blur score")
    out["blur"] = ("Blur (variance of the Laplacian) histogram", charts.to_png(fig))
    return out


def explore(source: str, *, workers: int = 2, samples: int = SAMPLES) -> dict[str, Any]:
    """Scan ``source`` and draw its figures: a dict with the table (``photos``), summary, class counts,
    figures (caption, PNG) and sample grids (class -> JPEG), and the seconds it took."""
    t0 = time.perf_counter()
    table, thumbs = scan(source, workers=workers, samples=samples)
    figs = figures(table)
    counts = table["class"].value_counts()
    ok = table.dropna(subset=["width"])
    summary = {"per_class_min": int(counts.min()), "per_class_max": int(counts.max()),
               "per_class_median": float(counts.median()), "width_median": float(ok["width"].median()),
               "height_median": float(ok["height"].median()), "blur_median": float(ok["blur"].median()),
               "unreadable": int(len(table) - len(ok))}
    return {"source": Path(source).name, "n_photos": int(len(table)), "n_classes": int(len(counts)),
            "class_counts": {str(k): int(v) for k, v in sorted(counts.items())}, "summary": summary,
            "figures": figs, "samples": {c: _grid(j) for c, j in sorted(thumbs.items())},
            "samples_per_class": samples, "photos": table, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: explore a CSV and write DIR/explore.html, photos.csv and explore.json."""
    ap = argparse.ArgumentParser(prog="python -m vericar.evaluation.explore", description=__doc__.split("\n")[0])
    ap.add_argument("csv", help="photos to explore: a CSV (file,label,class_name)")
    ap.add_argument("--out", required=True, help="folder to write explore.html, photos.csv and explore.json into")
    ap.add_argument("--workers", type=int, default=2, help="decoding processes (0: this one)")
    ap.add_argument("--samples", type=int, default=SAMPLES, help="sample photos per class (0: none)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.is_file():
        raise VericarError(f"--out {out} is a file; give a folder (made if missing).")
    if args.workers < 0 or args.samples < 0:
        raise VericarError("--workers and --samples must be 0 or more.")
    result = explore(args.csv, workers=args.workers, samples=args.samples)
    from vericar.evaluation.page import render_explore

    out.mkdir(parents=True, exist_ok=True)
    result["photos"].to_csv(out / "photos.csv", index=False)
    keep = ("source", "n_photos", "n_classes", "class_counts", "summary", "seconds")
    (out / "explore.json").write_text(json.dumps({k: result[k] for k in keep}, indent=1))
    (out / "explore.html").write_text(render_explore(result, title=f"vericar: the photos of {result['source']}"),
                                      encoding="utf-8")
    print(f"{result['n_photos']} photos of {result['n_classes']} classes explored in {result['seconds']:.1f} s "
          f"-> {out / 'explore.html'}")
    return result


if __name__ == "__main__":
    try:
        main()
    except VericarError as e:
        sys.exit(f"error: {e}")
