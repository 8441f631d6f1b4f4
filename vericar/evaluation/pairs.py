"""Verification pairs: same model or not, with easy, medium and hard different-model pairs.

A pair list is a CSV ``file_a,file_b,kind[,class_a,class_b]`` (paths relative to the CSV's folder, or
absolute); ``kind`` is ``same`` (one model), ``easy`` (different makes), ``medium`` (one make,
different body types) or ``hard`` (one make and body type, another model or year), the CompCars
protocol's three difficulties on vericar's taxonomy. ``make_pairs`` draws them with a fixed seed;
``pair_report`` gives ROC-AUC per difficulty and accuracy, F1, precision and recall at the
calibrated threshold (``python -m vericar.evaluate --pairs CSV``; benchmarks/verify.py).
"""
from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vericar.core.errors import VericarError
from vericar.search.taxonomy import Taxonomy

KINDS = ("same", "easy", "medium", "hard")
COLUMNS = ("file_a", "file_b", "kind", "class_a", "class_b")


@dataclass(frozen=True)
class Pair:
    """Two photos and how they differ (``kind``); the class names when known."""

    file_a: str
    file_b: str
    kind: str
    class_a: str = ""
    class_b: str = ""


def pair_kind(class_a: str, class_b: str, taxonomy: Taxonomy) -> str | None:
    """The kind of a pair of classes; None when the labels are flat (no make / type to tell apart)."""
    if class_a == class_b:
        return "same"
    if not (taxonomy.is_hierarchical(class_a) and taxonomy.is_hierarchical(class_b)):
        return None
    a, b = taxonomy.name(class_a), taxonomy.name(class_b)
    if a.make != b.make:
        return "easy"
    return "medium" if a.type != b.type else "hard"


def make_pairs(files: Sequence[str], classes: Sequence[str], n_per_kind: int, seed: int = 0) -> list[Pair]:
    """Up to ``n_per_kind`` pairs of each kind drawn (without repeats, seeded) from all pairs of
    these photos; a kind with fewer pairs gives them all."""
    tax = Taxonomy.from_labels(classes)
    by_kind: dict[str, list[tuple[int, int]]] = {k: [] for k in KINDS}
    for i, j in itertools.combinations(range(len(files)), 2):
        kind = pair_kind(classes[i], classes[j], tax)
        if kind is not None:
            by_kind[kind].append((i, j))
    rng = random.Random(seed)
    out = []
    for kind in KINDS:
        picked = rng.sample(by_kind[kind], min(n_per_kind, len(by_kind[kind])))
        out += [Pair(files[i], files[j], kind, classes[i], classes[j]) for i, j in sorted(picked)]
    return out


def write_pairs(path: str | Path, pairs: Sequence[Pair]) -> None:
    """Write a pair list as CSV (paths as given)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows([p.file_a, p.file_b, p.kind, p.class_a, p.class_b] for p in pairs)


def load_pairs(path: str | Path) -> list[Pair]:
    """A pair list, its paths resolved against the CSV's folder; VericarError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise VericarError(f"pair list {path} not found; give a CSV with columns file_a,file_b,kind "
                           "(e.g. benchmarks/pairs/dev_pairs.csv).")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in COLUMNS[:3] if rows and c not in rows[0]]
    if not rows or missing:
        raise VericarError(f"{path}: {'no pairs' if not rows else f'missing columns {missing}'}; a pair list has "
                           f"the columns file_a,file_b,kind (kind one of {list(KINDS)}).")
    bad = sorted({r["kind"] for r in rows} - set(KINDS))
    if bad:
        raise VericarError(f"{path}: unknown kinds {bad}; kind is one of {list(KINDS)}.")
    root = path.parent
    return [Pair(str(root / r["file_a"]), str(root / r["file_b"]), r["kind"], r.get("class_a") or "",
                 r.get("class_b") or "") for r in rows]


def binary_figures(y: np.ndarray, answer: Sequence[bool | None]) -> dict[str, float]:
    """Accuracy (None counts wrong), answered share, and precision / recall / F1 of "same"."""
    y = np.asarray(y, dtype=bool)
    said_same = np.array([a is True for a in answer])
    said_diff = np.array([a is False for a in answer])
    right = (said_same & y) | (said_diff & ~y)
    tp = float((said_same & y).sum())
    precision = tp / max(said_same.sum(), 1)
    recall = tp / max(y.sum(), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": int(len(y)), "accuracy": float(right.mean()), "answered": float((said_same | said_diff).mean()),
            "precision": float(precision), "recall": float(recall), "f1": float(f1)}


