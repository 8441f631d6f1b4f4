"""Evaluation metrics: top-k accuracy, macro-F1, balanced accuracy, Recall@K (retrieval), AUROC and
FPR at a TPR (unknown detection). Everything takes plain sequences / arrays and returns a float.

Unknown detection: OOD scores are "higher = more unknown". ``auroc`` treats unknown photos as
the positive class. ``fpr_at_tpr`` follows the OOD literature (FPR95): the threshold keeps
``tpr`` of the *known* photos known, and the result is the share of *unknown* photos that are
also accepted as known.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from vericar.core.errors import VericarError, check_positive_int
from vericar.search.ood import threshold_at_tpr


class MetricError(VericarError, ValueError):
    """Inputs to a metric are not usable (empty, mismatched lengths, bad k)."""


def _check_k(k: int) -> int:
    return check_positive_int(k, "k", MetricError)


def topk_accuracy(true: Sequence[Any], ranked: Sequence[Sequence[Any]], k: int) -> float:
    """Share of items whose true value is among the first ``k`` of its ranked predictions.

    ``ranked[i]`` is a best-first list of predicted values for item i (may be shorter than k).
    """
    return _share_in_first_k(true, ranked, k, "true values", "ranked lists")


def _share_in_first_k(true: Sequence[Any], rows: Sequence[Sequence[Any]], k: int, what: str, rows_are: str) -> float:
    """Share of ``true[i]`` found among the first ``k`` of ``rows[i]`` (top-k accuracy and Recall@K alike)."""
    k = _check_k(k)
    if len(true) != len(rows):
        raise MetricError(f"{len(true)} {what} but {len(rows)} {rows_are}; give one per item.")
    if len(true) == 0:
        raise MetricError(f"no {what} to score; pass at least one.")
    return sum(t in list(r)[:k] for t, r in zip(true, rows)) / len(true)


NO_ANSWER = "(no answer)"  # the class of a None prediction (no vehicle found)


def as_class_names(true: Sequence[Any], pred: Sequence[Any]) -> tuple[list[str], list[str]]:
    """Both sequences as strings of one kind (sklearn wants one label type); None ("no answer",
    e.g. no vehicle found) becomes :data:`NO_ANSWER`, a class of its own. Checks the lengths."""
    if len(true) != len(pred):
        raise MetricError(f"{len(true)} true values but {len(pred)} predictions; give one prediction per item.")
    if len(true) == 0:
        raise MetricError("no items to score; pass at least one.")
    return [_name(x) for x in true], [_name(x) for x in pred]


def _name(x: Any) -> str:
    # NaN too: pandas turns a None in a column of strings into NaN
    return NO_ANSWER if x is None or (isinstance(x, float) and x != x) else str(x)



def macro_f1(true: Sequence[Any], pred: Sequence[Any]) -> float:
    """Unweighted mean of per-class F1 over every class seen in ``true`` or ``pred``."""
    t, p = as_class_names(true, pred)
    return float(f1_score(t, p, average="macro", zero_division=0))


def balanced_accuracy(true: Sequence[Any], pred: Sequence[Any]) -> float:
    """Mean per-class recall over the classes in ``true``: accuracy with every class weighing the same,
    however many photos it has."""
    t, p = as_class_names(true, pred)
    with warnings.catch_warnings():  # sklearn warns about predicted classes no true value has; they do not count
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(t, p))


def recall_at_k(query_labels: Sequence[Any], neighbour_labels: Any, k: int) -> float:
    """Recall@K (retrieval): share of queries with at least one same-label entry in their top ``k``.

    ``neighbour_labels`` is (Q, K) best first (e.g. gallery labels at ``Gallery.search`` indices,
    with the query itself already removed). Padding entries (None) never match.
    """
    return _share_in_first_k(query_labels, neighbour_labels, k, "queries", "neighbour rows")


def _ood_arrays(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(id_scores, dtype=np.float64).ravel()
    b = np.asarray(ood_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise MetricError(f"need both known and unknown scores, got {a.size} known and {b.size} unknown; "
                          "hold out some classes as unknown (data.py's open-world split).")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MetricError("scores contain NaN or infinity; check the embeddings / OOD scorer.")
    return a, b


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve for telling unknown (positive) from known by score (higher = unknown).

    1.0 = perfect separation, 0.5 = chance.
    """
    a, b = _ood_arrays(id_scores, ood_scores)
    y = np.concatenate([np.zeros(a.size), np.ones(b.size)])
    return float(roc_auc_score(y, np.concatenate([a, b])))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` (FPR95): share of unknown photos accepted as known when the threshold keeps
    at least ``tpr`` of known photos known. Lower is better.
    """
    if not 0.0 < float(tpr) <= 1.0:
        raise MetricError(f"tpr must be in (0, 1], got {tpr!r}.")
    a, b = _ood_arrays(id_scores, ood_scores)
    thr = threshold_at_tpr(a, tpr)  # the rule KNNOOD.calibrate uses
    return float(np.mean(b <= thr))


def attribute_scores(true: Sequence[str | None], pred: Sequence[str | None],
                     group: Any = None) -> dict[str, Any]:
    """How well an attribute (colour, viewpoint) is named, over the items whose ``true`` value is known.

    ``pred`` None is "unsure" (not answered). Returns ``n`` (labelled items), ``coverage`` (share
    answered), ``accuracy`` over the answered ones, ``coarse_accuracy`` when ``group`` maps a value to
    its group, and ``confusion`` {true: {predicted or "null": count}}.
    """
    if len(true) != len(pred):
        raise MetricError(f"true and pred differ in length ({len(true)} vs {len(pred)}).")
    pairs = [(t, p) for t, p in zip(true, pred) if t is not None]
    answered = [(t, p) for t, p in pairs if p is not None]
    n_ans = len(answered)
    out: dict[str, Any] = {
        "n": len(pairs), "answered": n_ans,
        "coverage": n_ans / len(pairs) if pairs else None,
        "accuracy": sum(t == p for t, p in answered) / n_ans if n_ans else None,
    }
    if group is not None:
        out["coarse_accuracy"] = sum(group(t) == group(p) for t, p in answered) / n_ans if n_ans else None
    confusion: dict[str, dict[str, int]] = {}
    for t, p in pairs:
        row = confusion.setdefault(t, {})
        row[p or "null"] = row.get(p or "null", 0) + 1
    out["confusion"] = confusion
    return out
