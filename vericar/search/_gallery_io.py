"""Private: a gallery's on-disk form (two files) and its thumbnail encoding.

* ``gallery-<sha256[:16]>.safetensors`` - embeddings, thumbnails (JPEG bytes concatenated in one
  uint8 tensor + offsets);
* ``gallery.json`` - format version, index settings, labels, refs and the name, size and
  SHA-256 of the tensors file. It is written last, so it always points at a complete file.

Kept apart from ``gallery.py`` so the search structure and its file format change separately.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from vericar._infra.io import atomic_write
from vericar.core.errors import ArtifactError, GalleryError

FORMAT_VERSION = 1
JSON_NAME = "gallery.json"
KIND = "vericar-gallery"


class GalleryParts(NamedTuple):
    """Everything a saved gallery holds; ``Gallery.load`` rebuilds the index from it."""

    dim: int
    settings: dict[str, Any]
    embeddings: np.ndarray
    labels: list[str]
    refs: list[str]
    thumbnails: list[bytes | None]


def write(directory: str | os.PathLike, parts: GalleryParts) -> Path:
    """Write ``parts`` to ``directory`` atomically; returns the gallery.json path.

    The tensors go to a new file named by their hash, then gallery.json is replaced to point at
    it, then older gallery tensors are deleted: a crash at any step leaves a directory whose
    gallery.json names a complete tensors file (old or new).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    thumbs = parts.thumbnails
    offsets = np.zeros(len(thumbs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t or b"") for t in thumbs])
    blob = np.frombuffer(b"".join(t or b"" for t in thumbs), dtype=np.uint8)
    # One metadata key: safetensors writes several in a random order, so the same gallery would get
    # other bytes, another file name and a new multi-MB file in git each time it is saved. The
    # format version is in gallery.json, where it is checked.
    data = st_save({"embeddings": parts.embeddings, "thumbnails": blob, "thumbnail_offsets": offsets},
                   metadata={"format": KIND})
    digest = hashlib.sha256(data).hexdigest()
    tensors_name = f"gallery-{digest[:16]}.safetensors"
    meta = {
        "kind": KIND, "format_version": FORMAT_VERSION, "dim": parts.dim, "count": len(parts.labels),
        "settings": parts.settings,
        "tensors": {"file": tensors_name, "size": len(data), "sha256": digest},
        "labels": parts.labels, "refs": parts.refs,
    }
    atomic_write(d / tensors_name, data)
    atomic_write(d / JSON_NAME, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
    for old in d.glob("gallery-*.safetensors"):
        if old.name != tensors_name:
            old.unlink(missing_ok=True)  # unreferenced now that gallery.json moved on
    return d / JSON_NAME


def read(directory: str | os.PathLike) -> GalleryParts:
    """Read what ``write`` wrote (ArtifactError when missing, corrupt or of another version)."""
    d = Path(directory)
    jpath = d / JSON_NAME
    if not jpath.is_file():
        raise ArtifactError(f"no {JSON_NAME} in {d}; point at a directory written by Gallery.save / "
                            "save_pretrained, or build a gallery (python -m vericar.evaluate --gallery CSV).")
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{jpath} is not valid JSON ({e}); the gallery is corrupt, rebuild it.") from e
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ArtifactError(f"{jpath} is not a vericar gallery file; rebuild the gallery.")
    ver = meta.get("format_version")
    if ver != FORMAT_VERSION:
        raise ArtifactError(f"{jpath} has gallery format version {ver!r} but this vericar reads version "
                            f"{FORMAT_VERSION}; rebuild the gallery with this vericar, or install the vericar "
                            "version that wrote it.")
    try:
        tinfo = meta["tensors"]
        tpath = d / Path(tinfo["file"]).name  # never follow a path out of the directory
        if not tpath.is_file():
            raise ArtifactError(f"{jpath} refers to {tpath.name}, which is missing; copy the whole gallery "
                                "directory, or rebuild the gallery.")
        data = tpath.read_bytes()
        if len(data) != tinfo["size"] or hashlib.sha256(data).hexdigest() != tinfo["sha256"]:
            raise ArtifactError(f"{tpath} does not match the size/SHA-256 recorded in {jpath} (truncated or "
                                "modified); restore it from the original copy or rebuild the gallery.")
        t = st_load(data)
        emb, blob, offsets = t["embeddings"], t["thumbnails"], t["thumbnail_offsets"]
        labels, refs = [str(x) for x in meta["labels"]], [str(x) for x in meta["refs"]]
        dim, settings = int(meta["dim"]), meta["settings"]
        if not isinstance(settings, dict):
            raise TypeError(f"settings must be an object, got {type(settings).__name__}")
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise ArtifactError(f"gallery in {d} is corrupt ({type(e).__name__}: {e}); rebuild it.") from e
    n = len(labels)
    if emb.shape != (n, dim) or len(refs) != n or offsets.shape != (n + 1,):
        raise ArtifactError(f"gallery in {d} is inconsistent: {emb.shape} embeddings, {n} labels, {len(refs)} "
                            "refs; rebuild it.")
    raw = blob.tobytes()
    thumbs = [raw[a:b] or None for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return GalleryParts(dim, settings, np.ascontiguousarray(emb, dtype=np.float32), labels, refs, thumbs)


def encode_thumbnail(t: Any) -> bytes | None:
    """PIL image (or an RGB array, JPEG/PNG bytes, or None) -> JPEG bytes for storage."""
    if t is None:
        return None
    if isinstance(t, (bytes, bytearray)):
        return bytes(t) or None
    from PIL import Image

    if isinstance(t, np.ndarray):
        t = Image.fromarray(t)
    if not isinstance(t, Image.Image):
        raise GalleryError(f"a thumbnail must be a PIL image, JPEG bytes or None, got {type(t).__name__}.")
    buf = io.BytesIO()
    t.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def decode_thumbnail(data: bytes | None) -> Any:
    """Stored JPEG bytes -> PIL image (None stays None)."""
    if not data:
        return None
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img
