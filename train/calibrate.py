"""The unknown-vehicle threshold and the confidence calibration of an artifact, from its
validation slice; re-calibration in place.

    python train/calibrate.py --artifact OUT [--density-weight 0.5] [--density-k 10] [--clean-views]
                              [--pool OTHER_SEED_OUT ...]

train.py calls ``calibrate`` at the end of training. The command line re-does that step for a
saved artifact without retraining (e.g. with the density correction of vericar/search/density.py turned
on): the artifact's gallery holds its validation photos, found again from the split its
train_config describes; the calibration gallery is the other training photos (a query never meets
itself). Threshold and calibration are fitted on the validation photos as the product sees them
(train/realinput.py: margin, lower resolution, 224x224 squash, JPEG), re-embedded from the files;
``--clean-views`` fits on the tight crops as stored instead (the previous behaviour).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__" and not __package__:  # run as a file (accelerate launch train/calibrate.py): Python put
    import os as _os, sys as _sys  # train/ first on the path, where `train` is train.py; the repository instead
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [_os.path.dirname(_here)] + [p for p in _sys.path if _os.path.abspath(p or ".") != _here]

import numpy as np

from train.crossfit import Votes, join, leave_one_out_ece, load_member, member_votes, validation_slice
from train.errors import TrainError, cli
from train.fix_channels import refuse_fixed
from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer
from vericar.evaluate import evaluate_embeddings
from vericar.models.embedding import embed
from vericar.models.ensemble import Model
from vericar.search.calibration import Calibration
from vericar.search.calibration_fit import fit_votes, held_out_votes
from vericar.search.density import DensityCorrection
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD


def calibrate_ood(
    model: Model,
    g_tr: np.ndarray,
    tr_labels: Sequence[str],
    g_va: np.ndarray,
    va_labels: Sequence[str],
    *,
    k: int,
    ood_k: int,
    tpr: float,
    density: DensityCorrection,
) -> tuple[KNNOOD, dict[str, Any]]:
    """KNN+ threshold at ``tpr`` for validation photos against a gallery of the training photos only.

    That is the situation of a new photo of a known vehicle. The recognizer scores them itself,
    so the ranking (density correction) and the per-query k cap are the ones used in service.
    Returns the calibrated detector and the validation metrics with it.
    """
    cal = Gallery(g_tr.shape[1])
    cal.add(g_tr, list(tr_labels))
    ood = KNNOOD(ood_k)
    rec = Recognizer(model, cal, ood, k=k, density=density)
    ood.calibrate(np.array([p.ood_score for p in rec.predict_embeddings(g_va)]), tpr=tpr)
    ood.calibrated_for = density.cfg  # the artifact refuses to load under another ranking
    return ood, evaluate_embeddings(rec, g_va, list(va_labels))


def calibrate(
    model: Model,
    g_tr: np.ndarray,
    tr_labels: Sequence[str],
    val_paths: Sequence[str],
    va_labels: Sequence[str],
    *,
    k: int,
    ood_k: int,
    tpr: float,
    density: DensityCorrection,
    max_wrong: float = 0.1,
    g_va_clean: np.ndarray | None = None,
    seed: int = 0,
    pool: Sequence[tuple[Votes, dict[str, Any]]] = (),
) -> tuple[KNNOOD, Calibration, dict[str, Any]]:
    """Unknown threshold and per-level confidence calibration from the validation photos as the
    product sees them (``real_input_views`` of ``val_paths``), against the training photos only.

    ``g_va_clean`` (the stored embeddings of the tight crops) skips the re-embedding and fits on
    them instead. Returns the detector, the calibration and the metrics (``validation``: on the
    clean crops when given, ``validation_real_input``: on the views; ``calibration``: the fit report).
    ``pool``: held-out votes of other trainings of this recipe and what the report says of each
    (train/crossfit.py ``member_votes``), fitted on together with these photos' views (the unknown
    threshold stays this model's own).
    """
    from train.realinput import RECIPE, real_input_views

    if g_va_clean is not None and not val_paths:
        if pool:
            raise VericarError("a calibration pool fits on real-input views of each training's validation "
                               "photos; give the validation photos' files (drop --clean-views) to use one.")
        q, recipe = g_va_clean, "clean crops"
    else:
        q, recipe = embed(model, real_input_views(val_paths, seed)), {**RECIPE, "seed": seed}
    ood, m_real = calibrate_ood(model, g_tr, tr_labels, q, va_labels, k=k, ood_k=ood_k, tpr=tpr, density=density)
    cal_g = Gallery(g_tr.shape[1])
    cal_g.add(g_tr, list(tr_labels))
    rec = Recognizer(model, cal_g, ood, k=k, density=density)
    sources = [held_out_votes(rec, q, list(va_labels)), *(votes for votes, _ in pool)]
    calibration, report = fit_votes(*join(sources), max_wrong=max_wrong)
    seeds = [seed] + [info.get("seed") for _, info in pool]
    whose = f" of {len(sources)} trainings of this recipe (seeds {seeds}; each its own views' seed)" if pool else ""
    calibration.info = {"fitted_on": f"{report['n']} validation photos{whose}, views: {recipe}",
                        "max_wrong": max_wrong, "fit": report}
    if pool:  # in the metrics only: the calibration keeps its fit, not the diagnostics
        report = {**report, "pool": {"members": [info for _, info in pool],
                                     "leave_one_out_ece": leave_one_out_ece(sources)}}
    metrics = {"validation_real_input" if isinstance(recipe, dict) else "validation": m_real, "calibration": report}
    if g_va_clean is not None and isinstance(recipe, dict):
        metrics["validation"] = evaluate_embeddings(rec, g_va_clean, list(va_labels))
    return ood, calibration, metrics


def re_embed_gallery(rec: Recognizer, views: tuple[str, ...], *, progress: bool = False) -> None:
    """Set ``rec``'s test-time views and embed its whole gallery again that way, from the photo files its refs
    name in the training data (meta.train_config.data); labels, refs and thumbnails stay as they are."""
    from vericar.evaluation.data import load_source, short_ref

    tc = dict(rec.meta.get("train_config") or {})
    by_ref = {r: s for s in load_source(tc["data"], "train") for r in (s.ref, short_ref(s.ref))}
    g = rec.gallery
    missing = [r for r in g.refs if r not in by_ref]
    if missing:
        raise TrainError(f"{len(missing)} of the gallery's {len(g)} photos (e.g. {missing[0]!r}) are not in "
                         f"{tc['data']!r}; run this from the folder training ran in, with its data there.")
    rec.model.tta = views
    emb = embed(rec.model, [by_ref[r] for r in g.refs], batch_size=32, num_workers=2, progress=progress,
                desc="gallery")
    new = Gallery(emb.shape[1], **{**g.settings(), "tta": views})  # an ensemble is wider than its member
    new.add(emb, list(g.labels), refs=list(g.refs), thumbnails=[g.thumbnail(i) for i in range(len(g))])
    rec.gallery = new


def open_world_part(args: argparse.Namespace, known: Recognizer, calibration: Calibration, val_paths: Sequence[Any],
                    tc: dict[str, Any], false_unknown: float) -> tuple[Calibration, float, dict[str, Any]]:
    """``--unseen``: fit the calibration's open-world part on this training's held-out classes' photos (their
    real-input views), never on dev; ``--unseen-from``: carry it over. Returns it, the KNN+ threshold, a report."""
    from train.realinput import real_input_views
    from vericar.artifacts.hub import load
    from vericar.evaluation.data import load_source, split_holdout
    from vericar.search.unseen_fit import carry_over, fit_unseen

    if args.unseen and args.unseen_from:
        raise VericarError("--unseen fits on this training's own held-out classes, --unseen-from carries a fit over; "
                           "give one of them.")
    seed = tc.get("seed", 0)
    q_known = embed(known.model, real_input_views(val_paths, seed))
    if args.unseen_from:
        source = load(f"local-dir:{args.unseen_from}")
        if source.config.model != known.model.model_cfg:
            raise VericarError(f"--unseen-from {args.unseen_from}: its model (backbone, preprocessing, test-time views, ensemble members) "
                               "differs from this one's; carry over only from a training of the same recipe.")
        name = Path(args.unseen_from).name  # the run's folder name only: no machine's folders in an artifact
        cal, t_o = carry_over(known, calibration, source.calibration, q_known, false_unknown=false_unknown,
                              source_name=name)
        return cal, t_o, {"carried_over_from": name, "ood_threshold": t_o}
    _, held = split_holdout(load_source(tc["data"], "train"), tc.get("holdout_classes"))
    if not held:
        raise VericarError("--unseen needs an open-world training (train/train.py --holdout-classes RULE): this one "
                           "was trained on every class, so it has no never-trained photos; use --unseen-from.")
    if any(Path(str(s.image)).parent.name == "dev" for s in held):
        raise VericarError("--unseen would fit on dev photos; dev is for measuring only. Train on the training CSV.")
    q_unseen = embed(known.model, real_input_views([s.image for s in held], seed + 1))
    return fit_unseen(known, calibration, q_known, q_unseen, [s.class_name for s in held],
                      max_wrong=args.max_wrong, false_unknown=false_unknown)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="train/calibrate.py", description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", required=True, help="a folder written by train/train.py")
    ap.add_argument("--density-weight", type=float, help="0 = plain cosine, 0.5 = CSLS (default: the artifact's)")
    ap.add_argument("--density-k", type=int, help="default: the artifact's")
    ap.add_argument("--max-wrong", type=float, default=0.1,
                    help="partial answers (make/type of an unknown model): the largest share of validation photos, "
                         "their own class taken out of the gallery, that may get a wrong one")
    ap.add_argument("--pool", nargs="+", default=[], metavar="ARTIFACT",
                    help="other trainings of the same command line with another --seed: their validation photos "
                         "join the confidence calibration's fit (train/crossfit.py)")
    ap.add_argument("--tta", choices=("flip", "none"),
                    help="re-embed the gallery from its photos with these test-time views (flip: each photo averaged "
                         "with its mirror image), then refit everything for them (default: keep the artifact's)")
    ap.add_argument("--unseen", action="store_true",
                    help="an open-world training: fit what unknown vehicles are told (make / type confidences, partial "
                         "thresholds, model floor) on its held-out classes' training photos, never trained on")
    ap.add_argument("--unseen-from", metavar="ARTIFACT",
                    help="carry that part over from an open-world training of the same recipe fitted with --unseen")
    ap.add_argument("--clean-views", action="store_true",
                    help="fit on the stored tight crops instead of real-input views of them (the old behaviour)")
    return ap


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Re-calibrate ``--artifact`` in place; returns its new validation metrics. Bad settings or
    artifacts raise ``VericarError`` / ``TrainError`` (the command line prints them)."""
    from vericar._infra.runtime import tune_malloc
    from vericar.artifacts.hub import load, save_pretrained

    from train.card import write_card

    args = _parser().parse_args(argv)
    tune_malloc()
    out = Path(args.artifact)
    if args.density_weight is not None:
        DensityCorrection(args.density_weight, args.density_k or 10)  # checked before any work (max_fetch below)
    if not 0.0 <= args.max_wrong <= 1.0:
        raise VericarError(f"--max-wrong must be in [0, 1], got {args.max_wrong}.")
    rec = load(f"local-dir:{out}")
    density = DensityCorrection(rec.density.weight if args.density_weight is None else args.density_weight,
                                args.density_k or rec.density.k, rec.density.max_fetch)
    refuse_fixed(rec.meta, "train/calibrate.py")
    tc = dict(rec.meta.get("train_config") or {})
    if not tc.get("data"):
        raise TrainError(f"{out} has no train_config in its config.json meta; only train/train.py artifacts "
                         "can be re-calibrated (their validation slice is needed).")
    if args.pool and args.clean_views:
        raise VericarError("--pool fits on real-input views of each training's validation photos; "
                           "drop --clean-views to use it.")
    if args.tta is not None and (views := () if args.tta == "none" else (args.tta,)) != rec.model.tta:
        re_embed_gallery(rec, views, progress=True)
    is_val, val_in_g = validation_slice(rec, out)
    members = []  # every member checked (recipe, seed, validation photos) before any is embedded
    for p in args.pool:
        taken = [tc.get("seed")] + [(m[0].meta.get("train_config") or {}).get("seed") for _, m in members]
        members.append((Path(p), load_member(Path(p), rec, taken)))
    pooled = [member_votes(path, m, rec, density) for path, m in members]
    emb, labels = rec.gallery.embeddings, np.array(rec.gallery.labels)
    ood, calibration, metrics = calibrate(
        rec.model, emb[~is_val], labels[~is_val], [] if args.clean_views else [s.image for s in val_in_g],
        labels[is_val], k=rec.k, ood_k=rec.ood.k, tpr=rec.ood.tpr or tc.get("ood_tpr", 0.95), density=density,
        max_wrong=args.max_wrong, g_va_clean=emb[is_val], seed=tc.get("seed", 0), pool=pooled)
    if args.unseen or args.unseen_from:
        known = Recognizer(rec.model, Gallery.from_arrays(emb[~is_val], list(labels[~is_val])), KNNOOD(rec.ood.k),
                           k=rec.k, density=density)
        calibration, ood.threshold, metrics["unseen"] = open_world_part(
            args, known, calibration, [s.image for s in val_in_g], tc, 1.0 - (rec.ood.tpr or 0.95))
    rec.ood, rec.density, rec.calibration = ood, density, calibration
    command = "python train/calibrate.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    rec.meta.update(command=f"{rec.meta.get('command', '')}\n{command}")
    rec.meta.setdefault("metrics", {}).update(metrics)
    val_metrics = metrics["validation"]
    save_pretrained(rec, out, half=bool(tc.get("weights_half")))
    write_card(out, rec.config, rec.meta)
    top1 = (val_metrics.get("top1") or {}).get("model", float("nan"))
    temps = ", ".join(f"{lvl} {t:.4f}" + (f" (nearness {calibration.scales[lvl]:.2f})" if lvl in calibration.scales
                                         else "") for lvl, t in calibration.temperatures.items())
    thr = ", ".join(f"{lvl} {t:.4f}" for lvl, t in calibration.thresholds.items()) or "none"
    print(f"re-calibrated {out}: density weight {density.weight}, OOD threshold {ood.threshold:.4f}, "
          f"validation top-1 {top1:.4f}; temperatures {temps}; partial-answer thresholds {thr}")
    return val_metrics


if __name__ == "__main__":
    cli(main)
