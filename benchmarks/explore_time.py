"""How long the dataset explorer takes on the 8,144 training photos (the issue's bound: under 2 minutes here).

    nice -n 10 python benchmarks/explore_time.py --csv ../shared/data/stanford_cars/train.csv --workers 2

Runs ``vericar.evaluation.explore.explore`` (each photo decoded once at reduced size, in worker
processes; figures and per-class sample grids drawn) and prints the wall time, photos per second, the
CPU count and the load average beside it (the machine is shared: a busy one is slower).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.evaluation.explore import SAMPLES, explore  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Time one explorer run and print it (and write it to --json)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", default="../shared/data/stanford_cars/train.csv")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--json", help="write the timing here")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    res = explore(args.csv, workers=args.workers, samples=args.samples)
    wall = time.perf_counter() - t0
    out = {"csv": Path(args.csv).name, "photos": res["n_photos"], "classes": res["n_classes"],
           "workers": args.workers, "seconds": round(wall, 1), "photos_per_s": round(res["n_photos"] / wall, 1),
           "cpus": os.cpu_count(), "load_avg_1min_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
           "unreadable": res["summary"]["unreadable"]}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
