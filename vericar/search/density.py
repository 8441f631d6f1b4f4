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

Densities are recomputed (one k-NN search per entry, ~0.2 s for 8,144 entries on 2 cores) on
the first prediction after the gallery changes; for galleries of millions, use weight 0.
"""
from __future__ import annotations

from typing import Any

import warnings

import numpy as np
import torch

from vericar.core.config import DensityCfg
from vericar.core.errors import ArtifactError, GalleryError, VericarError, check_positive_int


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A float32 tensor sharing ``a``'s memory (read-only views included: it is only read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class DensityCorrection:
    """Re-ranks gallery neighbours by ``cos(q, g) - weight * r(g)``.

    Args:
        weight: how much an entry's local density counts (0 turns the correction off; 0.5 is CSLS).
        k: gallery neighbours that define an entry's density ``r(g)``.
        max_fetch: approximate indexes (HNSW, trained IVF) fetch plain-cosine neighbours, doubling
            until no unfetched entry can still enter the corrected top, up to this many; exhaustive
            galleries (flat) are scored whole, so their corrected top is exact.
    """

    def __init__(self, weight: float = 0.0, k: int = 10, max_fetch: int = 4096) -> None:
        if not np.isfinite(weight) or weight < 0:
            raise VericarError(f"density weight must be a number >= 0 (0 = off, 0.5 = CSLS), got {weight!r}.")
        if int(k) <= 0 or int(max_fetch) <= 0:
            raise VericarError(f"density k and max_fetch must be positive integers, got k={k!r}, max_fetch={max_fetch!r}.")
        self.weight, self.k, self.max_fetch = float(weight), int(k), int(max_fetch)

    @property
    def cfg(self) -> DensityCfg:
        """These settings as a node of the config tree (vericar.core.config.DensityCfg)."""
        return DensityCfg(self.weight, self.k, self.max_fetch)

    @classmethod
    def from_cfg(cls, cfg: DensityCfg) -> DensityCorrection:
        return cls(cfg.weight, cfg.k, cfg.max_fetch)

    @property
    def active(self) -> bool:
        """Whether the correction changes anything."""
        return self.weight > 0

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

    def neighbours(self, gallery: Any, queries: np.ndarray, density: np.ndarray, depth: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The top ``depth`` entries by corrected score: ``(corrected, cosine, idx)``, each (Q, depth).

        ``density`` is ``densities(gallery)``. Missing neighbours (a gallery smaller than
        ``depth``) are padded with ``-inf`` / ``-1`` at the end, as ``Gallery.search`` does.
        """
        check_positive_int(depth, "depth", GalleryError)
        q = gallery._check_embeddings(queries, "queries")
        if len(gallery) == 0:
            return self._rank(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), density, depth)
        if gallery.exact:
            # Exhaustive anyway: score every entry (in blocks of queries to bound memory). The
            # product runs in torch, not numpy: OpenBLAS's threads spin after each call and, on a
            # small CPU, made the next embedding 3x slower (benchmarks/predict_latency.py).
            g, r = _tensor(gallery.embeddings), _tensor(density)
            d = min(depth, len(gallery))
            cos = np.empty((len(q), d), np.float32)
            idx = np.empty((len(q), d), np.int64)
            step = max(1, 2**24 // max(len(gallery), 1))
            with torch.no_grad():
                for a in range(0, len(q), step):
                    c = torch.from_numpy(q[a:a + step]) @ g.T
                    top = torch.topk(c - self.weight * r, d, dim=1).indices
                    idx[a:a + step], cos[a:a + step] = top.numpy(), torch.gather(c, 1, top).numpy()
            return self._rank(cos, idx, density, depth)
        # An unfetched entry has cosine <= the last fetched one and density >= the smallest, so it
        # scores at most cos[-1] - weight * min(r): a query whose depth-th corrected score reaches
        # that bound is complete; only the others are fetched again, deeper.
        r_min = float(density.min())
        limit = min(len(gallery), self.max_fetch)
        fetch = min(max(4 * depth, depth + 40), len(gallery))
        out = [np.empty((len(q), depth), np.float32), np.empty((len(q), depth), np.float32),
               np.empty((len(q), depth), np.int64)]
        todo = np.arange(len(q))
        while len(todo):
            cos, idx = gallery.search(q[todo], max(fetch, depth))
            part = self._rank(cos, idx, density, depth)
            done = (part[0][:, -1] >= cos[:, -1] - self.weight * r_min) | (fetch >= limit)
            for o, p in zip(out, part):
                o[todo[done]] = p[done]
            todo = todo[~done]
            fetch = min(2 * fetch, limit)
        return out[0], out[1], out[2]

    def _rank(self, cos: np.ndarray, idx: np.ndarray, density: np.ndarray, depth: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        valid = idx >= 0
        r = np.where(valid, density[np.where(valid, idx, 0)], 0.0)
        corrected = np.where(valid, cos - self.weight * r, -np.inf).astype(np.float32)
        order = np.argsort(-corrected, axis=1, kind="stable")[:, :depth]
        corrected, cos, idx = (np.take_along_axis(a, order, axis=1) for a in (corrected, cos, idx))
        cos = np.where(idx >= 0, cos, -np.inf).astype(np.float32)
        if corrected.shape[1] < depth:  # a gallery smaller than depth: pad like Gallery.search does
            pad = ((0, 0), (0, depth - corrected.shape[1]))
            corrected = np.pad(corrected, pad, constant_values=-np.inf)
            cos = np.pad(cos, pad, constant_values=-np.inf)
            idx = np.pad(idx, pad, constant_values=-1)
        return corrected, cos, idx

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (saved in an artifact's config.json)."""
        return {"weight": self.weight, "k": self.k, "max_fetch": self.max_fetch}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DensityCorrection:
        """Settings from config.json; an artifact without them gets the plain cosine ranking."""
        if d is None:
            return cls()
        expected = "expected {'weight': number, 'k': int, 'max_fetch': int}; re-save the model with save_pretrained"
        if not isinstance(d, dict) or set(d) - {"weight", "k", "max_fetch"}:
            raise ArtifactError(f"config.json 'density' settings are invalid ({d!r}); {expected}.")
        w, k, m = d.get("weight", 0.0), d.get("k", 10), d.get("max_fetch", 4096)
        # A typo'd key or a bool would silently change the ranking the OOD threshold was calibrated for.
        if (isinstance(w, bool) or not isinstance(w, (int, float))
                or any(isinstance(v, bool) or not isinstance(v, int) for v in (k, m))):
            raise ArtifactError(f"config.json 'density' settings are invalid ({d!r}); {expected}.")
        try:
            return cls(float(w), k, m)
        except VericarError as e:
            raise ArtifactError(f"config.json 'density' settings are invalid: {e} Re-save the model.") from e

    def __repr__(self) -> str:
        return f"DensityCorrection(weight={self.weight}, k={self.k}, max_fetch={self.max_fetch})"
