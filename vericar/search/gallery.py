"""Gallery: known vehicles' embeddings + labels + references, searchable with faiss.

Embeddings are L2-normalised float32, so faiss inner product == cosine similarity. The raw
embeddings are kept beside the faiss index: the index can then be rebuilt (after
``remove_label``, or after loading) and saved as plain safetensors, never faiss/pickle blobs.

On disk a gallery is two files in a directory that it may share with a model (config.json,
model.safetensors): see ``_gallery_io``.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from vericar.core.config import check_tta
from vericar.core.errors import ArtifactError, GalleryError, SpecError, check_positive_int
from vericar.search import _gallery_io
from vericar.search._gallery_io import FORMAT_VERSION, JSON_NAME, GalleryParts
from vericar.search.voting import knn_vote

__all__ = ["FORMAT_VERSION", "INDEX_TYPES", "JSON_NAME", "Gallery", "GalleryError"]
_REVISIONS = itertools.count()
INDEX_TYPES = ("flat", "hnsw", "ivf")


class Gallery:
    """Cosine-similarity kNN gallery over a faiss index.

    Args:
        dim: embedding size D.
        index: "flat" (exact), "hnsw" (graph, approximate) or "ivf" (inverted lists; trained
            lazily once ``39 * nlist`` vectors exist, exact flat search until then).
        nprobe: IVF lists visited per query (recall/speed trade-off).
        nlist: IVF list count.
        hnsw_m, ef_construction, ef_search: HNSW graph settings.
        tta: the test-time views its embeddings were made with (``ModelCfg.tta``: () or ("flip",)), or
            None when not recorded (a gallery built in memory: the recognizer it is given to records its
            model's). Saved with the gallery; a saved gallery that records none was made with none.
    """

    def __init__(
        self,
        dim: int,
        index: str = "flat",
        *,
        nprobe: int = 16,
        nlist: int = 64,
        hnsw_m: int = 32,
        ef_construction: int = 64,
        ef_search: int = 128,
        tta: Sequence[str] | None = None,
    ) -> None:
        check_positive_int(dim, "dim", GalleryError, "the embedding size")
        if index not in INDEX_TYPES:
            raise GalleryError(f"unknown index type {index!r}; use one of {', '.join(INDEX_TYPES)}.")
        for name, v in (("nprobe", nprobe), ("nlist", nlist), ("hnsw_m", hnsw_m),
                        ("ef_construction", ef_construction), ("ef_search", ef_search)):
            try:
                ok = int(v) > 0
            except (TypeError, ValueError, OverflowError):  # "abc", None, inf (e.g. an edited gallery.json)
                ok = False
            if not ok:
                raise GalleryError(f"{name} must be a positive integer, got {v!r}.")
        self.dim = int(dim)
        self.index_type = index
        self.nprobe, self.nlist = int(nprobe), int(nlist)
        self.hnsw_m, self.ef_construction, self.ef_search = int(hnsw_m), int(ef_construction), int(ef_search)
        try:
            self.tta: tuple[str, ...] | None = None if tta is None else check_tta(tta)
        except SpecError as e:
            raise GalleryError(f"gallery {e}") from e
        self._emb = np.zeros((0, self.dim), dtype=np.float32)
        self.labels: list[str] = []
        self.refs: list[str] = []
        self._thumbs: list[bytes | None] = []
        self._rebuild()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_arrays(cls, embeddings: np.ndarray, labels: Sequence[str], refs: Sequence[str] | None = None,
                    thumbnails: Sequence[Any] | None = None, **kw: Any) -> Gallery:
        """A gallery holding ``embeddings`` (N, D) with their labels (kwargs go to ``Gallery``)."""
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise GalleryError(f"embeddings must be 2-D (N, D), got shape {emb.shape}.")
        g = cls(emb.shape[1], **kw)
        g.add(emb, labels, refs=refs, thumbnails=thumbnails)
        return g

    def settings(self) -> dict[str, Any]:
        """Index settings (JSON-able); ``Gallery(dim, **settings)`` recreates an empty twin. ``tta`` is
        written only when the embeddings had test-time views (a plain gallery.json stays as it was)."""
        views = {"tta": list(self.tta)} if self.tta else {}
        return {"index": self.index_type, "nprobe": self.nprobe, "nlist": self.nlist, "hnsw_m": self.hnsw_m,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search, **views}

    def _new_index(self) -> faiss.Index:
        n = self._emb.shape[0]
        if self.index_type == "hnsw":
            idx = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = self.ef_construction
            idx.hnsw.efSearch = self.ef_search
            return idx
        # faiss warns below 39 training points per list and clusters badly: until then exact
        # search is both better and, at that size, fast.
        if self.index_type == "ivf" and n >= 39 * self.nlist:
            quantizer = faiss.IndexFlatIP(self.dim)
            idx = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            idx.train(self._emb)
            idx.nprobe = self.nprobe
            return idx
        return faiss.IndexFlatIP(self.dim)

    def _rebuild(self) -> None:
        self._index = self._new_index()
        if len(self._emb):
            self._index.add(self._emb)
        self._touch()

    def _touch(self) -> None:
        # Unique across all galleries of the process, so a cache keyed on it (the recognizer's
        # densities) can tell apart two galleries as well as two states of one gallery.
        self.revision = next(_REVISIONS)

    @property
    def exact(self) -> bool:
        """True while searches are exhaustive (flat, or an IVF gallery not yet trained)."""
        return self.index_type == "flat" or (self.index_type == "ivf" and not self.ivf_trained)

    @property
    def ivf_trained(self) -> bool:
        """True once an "ivf" gallery searches with its trained inverted lists."""
        return isinstance(self._index, faiss.IndexIVFFlat)

    def _check_embeddings(self, x: Any, what: str) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)):
            raise GalleryError(f"{what} must be a float array, got dtype {arr.dtype}; pass model embeddings "
                               "(np.float32).")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise GalleryError(f"{what} must have shape (N, {self.dim}), got {arr.shape}; was it made by a model "
                               f"with a different embedding size? Rebuild the gallery with the same model.")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise GalleryError(f"{what} contain NaN or infinite values; check the model output.")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms < 1e-12).any():
            raise GalleryError(f"{what} contain an all-zero vector, which has no direction; drop it.")
        # Re-normalising is idempotent for model output and makes inner product == cosine for any input.
        return arr / norms

    def add(self, embeddings: np.ndarray, labels: Sequence[str], refs: Sequence[str] | None = None,
            thumbnails: Sequence[Any] | None = None) -> None:
        """Append N entries; everything is checked before anything is added."""
        emb = self._check_embeddings(embeddings, "embeddings")
        n = emb.shape[0]
        if isinstance(labels, str):
            raise GalleryError("labels must be a list of strings (one per embedding), not a single string.")
        labels = list(labels)
        if len(labels) != n:
            raise GalleryError(f"got {n} embeddings but {len(labels)} labels; give exactly one label per embedding.")
        if any(not isinstance(lab, str) or not lab.strip() for lab in labels):
            raise GalleryError("every label must be a non-empty string.")
        refs = [""] * n if refs is None else [str(r) for r in refs]
        if len(refs) != n:
            raise GalleryError(f"got {n} embeddings but {len(refs)} refs; give one ref per embedding or none.")
        thumbs = [None] * n if thumbnails is None else [_gallery_io.encode_thumbnail(t) for t in thumbnails]
        if len(thumbs) != n:
            raise GalleryError(f"got {n} embeddings but {len(thumbs)} thumbnails; give one per embedding or none.")
        was_trained = self.ivf_trained
        self._emb = np.concatenate([self._emb, emb]) if len(self._emb) else emb
        self.labels += labels
        self.refs += refs
        self._thumbs += thumbs
        if self.index_type == "ivf" and not was_trained and len(self._emb) >= 39 * self.nlist:
            self._rebuild()  # enough vectors now: train the inverted lists
        else:
            self._index.add(emb)
            self._touch()

    def remove_label(self, label: str) -> int:
        """Remove every entry labelled ``label``; returns how many were removed."""
        keep = np.array([lab != label for lab in self.labels], dtype=bool)
        removed = int((~keep).sum())
        if removed:
            self._emb = np.ascontiguousarray(self._emb[keep])
            self.labels = [x for x, k in zip(self.labels, keep) if k]
            self.refs = [x for x, k in zip(self.refs, keep) if k]
            self._thumbs = [x for x, k in zip(self._thumbs, keep) if k]
            # HNSW cannot delete and IVF may have dropped below its training size: rebuild.
            self._rebuild()
        return removed

    # ------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings (read-only view)."""
        view = self._emb.view()
        view.flags.writeable = False
        return view

    @property
    def classes(self) -> list[str]:
        """Sorted unique labels."""
        return sorted(set(self.labels))

    def thumbnail(self, i: int) -> Any:
        """Entry ``i``'s thumbnail as a PIL image, or None when it has none."""
        return _gallery_io.decode_thumbnail(self._thumbs[i])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine similarities and entry indices per query, best first.

        Returns (scores (Q, k) float32, idx (Q, k) int64); missing neighbours (fewer than ``k``
        entries) are padded with score ``-inf`` and index ``-1``.
        """
        check_positive_int(k, "k", GalleryError)
        q = self._check_embeddings(queries, "queries")
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        idx = np.full((q.shape[0], k), -1, dtype=np.int64)
        kk = min(int(k), len(self))
        if kk and q.shape[0]:
            # Apply the current settings: callers may tune nprobe / ef_search after building.
            if self.ivf_trained:
                self._index.nprobe = self.nprobe
            elif self.index_type == "hnsw":
                self._index.hnsw.efSearch = self.ef_search
            s, i = self._index.search(q, kk)
            # Approximate indexes may also return -1 holes; make their scores -inf too.
            s = np.where(i < 0, -np.inf, s).astype(np.float32)
            scores[:, :kk], idx[:, :kk] = s, i
        return scores, idx

    def vote(self, scores: np.ndarray, idx: np.ndarray, level_of: Callable[[str], Any] | None = None,
             *, labels: Sequence[str] | None = None) -> list[tuple[Any, float]]:
        """Similarity-weighted kNN vote per query at one taxonomy level (see ``voting.knn_vote``).

        ``labels`` lets a caller vote on a snapshot of ``self.labels`` taken with the search.
        """
        return knn_vote(scores, idx, self.labels if labels is None else labels, level_of)

    # --------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the gallery to ``directory`` atomically (crash-safe); returns the gallery.json path."""
        return _gallery_io.write(directory, GalleryParts(self.dim, self.settings(), self._emb, self.labels,
                                                         self.refs, self._thumbs))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Gallery:
        """Read a gallery written by ``save`` (ArtifactError when missing, corrupt or of another version)."""
        parts = _gallery_io.read(directory)
        try:
            g = cls(parts.dim, **{"tta": (), **parts.settings})  # recorded none: made with none
        except (GalleryError, TypeError) as e:  # TypeError: a setting this vericar does not know
            raise ArtifactError(f"gallery in {directory} has unusable settings ({e}); rebuild it.") from e
        g._emb, g.labels, g.refs, g._thumbs = parts.embeddings, parts.labels, parts.refs, parts.thumbnails
        g._rebuild()
        return g

    def __repr__(self) -> str:
        return f"Gallery(dim={self.dim}, index={self.index_type!r}, entries={len(self)}, classes={len(set(self.labels))})"