def pair_report(kinds: Sequence[str], prob: np.ndarray, answer: Sequence[bool | None],
                threshold: float = 0.5) -> dict[str, Any]:
    """The verification figures of scored pairs (``prob``: P(same model), ``answer``: same_model):
    ROC-AUC of same vs each different kind; at the threshold and with the verdict's band,
    accuracy / F1 / precision / recall over all pairs and over a balanced mix (same pairs
    weighed as much as all different ones, each kind equally)."""
    from sklearn.metrics import roc_auc_score

    kinds, prob = np.asarray(kinds), np.asarray(prob, dtype=np.float64)
    y = kinds == "same"
    out: dict[str, Any] = {"counts": {k: int((kinds == k).sum()) for k in KINDS}, "threshold": threshold, "auc": {}}
    for k in KINDS[1:]:
        m = y | (kinds == k)
        if (kinds == k).any() and y.any():
            out["auc"][k] = float(roc_auc_score(y[m], prob[m]))
    if y.any() and (~y).any():
        out["auc"]["all"] = float(roc_auc_score(y, prob))
    out["at_threshold"] = binary_figures(y, [bool(p >= threshold) for p in prob])
    out["with_band"] = binary_figures(y, answer)
    out["balanced_mix"] = balanced_accuracy(kinds, answer)
    return out


def balanced_accuracy(kinds: np.ndarray, answer: Sequence[bool | None]) -> dict[str, float]:
    """Accuracy of ``answer`` (None wrong) on a balanced mix: same pairs half the weight, each
    different kind a third of the other half; and with all four kinds weighed equally."""
    kinds = np.asarray(kinds)
    right = np.array([(a is True) == (k == "same") and a is not None for a, k in zip(answer, kinds)])
    per = {k: float(right[kinds == k].mean()) for k in KINDS if (kinds == k).any()}
    diff = [per[k] for k in KINDS[1:] if k in per]
    half = 0.5 * per.get("same", 0.0) + 0.5 * (sum(diff) / len(diff) if diff else 0.0)
    return {"half_same": half, "four_equal": float(np.mean(list(per.values()))), "per_kind": per}


