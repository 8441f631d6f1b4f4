"""The unknown-vehicle threshold of an artifact, from its validation slice; re-calibration in place.

    python train/calibrate.py --artifact OUT --density-weight 0.5 [--density-k 10]

train.py calls ``calibrate_ood`` at the end of training. The command line re-does that step for
a saved artifact with other ranking settings (e.g. turning on the density correction of
vericar/density.py) without retraining: the artifact's gallery holds its validation photos, found
again from the split its train_config describes, so nothing is re-embedded.
"""
from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.density import DensityCorrection  # noqa: E402
from vericar.errors import VericarError  # noqa: E402
from vericar.evaluate import evaluate_embeddings  # noqa: E402
from vericar.gallery import Gallery  # noqa: E402
from vericar.model import EmbeddingModel  # noqa: E402
from vericar.ood import KNNOOD  # noqa: E402
from vericar.recognizer import Recognizer  # noqa: E402


def calibrate_ood(
    model: EmbeddingModel,
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
    return ood, evaluate_embeddings(rec, g_va, list(va_labels))


def _history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if k != "epoch" else int(float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Re-calibrate ``--artifact`` in place; returns its new validation metrics."""
    from vericar._runtime import tune_malloc
    from vericar.data import load_source, split_holdout, stratified_split
    from vericar.hub import load, save_pretrained

    from train.card import write_card
    from train.config import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", required=True, help="a folder written by train/train.py")
    ap.add_argument("--density-weight", type=float, required=True, help="0 = plain cosine, 0.5 = CSLS")
    ap.add_argument("--density-k", type=int, default=10)
    args = ap.parse_args(argv)
    tune_malloc()
    out = Path(args.artifact)
    try:  # bad settings and unloadable artifacts: one line saying what to do, no traceback
        density = DensityCorrection(args.density_weight, args.density_k)
        rec = load(f"local-dir:{out}")
    except VericarError as e:
        raise SystemExit(f"error: {e}") from None
    tc = dict(rec.meta.get("train_config") or {})
    if not tc.get("data"):
        raise SystemExit(f"{out} has no train_config in its config.json meta; only train/train.py artifacts "
                         "can be re-calibrated (their validation slice is needed).")
    kept, _ = split_holdout(load_source(tc["data"], "train"), tc.get("holdout_classes"))
    _, val_s = stratified_split(kept, tc["val_fraction"], tc["seed"])
    # A shipped copy (train/ship.py) keeps refs as "dataset:folder/file": compare in that form too.
    from train.ship import short_ref
    val_refs = {s.ref for s in val_s} | {short_ref(s.ref) for s in val_s}
    is_val = np.array([r in val_refs for r in rec.gallery.refs])
    if is_val.sum() != len(val_s):
        raise SystemExit(f"found {int(is_val.sum())} of the {len(val_s)} validation photos in {out}'s gallery; "
                         f"run this from the folder training ran in (data was {tc['data']!r}).")
    emb, labels = rec.gallery.embeddings, np.array(rec.gallery.labels)
    ood, val_metrics = calibrate_ood(rec.model, emb[~is_val], labels[~is_val], emb[is_val], labels[is_val],
                                     k=rec.k, ood_k=rec.ood.k, tpr=tc.get("ood_tpr", 0.95), density=density)
    rec.ood, rec.density = ood, density
    tc.update(density_weight=density.weight, density_k=density.k)
    command = "python train/calibrate.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    rec.meta.update(train_config=tc, ood_threshold=ood.threshold, command=f"{rec.meta.get('command', '')}\n{command}")
    rec.meta.setdefault("metrics", {})["validation"] = val_metrics
    save_pretrained(rec, out, half=bool(tc.get("weights_half")))
    write_card(out, TrainConfig(**{k: v for k, v in tc.items() if k in TrainConfig.__dataclass_fields__}),
               rec.meta, _history(out / "metrics.csv"))
    top1 = (val_metrics.get("top1") or {}).get("model", float("nan"))
    print(f"re-calibrated {out}: density weight {density.weight}, OOD threshold {ood.threshold:.4f}, "
          f"validation top-1 {top1:.4f}")
    return val_metrics


if __name__ == "__main__":
    main()
