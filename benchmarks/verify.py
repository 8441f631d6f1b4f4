"""Verification of two photos (same model or not?) on dev pair lists, and what a comparison costs.

    python benchmarks/verify.py --make-pairs                     # writes benchmarks/pairs/*.csv (seed 0)
    python benchmarks/verify.py --model default --pairs benchmarks/pairs/dev_pairs.csv
    python benchmarks/verify.py --model local-dir:/work/runs/ow --pairs benchmarks/pairs/dev_heldout_pairs.csv
    python benchmarks/verify.py --model default --pairs benchmarks/pairs/dev_heldout_pairs.csv --drop-classes "label%5==4"
    python benchmarks/verify.py --model default --timing [--runs 30]

Pair lists (vericar/evaluation/pairs.py): from ../shared/data/stanford_cars/dev.csv, up to 450 pairs
of each kind (same model; easy: different make; medium: same make, different body type; hard:
same make and type, different model or year), seed 0. ``dev_heldout_pairs.csv`` draws them among
the open-world held-out classes (label%5==4) only: with an open-world model, neither photo's model
was trained on or is in the gallery. The fit is train/calibrate_pairs.py (validation pairs only).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared/data/stanford_cars"
PAIRS = ROOT / "benchmarks/pairs"


def make_pair_lists(dev_csv: Path, n: int, seed: int) -> None:
    """Write dev_pairs.csv (all classes) and dev_heldout_pairs.csv (label%5==4) beside this script."""
    from vericar.evaluation.data import load_csv, parse_holdout
    from vericar.evaluation.pairs import make_pairs, write_pairs

    samples = load_csv(dev_csv)
    held = parse_holdout("label%5==4")
    PAIRS.mkdir(parents=True, exist_ok=True)
    for name, keep in (("dev_pairs.csv", lambda s: True), ("dev_heldout_pairs.csv", lambda s: held(s.label))):
        chosen = [s for s in samples if keep(s)]
        files = [os.path.relpath(s.image, PAIRS) for s in chosen]
        pairs = make_pairs(files, [s.class_name for s in chosen], n, seed)
        write_pairs(PAIRS / name, pairs)
        counts = {k: sum(p.kind == k for p in pairs) for k in ("same", "easy", "medium", "hard")}
        print(f"{PAIRS / name}: {len(chosen)} photos, pairs {counts}")


def timing(model: str, runs: int, threads: int) -> dict:
    """p50 / p90 of predict (identify) and compare on real dev photos, decoded once."""
    import torch

    import vericar
    from vericar.vision.images import open_image

    torch.set_num_threads(threads)
    rec = vericar.load(model)
    a, b = (open_image(DATA / f"dev/{n}.jpg") for n in ("00001", "00009"))
    for _ in range(3):  # warm-up
        rec.predict(a), rec.compare(a, b)
    fns = {"identify": lambda: rec.predict(a), "compare": lambda: rec.compare(a, b)}
    ts: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):  # interleaved: both see the same load on a shared machine
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[name].append(1000 * (time.perf_counter() - t0))
    out = {name: {"p50_ms": statistics.median(x), "p90_ms": sorted(x)[int(0.9 * (len(x) - 1))]}
           for name, x in ts.items()}
    out["ratio_p50"] = out["compare"]["p50_ms"] / out["identify"]["p50_ms"]
    out["load_avg"] = list(os.getloadavg())  # a shared machine: what else was running
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--make-pairs", action="store_true", help="write the dev pair lists (fixed seed)")
    ap.add_argument("--dev", default=str(DATA / "dev.csv"))
    ap.add_argument("--n", type=int, default=450, help="pairs of each kind (at most)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="default")
    ap.add_argument("--pairs", nargs="*", default=[], help="pair lists to evaluate")
    ap.add_argument("--drop-classes", help="take the dev classes matching this rule (e.g. \"label%%5==4\") out of "
                    "the gallery first: a stand-in for vehicles the gallery lacks (the model still trained on them)")
    ap.add_argument("--cache", default="/work/runs/verify", help="embedding cache folder ('' for none)")
    ap.add_argument("--timing", action="store_true", help="compare vs identify latency (p50)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    out: dict = {}
    if args.make_pairs:
        make_pair_lists(Path(args.dev), args.n, args.seed)
    if args.pairs:
        import vericar
        from vericar.evaluation.pairs import evaluate_pairs, format_pairs_table, load_pairs

        rec = vericar.load(args.model)
        if args.drop_classes:
            from vericar.evaluation.data import load_csv, parse_holdout

            rule = parse_holdout(args.drop_classes)
            gone = sorted({s.class_name for s in load_csv(args.dev) if rule(s.label)})
            print(f"took {sum(rec.remove(c) for c in gone)} gallery photos of {len(gone)} classes out")
        for csv_path in args.pairs:
            r = evaluate_pairs(rec, load_pairs(csv_path), args.cache or None, progress=True)
            print(f"\n### {args.model} on {csv_path}\n\n{format_pairs_table(r)}")
            out[csv_path] = r
    if args.timing:
        out["timing"] = t = timing(args.model, args.runs, args.threads)
        print(f"\nidentify p50 {t['identify']['p50_ms']:.1f} ms, compare p50 {t['compare']['p50_ms']:.1f} ms: "
              f"{t['ratio_p50']:.2f}x ({args.threads} threads)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
