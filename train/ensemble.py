"""Join trainings of one recipe into one artifact whose embedding is all of theirs (no retraining).

    python train/ensemble.py --members OUT_A OUT_B --output-dir ENS [--tta none|flip]

The members must be trainings of one architecture on the same data with the same validation split
(data, --val-fraction, --seed, held-out classes), so that the validation photos the ensemble is
calibrated on were held out of every member. The ensemble (vericar/models/ensemble.py) embeds each
photo with every member; its gallery is the first member's photos, embedded again that way from
their files; the first member's attribute heads come along (they read its features). What was
fitted on one member's similarities cannot carry over, so the unknown threshold and the confidences
are refitted on the validation photos (train/calibrate.py, run at the end), and the comparison of
two photos is dropped until ``python train/calibrate_pairs.py --artifact ENS`` refits it.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__" and not __package__:  # run as a file: Python put train/ first on the path,
    import os as _os, sys as _sys  # where `train` is train.py; the repository instead
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [_os.path.dirname(_here)] + [p for p in _sys.path if _os.path.abspath(p or ".") != _here]

from train.errors import TrainError, cli
from train.fix_channels import refuse_fixed
from vericar.core.recognizer import Recognizer
from vericar.models.ensemble import EnsembleModel
from vericar.search.calibration import Calibration
from vericar.search.ood import KNNOOD

# The first member's training record, kept beside the ensemble (the card links them).
TRAINING_FILES = ("train_config.yaml", "metrics.csv", "training_curve.png")
# What must agree for the validation photos to be held out of every member (meta.train_config).
SPLIT_SETTINGS = ("data", "val_fraction", "seed", "holdout_classes")


def check_members(members: Sequence[Recognizer], names: Sequence[str]) -> None:
    """Refuse members that are not one architecture of one network each, or whose validation photos differ."""
    if len(members) < 2:
        raise TrainError("--members needs at least two trained artifacts (folders written by train/train.py).")
    for name, m in zip(names, members):
        refuse_fixed(m.meta, f"train/ensemble.py (member {name})")
    first, tc0 = members[0], dict(members[0].meta.get("train_config") or {})
    if not tc0.get("data"):
        raise TrainError(f"{names[0]} has no train_config in its config.json meta; join only train/train.py artifacts.")
    for name, m in zip(names, members):
        if m.model.model_cfg.members != 1:
            raise TrainError(f"{name} is an ensemble already; give the trainings it was made of as --members.")
    for name, m in zip(names[1:], members[1:]):
        arch = [what for what, a, b in (
            ("backbone", m.model.spec, first.model.spec), ("embedding width", m.model.embed_dim, first.model.embed_dim),
            ("preprocessing", m.model.preprocess, first.model.preprocess)) if a != b]
        tc = dict(m.meta.get("train_config") or {})
        split = [k for k in SPLIT_SETTINGS if tc.get(k) != tc0.get(k)]
        if arch or split:
            what = ", ".join(arch + [f"train_config {k}" for k in split])
            raise TrainError(f"{name} differs from {names[0]} in {what}. Join trainings of one architecture "
                             "(one network each) with the same data and validation split (--val-fraction, --seed), "
                             "or the ensemble would be calibrated on photos a member trained on.")
        if sorted(m.gallery.classes) != sorted(first.gallery.classes):
            raise TrainError(f"{name} knows other classes than {names[0]}; join trainings on the same classes.")


def build(members: Sequence[Recognizer], names: Sequence[str], views: tuple[str, ...],
          command: str, *, progress: bool = False) -> Recognizer:
    """The first member with the ensemble as its model, its gallery re-embedded with ``views``, nothing fitted."""
    from train.calibrate import re_embed_gallery

    check_members(members, names)
    rec = members[0]
    rec.model = EnsembleModel([m.model for m in members]).eval()
    re_embed_gallery(rec, views, progress=progress)
    # Fitted on the first member's similarities: refitted by train/calibrate.py, or dropped.
    rec.calibration, rec.comparison = Calibration(), None
    tpr, rec.ood = rec.ood.tpr, KNNOOD(rec.ood.k)
    rec.ood.tpr = tpr  # the rate train/calibrate.py refits the threshold at
    seconds = [float(m.meta.get("train_seconds") or 0.0) for m in members]
    # Each member's commands under a line naming it (its --output-dir OUT is that name in the last line).
    how = [line for i, (n, m) in enumerate(zip(names, members), 1)
           for line in (f"=== member {i}: OUT is {Path(n).name} ===", str(m.meta.get("command", "?")))]
    rec.meta.pop("card_extra", None)  # the first member's own dev tables: not this model's
    rec.meta.update(ensemble={"members": [Path(n).name for n in names], "train_seconds": seconds},
                    metrics={}, command="\n".join([*how, command]))
    return rec


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="train/ensemble.py", description=__doc__.split("\n")[0])
    ap.add_argument("--members", nargs="+", required=True, metavar="ARTIFACT",
                    help="two or more folders written by train/train.py (the first one's gallery and heads are kept)")
    ap.add_argument("--output-dir", required=True, help="the ensemble's artifact folder (created)")
    ap.add_argument("--tta", choices=("none", "flip"), default="none",
                    help="test-time views of the whole ensemble (flip: each photo with its mirror image too)")
    ap.add_argument("--weights-half", action="store_true",
                    help="store the weights as float16 (half the size; computed in float32 after loading), "
                         "also when calibration saves them again")
    return ap


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Build, save and calibrate the ensemble; returns its validation metrics. It is built in a folder
    beside ``--output-dir`` and renamed into place only when calibrated: a run that fails leaves nothing."""
    from train import calibrate
    from vericar.artifacts.hub import load, read_artifact, save_pretrained, write_config

    args = _parser().parse_args(argv)
    out = Path(args.output_dir)
    paths = [Path(m).resolve() for m in args.members]
    if len(set(paths)) != len(paths):
        raise TrainError("--members names one folder twice; give each training once.")
    if out.resolve() in paths:
        raise TrainError("--output-dir is one of the --members; write the ensemble to a new folder.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainError(f"--output-dir {out} exists and is not an empty folder; give a new one.")
    members = [load(f"local-dir:{m}") for m in args.members]
    argv_used = sys.argv[1:] if argv is None else list(argv)
    command = "python train/ensemble.py " + " ".join(shlex.quote(a) for a in argv_used)
    rec = build(members, args.members, () if args.tta == "none" else (args.tta,), command, progress=True)
    if args.weights_half:  # read from here by train/calibrate.py and train/calibrate_pairs.py when they save
        rec.meta["train_config"] = {**rec.meta["train_config"], "weights_half": True}
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)  # a run stopped before
    try:
        save_pretrained(rec, tmp, half=bool((rec.meta.get("train_config") or {}).get("weights_half")))
        for name in TRAINING_FILES:  # the first member's training record, as the card says
            if (Path(args.members[0]) / name).is_file():
                shutil.copyfile(Path(args.members[0]) / name, tmp / name)
        # Open-world members: the never-trained classes they share give the ensemble its open-world part.
        unseen = ["--unseen"] if (rec.meta.get("train_config") or {}).get("holdout_classes") else []
        metrics = calibrate.main(["--artifact", str(tmp), *unseen])
        config, meta = read_artifact(tmp)  # the recorded command names the folder the artifact ends in
        meta["command"] = meta["command"].replace(f"--artifact {tmp}", f"--artifact {out}")
        write_config(tmp, config, meta)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_card_again(out)
    return metrics


def write_card_again(out: Path) -> None:
    """The model card from the artifact as it now is (its recorded command names ``out``)."""
    from train.card import write_card
    from vericar.artifacts.hub import read_artifact

    config, meta = read_artifact(out)
    write_card(out, config, meta)


if __name__ == "__main__":
    cli(main)
