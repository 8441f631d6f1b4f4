"""Density correction of gallery similarities (CSLS, Conneau et al. 2018): fair to enrolled vehicles.

A model's gallery of the classes it was trained on holds the very photos it fitted, so each of
those classes is an unnaturally tight cluster; a vehicle enrolled later (photos the model never
trained on) is a looser one. A photo of the enrolled vehicle then often lies nearer to a whole
tight cluster of a trained look-alike than to its own photos, and the k-NN vote goes to the
look-alike: on the open-world split this cost enrolled classes ~23 points of top-1.

CSLS scores a pair by ``2 cos(q, g) - r(q) - r(g)``, with ``r(g)`` the mean cosine of ``g`` to its
``k`` nearest gallery neighbours: for one query that ranks entries by ``cos(q, g) - r(g) / 2``,
i.e. ``weight = 0.5``. Entries in dense clusters pay for their density, so neighbours are chosen
on how much closer they are than their usual company. Only the ranking (and the KNN+ unknown
score, which reads the ranked scores) changes; the similarities shown and the vote weights stay
plain cosines. ``benchmarks/density_weight.py`` measures the trade-off on a validation split.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import VericarError


class DensityCorrection:
    """Re-ranks gallery neighbours by ``cos(q, g) - weight * r(g)``.

    Args:
        weight: how much an entry's local density counts (0 turns the correction off; 0.5 is CSLS).
        k: gallery neighbours that define an entry's density ``r(g)``.
        overfetch: the re-ranking looks at ``max(overfetch * depth, depth + 40)`` plain-cosine
            neighbours, enough for any index type (flat, HNSW, IVF) to have the corrected top.
    """

    def __init__(self, weight: float = 0.0, k: int = 10, overfetch: int = 4) -> None:
        if not np.isfinite(weight) or weight < 0:
            raise VericarError(f"density weight must be a number >= 0 (0 = off, 0.5 = CSLS), got {weight!r}.")
        if int(k) <= 0 or int(overfetch) <= 0:
            raise VericarError(f"density k and overfetch must be positive integers, got k={k!r}, overfetch={overfetch!r}.")
        self.weight, self.k, self.overfetch = float(weight), int(k), int(overfetch)

    @property
    def active(self) -> bool:
        """Whether the correction changes anything."""
        return self.weight > 0

    def fetch_depth(self, depth: int, n_gallery: int) -> int:
        """How many plain-cosine neighbours to fetch so that the corrected top ``depth`` is among them."""
        if not self.active:
            return depth
        return min(max(self.overfetch * depth, depth + 40), max(n_gallery, depth))

    def densities(self, gallery: Any) -> np.ndarray:
        """r(g) for every entry: mean cosine to its ``k`` nearest other entries (0 for a lone entry)."""
        n = len(gallery)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        s, i = gallery.search(gallery.embeddings, min(self.k + 1, n))
        # Each entry's own row comes back first, except behind an exact duplicate or from an
        # approximate index: drop it wherever it is and keep the first k others.
        keep = (i != np.arange(n)[:, None]) & (i >= 0)
        use = keep & (np.cumsum(keep, axis=1) <= self.k)
        count = use.sum(axis=1)
        r = np.where(use, s, 0.0).sum(axis=1) / np.maximum(count, 1)
        return r.astype(np.float32)

    def rerank(self, scores: np.ndarray, idx: np.ndarray, density: np.ndarray, depth: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Corrected top-``depth`` of each row of a plain search.

        Returns ``(corrected, cosine, idx)``, each (Q, depth), ordered by the corrected score;
        missing neighbours stay ``-inf`` / ``-1`` at the end.
        """
        valid = idx >= 0
        r = np.where(valid, density[np.where(valid, idx, 0)], 0.0)
        corrected = np.where(valid, scores - self.weight * r, -np.inf).astype(np.float32)
        order = np.argsort(-corrected, axis=1, kind="stable")[:, :depth]
        take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
        corrected, cosine, idx = take(corrected), take(scores), take(idx)
        if corrected.shape[1] < depth:  # fewer fetched than asked: pad like Gallery.search does
            pad = depth - corrected.shape[1]
            corrected = np.pad(corrected, ((0, 0), (0, pad)), constant_values=-np.inf)
            cosine = np.pad(cosine, ((0, 0), (0, pad)), constant_values=-np.inf)
            idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        return corrected, cosine, idx

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (saved in an artifact's config.json)."""
        return {"weight": self.weight, "k": self.k, "overfetch": self.overfetch}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DensityCorrection:
        """Settings from config.json; an artifact without them gets the plain cosine ranking."""
        d = d or {}
        try:
            return cls(float(d.get("weight", 0.0)), int(d.get("k", 10)), int(d.get("overfetch", 4)))
        except (TypeError, ValueError) as e:
            raise VericarError(f"config.json 'density' settings are invalid ({e}); expected "
                               "{'weight': float, 'k': int}.") from e

    def __repr__(self) -> str:
        return f"DensityCorrection(weight={self.weight}, k={self.k})"
