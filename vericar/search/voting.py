"""Similarity-weighted kNN vote: which label (or make, type, ...) the neighbours of a query agree on."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vericar.core.errors import GalleryError


def knn_vote(scores: np.ndarray, idx: np.ndarray, labels: Sequence[str],
             level_of: Callable[[str], Any] | None = None) -> list[tuple[Any, float]]:
    """Similarity-weighted kNN vote per query at one taxonomy level.

    ``scores`` / ``idx`` are what ``Gallery.search`` returns, ``labels`` the gallery's labels.
    Each valid neighbour (idx >= 0) votes for ``level_of(label)`` (identity when None) with
    weight ``max(sim, 0)``. Returns per query ``(winner, confidence)`` with confidence =
    winner's weight / total weight; ties go to the value seen first (the better-ranked neighbour).
    A query with no valid neighbour gets ``(None, 0.0)``; one whose neighbours all have
    sim <= 0 gets a plain-count winner with confidence 0.0 (nothing is actually similar).
    """
    # Weight max(sim, 0) rather than exp(sim / tau): it has no temperature to tune, it is 0
    # for dissimilar entries, and the confidence it gives is scale-free in the similarities.
    scores, idx = np.atleast_2d(scores), np.atleast_2d(idx)
    if scores.shape != idx.shape:
        raise GalleryError(f"scores {scores.shape} and idx {idx.shape} must have the same shape; pass what "
                           "search() returned.")
    out: list[tuple[Any, float]] = []
    for s_row, i_row in zip(scores, idx):
        weights: dict[Any, float] = {}
        counts: dict[Any, int] = {}
        for s, j in zip(s_row, i_row):
            if j < 0 or not np.isfinite(s):
                continue
            value = labels[int(j)] if level_of is None else level_of(labels[int(j)])
            weights[value] = weights.get(value, 0.0) + max(float(s), 0.0)
            counts[value] = counts.get(value, 0) + 1
        if not weights:
            out.append((None, 0.0))
            continue
        total = sum(weights.values())
        if total <= 0.0:
            winner = max(counts, key=counts.__getitem__)  # max keeps the first of equals
            out.append((winner, 0.0))
            continue
        winner = max(weights, key=weights.__getitem__)
        out.append((winner, float(weights[winner] / total)))
    return out
