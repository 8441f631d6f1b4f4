"""Which confidence calibration transfers? Leave-one-training-out over trainings of one recipe.

    python benchmarks/calibration_loto.py --artifacts OUT SEED1_OUT [SEED2_OUT ...] [--json F]

The artifacts are trainings of one command line with different ``--seed`` (as ``train.calibrate
--pool`` takes them). Each training's validation photos vote against its own training photos
(train/crossfit.py ``member_votes``), seen as the product sees them (train/realinput.py) and
through a harsher view (wider margin, 0.25-0.5x resolution, JPEG 40-70: a shift the fit never
saw). Per level and family, the calibration is fitted on the other trainings' real-input votes and
scored on this training's; the table pools the held-out scores of all trainings: log loss, ECE
and mean confidence minus accuracy. Families (vericar/search/calibration.py): "T, b" (the softmax
without the nearness term) and "T, b, a" (with it, as train.calibrate fits). Never reads dev.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.crossfit import load_member, member_votes  # noqa: E402
from train.errors import cli  # noqa: E402
from vericar.search.calibration_fit import LevelVotes, expected_calibration_error, fit_softmax, log_loss  # noqa: E402

HARSH = {"margin": (0.08, 0.15), "scale": (0.25, 0.5), "quality": (40, 70)}
FAMILIES = {"T, b": False, "T, b, a": True}  # family -> whether the nearness term is fitted


def collect(paths: list[Path]) -> dict[str, list[dict[str, LevelVotes]]]:
    """Per view ("real", "harsh"): each training's votes per level, in ``paths`` order."""
    from vericar.artifacts.hub import load

    like = load(f"local-dir:{paths[0]}")
    members, seeds = [], []
    for p in paths:  # every member checked before any is embedded (as train.calibrate does)
        members.append(load_member(p, like, seeds))
        seeds.append((members[-1][0].meta.get("train_config") or {}).get("seed"))
    return {view: [member_votes(p, m, like, like.density, recipe)[0][0] for p, m in zip(paths, members)]
            for view, recipe in (("real", None), ("harsh", HARSH))}


def leave_one_out(votes: dict[str, list[dict[str, LevelVotes]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per level and family, the pooled held-out figures (see the module docstring)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    n = len(votes["real"])
    for lvl in votes["real"][0]:
        out[lvl] = {}
        for fam, near in FAMILIES.items():
            def use(v: LevelVotes) -> LevelVotes:
                return v if near else dataclasses.replace(v, maxima=None)

            scored: dict[str, tuple[list, list]] = {view: ([], []) for view in votes}
            for i in range(n):
                fit = fit_softmax(LevelVotes.concat([use(votes["real"][j][lvl]) for j in range(n) if j != i]))
                for view in votes:
                    v = use(votes[view][i][lvl])
                    scored[view][0].append(v.confidences(*fit))
                    scored[view][1].append(v.correct)
            row = {}
            for view, (ps, ys) in scored.items():
                p, y = np.concatenate(ps), np.concatenate(ys)
                row.update({f"{view}_log_loss": log_loss(p, y), f"{view}_ece": expected_calibration_error(p, y),
                            f"{view}_gap": float(p.mean() - y.mean()), f"{view}_n": len(p)})
            out[lvl][fam] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    """Collect, score, print the table, optionally save it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", nargs="+", required=True, type=Path, help="at least two trainings, other seeds")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if len(args.artifacts) < 2:
        ap.error("give at least two trainings: each is scored under a fit on the others.")
    res = leave_one_out(collect(args.artifacts))
    print("| level | family | log loss (real-input views) | ECE | confidence − accuracy | harsher views: ECE | "
          "confidence − accuracy |\n|---|---|---|---|---|---|---|")
    for lvl, fams in res.items():
        for fam, r in fams.items():
            print(f"| {lvl} | {fam} | {r['real_log_loss']:.4f} | {100 * r['real_ece']:.2f}% | "
                  f"{100 * r['real_gap']:+.2f} | {100 * r['harsh_ece']:.2f}% | {100 * r['harsh_gap']:+.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    cli(main)  # a folder that is not a training, or trainings of other recipes: the message, no traceback
