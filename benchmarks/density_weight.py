"""Choose the density-correction weight (vericar/search/density.py) on training photos only.

    python benchmarks/density_weight.py --model local-dir:OUT --data ../shared/data/stanford_cars/train.csv [--weights 0 0.25 0.5 0.75 1] [--json out.json]

OUT must come from train.py with --holdout-classes. The protocol mirrors the open-world one
without touching the test split: the gallery is the artifact's training photos minus its
validation slice, plus ``--enroll-fraction`` of each held-out class's training photos (enrolled,
never trained on); the queries are the validation slice (trained classes) and the remaining
held-out photos (enrolled classes). Per weight it reports top-1 of both groups, their gap, and
KNN+ AUROC / FPR95 of the held-out photos before enrolment against the validation slice.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.core.errors import VericarError  # noqa: E402

if TYPE_CHECKING:
    from vericar.core.recognizer import Recognizer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the training CSV the model was trained on")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--enroll-fraction", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    return ap.parse_args(argv)


def split_photos(rec: Recognizer, data: str) -> tuple[np.ndarray, list]:
    """Which gallery entries are the validation slice, and the held-out classes' training photos."""
    from vericar.evaluation.data import load_source, split_holdout, stratified_split

    tc = rec.meta.get("train_config") or {}
    if not tc.get("holdout_classes"):
        raise VericarError("the model must be trained with --holdout-classes (its held-out classes become the enrolled ones).")
    kept, held = split_holdout(load_source(data, "train"), tc["holdout_classes"])
    _, val_s = stratified_split(kept, tc["val_fraction"], tc["seed"])
    val_refs = {s.ref for s in val_s}
    is_val = np.array([r in val_refs for r in rec.gallery.refs])
    if is_val.sum() != len(val_s):
        raise VericarError(f"{int(is_val.sum())} of {len(val_s)} validation photos found in the gallery; pass the "
                         "--data the model was trained on, from the folder training ran in.")
    return is_val, held


def enrolled(h_lab: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` (at least one photo) of each held-out class: the photos enrolled."""
    rng = np.random.default_rng(seed)
    enroll = np.zeros(len(h_lab), dtype=bool)
    for c in sorted(set(h_lab)):
        rows = np.flatnonzero(h_lab == c)
        rng.shuffle(rows)
        enroll[rows[: max(1, round(fraction * len(rows)))]] = True
    return enroll


def weight_row(rec: Recognizer, w: float, is_val: np.ndarray, h_emb: np.ndarray, h_lab: np.ndarray,
               enroll: np.ndarray) -> dict:
    """Top-1 of trained / enrolled queries after enrolment and OOD figures before it, at density weight ``w``."""
    from vericar.core.recognizer import Recognizer
    from vericar.evaluation import metrics
    from vericar.search.density import DensityCorrection
    from vericar.search.gallery import Gallery
    from vericar.search.ood import KNNOOD

    emb, lab = rec.gallery.embeddings, np.array(rec.gallery.labels)
    q_tr, q_tr_lab, q_en, q_en_lab = emb[is_val], lab[is_val], h_emb[~enroll], h_lab[~enroll]
    density = DensityCorrection(w)
    before = Recognizer(rec.model, Gallery.from_arrays(emb[~is_val], lab[~is_val]), KNNOOD(rec.ood.k), k=rec.k,
                        density=density)
    s_id = np.array([p.ood_score for p in before.predict_embeddings(q_tr)])
    s_new = np.array([p.ood_score for p in before.predict_embeddings(q_en)])
    after = Recognizer(rec.model, Gallery.from_arrays(np.concatenate([emb[~is_val], h_emb[enroll]]),
                                                      [*lab[~is_val], *h_lab[enroll]]),
                       KNNOOD(rec.ood.k), k=rec.k, density=density)
    tr = np.mean([p.label == y for p, y in zip(after.predict_embeddings(q_tr), q_tr_lab)])
    en = np.mean([p.label == y for p, y in zip(after.predict_embeddings(q_en), q_en_lab)])
    return {"weight": w, "trained_top1": float(tr), "enrolled_top1": float(en), "gap": float(tr - en),
            "ood_auroc": metrics.auroc(s_id, s_new), "ood_fpr95": metrics.fpr_at_tpr(s_id, s_new)}


def report(rows: list[dict], n_trained: int, enroll: np.ndarray, h_lab: np.ndarray) -> None:
    """Print the counts and one table row per weight."""
    print(f"{n_trained} validation photos of trained classes, {int(enroll.sum())} enrolled / {int((~enroll).sum())} "
          f"query photos of {len(set(h_lab))} held-out classes\n| weight | trained top-1 | enrolled top-1 | gap | "
          "OOD AUROC | FPR95 |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['weight']:g} | {100 * r['trained_top1']:.1f}% | {100 * r['enrolled_top1']:.1f}% | "
              f"{100 * r['gap']:.1f} | {100 * r['ood_auroc']:.1f}% | {100 * r['ood_fpr95']:.1f}% |")


def main(argv: list[str] | None = None) -> list[dict]:
    """Print one row per weight; returns the rows."""
    import vericar
    from vericar._infra.runtime import tune_malloc
    from vericar.models.embedding import embed

    args = parse_args(argv)
    tune_malloc()
    rec = vericar.load(args.model)
    is_val, held = split_photos(rec, args.data)
    h_emb = embed(rec.model, held)
    h_lab = np.array([s.class_name for s in held])
    enroll = enrolled(h_lab, args.enroll_fraction, args.seed)
    rows = [weight_row(rec, w, is_val, h_emb, h_lab, enroll) for w in args.weights]
    report(rows, int(is_val.sum()), enroll, h_lab)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    try:
        main()
    except VericarError as e:
        sys.exit(f"error: {e}")
