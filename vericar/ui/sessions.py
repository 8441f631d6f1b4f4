"""Visitors' own vehicles on a public demo: each session sees the shared gallery plus only its own.

    view = SessionRecognizer.over(rec, own_gallery, own_density)   # a Recognizer for one visitor

The shared recognizer is never changed by a visitor. A session's vehicles live in a small Gallery
of its own; ``SessionRecognizer`` answers over "shared gallery + that gallery" with the shared
recognizer's model, KNN+ detector, k and ranking, so a visitor's vehicle competes with the known
ones exactly as an enrolled vehicle does in local mode, and is invisible to every other session.

Ranking (CSLS density correction): an entry's density r(g) is the mean cosine to its k nearest
other entries. A session entry's r(g) is computed over shared + own entries, as local mode would.
A shared entry keeps its density in the shared gallery alone: recomputing the densities of 8,144
shared entries per visitor would cost ~0.2 s and 32 KB per session change, and a visitor's few
photos enter a shared entry's k nearest only when they are closer than its own class's photos.
With the correction off (weight 0) the merged ranking is exactly local mode's.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from vericar.core.recognizer import Recognizer
from vericar.search.gallery import Gallery
from vericar.search.taxonomy import Taxonomy
from vericar.search.voting import knn_vote


class MergedGallery:
    """Read-only view of ``shared`` entries followed by ``own`` ones (indices ``len(shared) + j``).

    It offers what a Recognizer reads from its gallery (labels, refs, thumbnails, embeddings,
    classes, vote, a plain-cosine search); SessionRecognizer.search merges the two in the
    recognizer's own ranking.
    """

    def __init__(self, shared: Gallery, own: Gallery) -> None:
        self.shared, self.own = shared, own
        self.dim = shared.dim

    def __len__(self) -> int:
        return len(self.shared) + len(self.own)

    @property
    def labels(self) -> list[str]:
        return self.shared.labels + self.own.labels

    @property
    def refs(self) -> list[str]:
        return self.shared.refs + self.own.refs

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.shared.labels) | set(self.own.labels))

    @property
    def embeddings(self) -> np.ndarray:
        return np.concatenate([self.shared.embeddings, self.own.embeddings])

    @property
    def revision(self) -> tuple[int, int]:
        return self.shared.revision, self.own.revision

    @property
    def exact(self) -> bool:
        return self.shared.exact

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Plain-cosine top ``k`` over both parts (as Gallery.search; the recognizer ranks via its own search)."""
        s, i = self.shared.search(queries, k)
        if len(self.own):
            o_s, o_i = self.own.search(queries, min(k, len(self.own)))
            o_i = np.where(o_i >= 0, o_i + len(self.shared), -1)
            s, i = np.concatenate([s, o_s], axis=1), np.concatenate([i, o_i], axis=1)
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            s, i = np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
        return s, i

    def thumbnail(self, i: int) -> Any:
        n = len(self.shared)
        return self.shared.thumbnail(i) if i < n else self.own.thumbnail(i - n)

    def vote(self, scores: np.ndarray, idx: np.ndarray, level_of: Any = None, *, labels: Any = None) -> list:
        return knn_vote(scores, idx, self.labels if labels is None else labels, level_of)


def own_densities(base: Recognizer, own: Gallery) -> np.ndarray:
    """r(g) of each of ``own``'s entries over shared + own entries (0 when the correction is off)."""
    if not base.density.active or len(own) == 0:
        return np.zeros(len(own), np.float32)
    k = base.density.k
    emb = own.embeddings
    s_cos, _ = base.gallery.search(emb, k) if len(base.gallery) else (np.full((len(own), 0), -np.inf), None)
    o_cos = emb @ emb.T
    np.fill_diagonal(o_cos, -np.inf)  # an entry is not its own neighbour
    both = np.sort(np.concatenate([s_cos, o_cos], axis=1), axis=1)[:, ::-1][:, :k]
    valid = np.isfinite(both)
    return (np.where(valid, both, 0.0).sum(1) / np.maximum(valid.sum(1), 1)).astype(np.float32)


class SessionRecognizer(Recognizer):
    """The shared recognizer as one visitor sees it: shared gallery + the visitor's own vehicles.

    Shares the base's model, detector, density settings and lock (an admin change to the shared
    gallery is never seen half-done); only the gallery view, taxonomy and class counts are its own.
    """

    @classmethod
    def over(cls, base: Recognizer, own: Gallery, own_density: np.ndarray) -> "SessionRecognizer":
        """A view of ``base`` extended by ``own`` (``own_density``: ``own_densities(base, own)``)."""
        view = cls.__new__(cls)
        view.__dict__.update(base.__dict__)  # model, ood, k, density, meta, batch size, transform, lock
        view.base, view.own, view.own_density = base, own, own_density
        view.gallery = MergedGallery(base.gallery, own)
        view._view_key = None
        view._n_values = {}  # its own level sizes: a visitor's makes must not leak into the base's cache
        view._refresh()
        return view

    def _refresh(self) -> None:
        key = self.gallery.revision
        if key != self._view_key:
            self.taxonomy = Taxonomy.from_labels(self.gallery.classes)
            self._counts = dict(Counter(self.gallery.labels))
            self._n_values = {}
            self._view_key = key

    def _class_counts(self) -> dict[str, int]:
        self._refresh()  # the shared gallery may have been changed by an admin since
        return self._counts

    def search(self, emb: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The base's top ``depth`` merged with the visitor's entries, by the same ranking score."""
        with self._lock:
            self._refresh()
            scores, cosine, idx = self.base.search(emb, depth)
            if len(self.own) == 0:
                return scores, cosine, idx
            q = self.own._check_embeddings(emb, "queries")
            o_cos = (q @ self.own.embeddings.T).astype(np.float32)
            o_score = o_cos - self.density.weight * self.own_density[None, :] if self.density.active else o_cos
            o_idx = np.broadcast_to(np.arange(len(self.own)) + len(self.base.gallery), o_cos.shape)
            all_s = np.concatenate([scores, o_score], axis=1)
            order = np.argsort(-all_s, axis=1, kind="stable")[:, :depth]
            pick = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
            return (pick(all_s).astype(np.float32), pick(np.concatenate([cosine, o_cos], axis=1)).astype(np.float32),
                    pick(np.concatenate([idx, o_idx], axis=1)).astype(np.int64))
