"""Licence plates on real photos: exact reads, character error rate, false plates, latency.

    nice -n 10 python benchmarks/plates.py                                   # dev: the figures in docs/plates.md
    nice -n 10 python benchmarks/plates.py --labels benchmarks/labels/plates_train.csv --size 224 --tune  # choose

Each photo is a one-vehicle frame whose box is the whole photo (the Stanford Cars photos are
cropped to the car), so the time is the plate stage's own cost per vehicle (the detector's is
measured in benchmarks/scene_latency.py). The labels CSV has ``file,plate_text`` (empty: no
legible plate; rules in docs/plates.md). ``--cache`` keeps every photo's plate-like reads (any
confidence), so ``--tune`` sweeps the confidence threshold without reading again.
"""
import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.attributes.plates import MIN_CONFIDENCE, PlateReader  # noqa: E402
from vericar.vision.images import open_image  # noqa: E402


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def open_as(path: Path, size: int | None):
    """The photo, squashed to ``size`` x ``size`` when given (train photos made like the dev ones)."""
    photo = open_image(path)
    return photo.resize((size, size), Image.BICUBIC) if size else photo


def run(rows: list[dict], root: Path, cache: Path | None, size: int | None = None) -> dict[str, dict]:
    """Every photo's plate-like reads (``PlateReader.candidates``) and its wall / CPU time, cached."""
    done: dict[str, dict] = {}
    if cache and cache.exists():
        done = {r["file"]: r for r in map(json.loads, cache.read_text().splitlines())}
    reader = PlateReader()
    reader.candidates(open_as(root / rows[0]["file"], size))  # engines loaded before the clock runs
    out = open(cache, "a") if cache else None
    # Photos with a legible plate first: a run cut short (the cache keeps what is done) has them all.
    for i, r in enumerate(sorted(rows, key=lambda r: not r["plate_text"])):
        if r["file"] in done:
            continue
        photo = open_as(root / r["file"], size)
        t, c = time.perf_counter(), time.process_time()
        found = reader.candidates(photo)
        rec = {"file": r["file"], "wall_ms": (time.perf_counter() - t) * 1e3,
               "cpu_ms": (time.process_time() - c) * 1e3, "reads": [p.to_dict() for p in found]}
        done[r["file"]] = rec
        if out:
            out.write(json.dumps(rec) + "\n")
            out.flush()
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(rows)} photos", file=sys.stderr, flush=True)
    return done


def score(rows: list[dict], reads: dict[str, dict], threshold: float) -> dict:
    """Exact reads and CER on legible plates, false plates on the others, at ``threshold``."""
    legible = [r for r in rows if r["plate_text"]]
    none = [r for r in rows if not r["plate_text"]]

    def read(r: dict) -> str:
        best = [p for p in reads[r["file"]]["reads"] if p["confidence"] >= threshold]
        return best[0]["text"] if best else ""

    got = {r["file"]: read(r) for r in rows}
    exact = sum(got[r["file"]] == r["plate_text"] for r in legible)
    cer = [edit_distance(got[r["file"]], r["plate_text"]) / len(r["plate_text"]) for r in legible]
    false = [r["file"] for r in none if got[r["file"]]]
    return {"threshold": threshold, "legible": len(legible), "exact": exact,
            "exact_rate": round(exact / max(1, len(legible)), 4),
            "cer": round(float(np.mean(cer)) if cer else 0.0, 4),
            "unread_legible": sum(not got[r["file"]] for r in legible),
            # a plate-like read at any confidence: a lower bound of the legible plates --plates blur hides
            "legible_found_any_confidence": sum(bool(reads[r["file"]]["reads"]) for r in legible),
            "wrong_reads": [(r["file"], r["plate_text"], got[r["file"]]) for r in legible
                            if got[r["file"]] and got[r["file"]] != r["plate_text"]],
            "no_legible": len(none), "false_plates": len(false),
            "false_rate": round(len(false) / max(1, len(none)), 4),
            "false_reads": [(f, got[f]) for f in false]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="benchmarks/labels/plates_dev.csv")
    ap.add_argument("--data", default="../shared/data/stanford_cars", help="folder the CSV's files are in")
    ap.add_argument("--cache", help="JSONL of reads to reuse / extend (default: none)")
    ap.add_argument("--threshold", type=float, default=MIN_CONFIDENCE)
    ap.add_argument("--tune", action="store_true", help="sweep the confidence threshold")
    ap.add_argument("--size", type=int, help="squash each photo to SIZE x SIZE first (dev photos are 224 x 224)")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.labels)))
    load0 = os.getloadavg()[0]
    reads = run(rows, Path(args.data), Path(args.cache) if args.cache else None, args.size)
    wall = np.array([reads[r["file"]]["wall_ms"] for r in rows])
    cpu = np.array([reads[r["file"]]["cpu_ms"] for r in rows])
    out = {"labels": args.labels, "photos": len(rows), **score(rows, reads, args.threshold),
           "latency_ms": {"wall_p50": round(float(np.percentile(wall, 50)), 1),
                          "wall_p95": round(float(np.percentile(wall, 95)), 1),
                          "cpu_p50": round(float(np.percentile(cpu, 50)), 1),
                          "cpu_p95": round(float(np.percentile(cpu, 95)), 1)},
           "cpu_cores": os.cpu_count(), "load_average_before_after": [round(load0, 1),
                                                                      round(os.getloadavg()[0], 1)]}
    if args.tune:
        out["sweep"] = [{k: v for k, v in score(rows, reads, t).items() if k not in ("wrong_reads", "false_reads")}
                        for t in np.round(np.arange(0.5, 1.0, 0.025), 3)]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
