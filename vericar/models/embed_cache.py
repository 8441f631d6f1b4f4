"""One on-disk cache for computed embeddings and feature maps (safetensors + a JSON key).

On a 2-core CPU, embedding the 8,144 training photos takes minutes; evaluating the same model
against several galleries, or training twice from the same frozen early stages, should pay for it
once. An entry is keyed by what decides its numbers: a hash of the weights that ran, the
preprocessing, the list of files (in order) and any extra settings. The key is stored as JSON in
the file's safetensors metadata and checked on reading. Writes go to a temporary file in the same
folder, then ``os.replace``: an interrupted run leaves the previous entry or none, never half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["EmbeddingCache", "cached", "cached_embeddings", "weights_digest"]

_FORMAT = 1
_META = "vericar_cache"


def weights_digest(weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and values of a module's (or a state dict's) tensors."""
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # bytes: bfloat16 too
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))  # tuples -> lists, odd values -> str


class EmbeddingCache:
    """Entries ``{prefix}-{hash}.safetensors`` in ``folder``, one tensor each."""

    def __init__(self, folder: str | Path, prefix: str = "emb") -> None:
        self.folder, self.prefix = Path(folder), prefix

    @staticmethod
    def key(*, weights: str, preprocess: Mapping | None, files: Sequence[str], extra: Mapping | None = None) -> dict:
        """The JSON key: weights digest, preprocessing, the files (hashed, in order) and extra settings."""
        listing = hashlib.sha256("\n".join(files).encode()).hexdigest()
        return _jsonable({"format": _FORMAT, "weights": weights, "preprocess": preprocess,
                          "files": {"count": len(files), "sha256": listing}, "extra": extra or {}})

    def path(self, key: Mapping) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{self.prefix}-{digest[:20]}.safetensors"

    def load(self, key: Mapping) -> torch.Tensor | None:
        """The stored tensor, or None when there is no entry or it is unreadable or for another key."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get(_META) != json.dumps(key, sort_keys=True):
                    return None
                return f.get_tensor("data")
        except Exception:  # noqa: BLE001 - a damaged entry is a miss: it is recomputed and replaced
            return None

    def save(self, key: Mapping, data: torch.Tensor) -> Path:
        """Write atomically: a temporary file beside the entry, then ``os.replace``."""
        from safetensors.torch import save_file

        path = self.path(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}-", suffix=".tmp")
        os.close(fd)
        try:
            save_file({"data": data.contiguous()}, tmp, metadata={_META: json.dumps(key, sort_keys=True)})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get(self, key: Mapping, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The entry for ``key``, computed (and stored) on a miss."""
        hit = self.load(key)
        if hit is not None:
            return hit
        data = compute()
        self.save(key, data)
        return data


def cached(folder: str | Path | None, compute: Callable[[], torch.Tensor], *, weights: nn.Module | Mapping,
           preprocess: Mapping | None, files: Sequence[str], extra: Mapping | None = None,
           prefix: str = "emb") -> torch.Tensor:
    """``compute()``, kept in ``folder`` under the key of (weights, preprocessing, files, extra); no folder: no cache."""
    if not folder:
        return compute()
    cache = EmbeddingCache(folder, prefix)
    key = cache.key(weights=weights_digest(weights), preprocess=preprocess, files=files, extra=extra)
    return cache.get(key, compute)


def cached_embeddings(model: Any, samples: Sequence[Any], folder: str | Path | None, **embed_kw: Any) -> np.ndarray:
    """:func:`vericar.models.embedding.embed` of labelled photos (``.ref``), through the cache when ``folder`` is given."""
    from vericar.models.embedding import embed

    emb = cached(folder, lambda: torch.from_numpy(embed(model, samples, **embed_kw)), weights=model,
                 preprocess=model.pretrained_cfg, files=[s.ref for s in samples],
                 extra={"spec": model.spec, "embed_dim": model.embed_dim,
                        "precision": str(embed_kw.get("precision", "float32")),
                        # only when set: plain entries cached before test-time views keep their keys
                        **({"tta": list(views)} if (views := embed_kw.get("tta", model.tta)) else {})})
    return emb.numpy()
