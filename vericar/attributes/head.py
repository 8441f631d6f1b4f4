"""A small softmax head (multinomial logistic regression) over a vehicle's features, and its files.

The colour and viewpoint stages are each one such head: standardise the features, ``W x + b``,
softmax, and an answer only when the top probability reaches ``threshold`` (else ``None``: unsure).
Weights are fitted outside the library (benchmarks/attributes_fit.py, scikit-learn) and kept here as
plain arrays: ``<name>.safetensors`` (mean, scale, weight, bias) + ``<name>.json`` (classes,
threshold, what the features are, how it was fitted). Never pickle.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vericar.core.errors import ArtifactError

FORMAT_VERSION = 1


@dataclass
class LinearHead:
    """``softmax(((x - mean) / scale) @ weight.T + bias)`` over ``classes``; ``threshold``: the least top
    probability that is answered (chosen on training labels for a coverage; 0 answers everything)."""

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (len(classes), dim)
    bias: np.ndarray  # (len(classes),)
    threshold: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean, self.scale = np.asarray(self.mean, np.float32), np.asarray(self.scale, np.float32)
        self.weight, self.bias = np.asarray(self.weight, np.float32), np.asarray(self.bias, np.float32)
        c, d = len(self.classes), self.mean.shape[0]
        if self.weight.shape != (c, d) or self.bias.shape != (c,) or self.scale.shape != (d,):
            raise ArtifactError(f"attribute head: weight {self.weight.shape}, bias {self.bias.shape}, scale "
                                f"{self.scale.shape} do not fit {c} classes over {d} features; refit the head.")

    @property
    def dim(self) -> int:
        """How many features the head reads."""
        return int(self.mean.shape[0])

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, len(classes))`` for features ``(N, dim)``."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ArtifactError(f"attribute head reads {self.dim} features per vehicle, got an array of shape "
                                f"{x.shape}; the head was fitted for another model: refit it for this one.")
        z = ((x - self.mean) / self.scale) @ self.weight.T + self.bias
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def answer(self, x: np.ndarray) -> list[tuple[str | None, float]]:
        """Per row: (class, its probability), the class ``None`` when the probability is under the threshold."""
        p = self.proba(x)
        top = p.argmax(axis=1)
        return [(self.classes[j] if p[i, j] >= self.threshold else None, float(p[i, j])) for i, j in enumerate(top)]

    def save(self, directory: str | os.PathLike, name: str) -> None:
        """Write ``<name>.safetensors`` and ``<name>.json`` into ``directory``."""
        from safetensors.numpy import save_file

        out = Path(directory)
        save_file({"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": self.bias},
                  str(out / f"{name}.safetensors"), metadata={"format": "vericar-attribute-head"})
        doc = {"format_version": FORMAT_VERSION, "classes": list(self.classes), "threshold": float(self.threshold),
               "info": self.info}
        (out / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike, name: str) -> "LinearHead | None":
        """The head saved as ``name`` in ``directory``; None when the folder has none (an older artifact)."""
        from safetensors.numpy import load_file

        d = Path(directory)
        weights, doc_path = d / f"{name}.safetensors", d / f"{name}.json"
        if not weights.is_file() or not doc_path.is_file():
            return None
        try:
            doc = json.loads(doc_path.read_text())
            arrays = load_file(str(weights))
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {doc.get('format_version')!r}, this vericar reads {FORMAT_VERSION}")
            return cls(list(doc["classes"]), arrays["mean"], arrays["scale"], arrays["weight"], arrays["bias"],
                       float(doc.get("threshold", 0.0)), dict(doc.get("info") or {}))
        except ArtifactError:
            raise
        except Exception as e:  # broken JSON, truncated safetensors, missing keys
            raise ArtifactError(f"{weights} / {doc_path} cannot be read ({type(e).__name__}: {e}); copy the model "
                                "folder again, or delete both files to run without this attribute.") from e


def fit_arrays(classes: Sequence[str], mean: np.ndarray, scale: np.ndarray, coef: np.ndarray,
               intercept: np.ndarray) -> dict[str, np.ndarray]:
    """Arrays of a fitted multinomial model in the head's layout; a binary scikit-learn fit
    (one row of ``coef``) becomes its two-class softmax equivalent."""
    coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
    if len(classes) == 2 and coef.shape[0] == 1:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return {"mean": mean, "scale": scale, "weight": coef, "bias": intercept}