def photo_embeddings(rec: Any, files: Sequence[str], cache: str | Path | None = None,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's main-vehicle embedding as ``compare`` makes it (the detector, then the crop) and
    whether a vehicle was found there (0 none, 1 yes, 2 only faintly: kept if it looks known);
    kept in ``cache`` (a folder) under the model's weights, preprocessing, detector and the files."""
    import torch

    from vericar.models.embed_cache import cached
    from vericar.vision.scene import embed_main_vehicles

    def compute() -> torch.Tensor:
        emb, mains = embed_main_vehicles(rec, list(files), progress=progress)
        found = [0.0 if r is None else 2.0 if r.tentative else 1.0 for r in mains]
        return torch.from_numpy(np.hstack([emb, np.array(found, np.float32)[:, None]]))

    out = cached(cache, compute, weights=rec.model, preprocess=rec.model.pretrained_cfg, files=list(files),
                 extra={"detector": rec.detector.spec, "what": "main vehicle"}, prefix="pairs").numpy()
    return out[:, :-1], out[:, -1]


def score_pairs(rec: Any, pairs: Sequence[Pair], cache: str | Path | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Compare every pair as ``Recognizer.compare`` would (each photo embedded and answered once):
    per pair the model-level probability and verdict, and ``no_vehicle``: pairs where a photo has none
    (scored all the same, and answered None)."""
    from vericar.core.compare import compare_predictions

    if rec.comparison is None:
        raise VericarError("this model has no calibrated comparison; fit one with "
                           "`python train/calibrate_pairs.py --artifact DIR` first.")
    files = sorted({f for p in pairs for f in (p.file_a, p.file_b)})
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise VericarError(f"{len(missing)} photos of the pair list are missing (e.g. {missing[0]}); check the "
                           "paths (relative to the CSV's folder).")
    emb, found = photo_embeddings(rec, files, cache, progress)
    preds = rec.predict_embeddings(emb)
    # scene.keeps: a faintly seen vehicle counts only when it looks like a known one
    ok = {f: found[i] == 1 or (found[i] == 2 and not preds[i].unknown) for i, f in enumerate(files)}
    row = {f: i for i, f in enumerate(files)}
    probs, answers, cosines, no_vehicle, open_rule = [], [], [], 0, 0
    for p in pairs:
        i, j = row[p.file_a], row[p.file_b]
        c = compare_predictions(rec, rec.comparison, preds[i], preds[j], emb[i], emb[j])
        both = ok[p.file_a] and ok[p.file_b]
        no_vehicle += not both
        open_rule += preds[i].unknown or preds[j].unknown
        probs.append(c.probability)
        cosines.append(c.cosine)
        answers.append(c.same_model if both else None)
    return {"prob": np.array(probs), "answers": answers, "cosine": np.array(cosines), "no_vehicle": no_vehicle, "open_rule": open_rule,
            "threshold": 0.5, "band": list(rec.comparison.levels["model"].band),
            "open_band": list(rec.comparison.rules(True)["model"].band)}


def evaluate_pairs(rec: Any, pairs: Sequence[Pair], cache: str | Path | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """``pair_report`` of ``score_pairs``: the figures of ``python -m vericar.evaluate --pairs CSV``."""
    s = score_pairs(rec, pairs, cache, progress)
    report = pair_report([p.kind for p in pairs], s["prob"], s["answers"], s["threshold"])
    report["auc_plain_cosine"] = pair_report([p.kind for p in pairs], s["cosine"], s["answers"])["auc"]
    return {**report, "band": s["band"], "open_band": s["open_band"], "no_vehicle_pairs": s["no_vehicle"],
            "unknown_vehicle_pairs": s["open_rule"]}


def format_pairs_table(r: dict[str, Any]) -> str:
    """An ``evaluate_pairs`` report as a markdown table."""
    auc = r["auc"]
    rows = [f"| ROC-AUC easy / medium / hard / all | {auc.get('easy', float('nan')):.4f} / "
            f"{auc.get('medium', float('nan')):.4f} / {auc.get('hard', float('nan')):.4f} / "
            f"{auc.get('all', float('nan')):.4f} |"]
    if "auc_plain_cosine" in r:
        c = r["auc_plain_cosine"]
        rows.append("| the plain cosine's ROC-AUC on the same pairs | " + " / ".join(
            f"{c.get(k, float('nan')):.4f}" for k in ("easy", "medium", "hard", "all")) + " |")
    for name, key in (("at threshold 0.5 (always answers)", "at_threshold"),
                      (f"same_model (None inside {r['band'][0]:.2f}-{r['band'][1]:.2f}; a pair with an unknown vehicle: "
                       f"{r['open_band'][0]:.2f}-{r['open_band'][1]:.2f})", "with_band")):
        f = r[key]
        rows.append(f"| {name}: accuracy / F1 / precision / recall / answered | {f['accuracy']:.4f} / "
                    f"{f['f1']:.4f} / {f['precision']:.4f} / {f['recall']:.4f} / {f['answered']:.3f} |")
    b = r["balanced_mix"]
    rows.append(f"| balanced mix right by same_model (None wrong): half same / four kinds equal | "
                f"{b['half_same']:.4f} / {b['four_equal']:.4f} |")
    rows.append("| right per kind | " + ", ".join(f"{k} {v:.3f}" for k, v in b["per_kind"].items()) + " |")
    return ("| figure | value |\n|---|---|\n" + "\n".join(rows) + f"\n\npairs: {r['counts']}; with a vehicle "
            f"flagged unknown (open rules): {r['unknown_vehicle_pairs']}; with a photo without a vehicle: "
            f"{r['no_vehicle_pairs']}")


def main_pairs(rec: Any, pairs_csv: str, *, cache: str | None = None, json_out: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """``python -m vericar.evaluate --pairs CSV``: evaluate, print the table, write ``json_out``."""
    import json

    r = evaluate_pairs(rec, load_pairs(pairs_csv), cache, progress)
    print(format_pairs_table(r))
    if json_out:
        Path(json_out).write_text(json.dumps(r, indent=2))
    return r
