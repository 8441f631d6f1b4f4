"""Unknown-vehicle detection with KNN+ (Sun et al., "Out-of-Distribution Detection with Deep
Nearest Neighbors", ICML 2022).

The OOD score of a query is ``1 - cos(query, k-th nearest gallery embedding)`` on L2-normalised
embeddings: photos of vehicles the gallery knows have close neighbours, unknown ones do not.
The threshold is set on held-out in-distribution photos so that a chosen share of them (TPR,
95% by default) stays "known"; anything scoring above it is flagged unknown.

Self-matches: when calibrating with photos that are themselves in the gallery, each query's best
neighbour is its own photo (similarity 1). Pass ``exclude_self=True`` to drop that first column,
otherwise the threshold comes out too low and real known vehicles get flagged as unknown.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vericar.core.config import OODCfg
from vericar.core.errors import ArtifactError, VericarError, check_positive_int

# Largest possible cosine distance; the score of a query with no neighbour at all.
MAX_SCORE = 2.0


def threshold_at_tpr(scores: np.ndarray, tpr: float) -> float:
    """Smallest observed score with at least ``tpr`` of ``scores`` <= it (higher = more unknown).

    Picking an observed score (the ceil(tpr*n)-th smallest) makes the realised TPR on these
    scores never fall below the target, which np.quantile's interpolating methods do not promise.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    # The epsilon keeps 0.95 * 20 = 19.000000000000004 from rounding up to 20.
    rank = int(np.ceil(float(tpr) * s.size - 1e-9))
    return float(s[min(max(rank, 1), s.size) - 1])


class OODError(VericarError, ValueError):
    """Scores or settings given to KNNOOD are not usable."""


class KNNOOD:
    """KNN+ unknown detector.

    Args:
        k: which nearest neighbour's distance is the score (the paper uses k=50 for large
            in-distribution sets; small galleries of a few photos per class want ~k=5-10).
        threshold: scores above it are unknown; None flags nothing (not calibrated yet).
    """

    def __init__(self, k: int = 10, threshold: float | None = None) -> None:
        check_positive_int(k, "k", OODError)
        if threshold is not None and not np.isfinite(float(threshold)):
            raise OODError(f"threshold must be a finite number or None, got {threshold!r}.")
        self.k = int(k)
        self.threshold = None if threshold is None else float(threshold)
        self.tpr: float | None = None
        # The neighbour ranking (vericar.core.config.DensityCfg) the threshold was fitted under: its scores
        # mean nothing under another one. Set by whoever calibrates (train/calibrate.py).
        self.calibrated_for: Any = None

    def score(self, scores: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """OOD scores (Q,) from the similarities ``Gallery.search`` returned (Q, K >= k), best first.

        ``exclude_self=True`` drops the first column (the query's own photo in the gallery), so
        the k-th neighbour is read from column k instead of k-1. Where fewer than k valid
        neighbours exist (padding ``-inf``), the farthest valid one is used, i.e. k is clamped
        to the gallery size; a query with no neighbour scores ``MAX_SCORE``.
        """
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2:
            raise OODError(f"scores must be 2-D (queries, neighbours) as Gallery.search returns, got shape {s.shape}.")
        if exclude_self:
            s = s[:, 1:]
        if s.shape[1] < self.k:
            need = self.k + int(exclude_self)
            raise OODError(f"scores have {s.shape[1] + int(exclude_self)} neighbour columns but KNN+ with k={self.k}"
                           f"{' and exclude_self' if exclude_self else ''} needs {need}; search with k >= {need}.")
        s = s[:, : self.k]
        valid = np.isfinite(s)
        n_valid = valid.sum(axis=1)
        # Results are sorted best first, so the valid ones form a prefix: the last valid column
        # is the k-th neighbour, or the farthest one there is.
        col = np.clip(n_valid - 1, 0, None)
        kth = s[np.arange(s.shape[0]), col]
        out = np.where(n_valid > 0, 1.0 - kth, MAX_SCORE)
        return out.astype(np.float32)

    def calibrate(self, id_scores: np.ndarray, tpr: float = 0.95, *, exclude_self: bool = False) -> float:
        """Set (and return) the threshold that keeps ``tpr`` of in-distribution photos known.

        ``id_scores`` are held-out in-distribution OOD scores (Q,) from ``score``, or the raw
        (Q, K) similarity matrix from ``Gallery.search`` (scored here with ``exclude_self``).
        """
        if not 0.0 < float(tpr) <= 1.0:
            raise OODError(f"tpr must be in (0, 1], got {tpr!r}.")
        s = np.asarray(id_scores)
        if s.ndim == 2:
            s = self.score(s, exclude_self=exclude_self)
        s = np.asarray(s, dtype=np.float64).ravel()
        if s.size == 0:
            raise OODError("no in-distribution scores to calibrate on; give at least one held-out known photo.")
        if not np.isfinite(s).all():
            raise OODError("in-distribution scores contain NaN or infinity; check the embeddings.")
        self.threshold = threshold_at_tpr(s, tpr)
        self.tpr = float(tpr)
        self.calibrated_for = None  # fitted now, for whatever ranking produced id_scores: the recognizer's
        return self.threshold

    def is_unknown(self, ood_scores: np.ndarray) -> np.ndarray:
        """Bool array: True where the score is above the threshold (all False when uncalibrated)."""
        s = np.asarray(ood_scores, dtype=np.float64)
        if self.threshold is None:
            return np.zeros(s.shape, dtype=bool)
        return s > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings."""
        return {"method": "knn+", "k": self.k, "threshold": self.threshold, "tpr": self.tpr}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KNNOOD:
        """Inverse of ``to_dict``; missing keys take the defaults (an empty dict is an uncalibrated
        ``KNNOOD()``). ArtifactError when the dict is not a KNN+ config."""
        if not isinstance(d, dict) or d.get("method", "knn+") != "knn+":
            raise ArtifactError(f"not a KNN+ OOD config: {d!r}; expected {{'method': 'knn+', 'k': ..., "
                                "'threshold': ...}} as KNNOOD.to_dict() writes. Re-save the model.")
        try:
            o = cls(k=int(d.get("k", 10)), threshold=d.get("threshold"))
        except (OODError, TypeError, ValueError) as e:
            raise ArtifactError(f"invalid KNN+ OOD config {d!r}: {e}; re-save the model.") from e
        o.tpr = None if d.get("tpr") is None else float(d["tpr"])
        return o

    @property
    def cfg(self) -> OODCfg:
        """These settings as a node of the config tree (vericar.core.config.OODCfg)."""
        return OODCfg(self.k, self.threshold, self.tpr, self.calibrated_for)

    @classmethod
    def from_cfg(cls, cfg: OODCfg) -> KNNOOD:
        o = cls(cfg.k, cfg.threshold)
        o.tpr, o.calibrated_for = cfg.tpr, cfg.calibrated_for
        return o

    def __repr__(self) -> str:
        return f"KNNOOD(k={self.k}, threshold={self.threshold})"
