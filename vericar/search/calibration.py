"""Confidences that are probabilities, and partial answers when the vehicle's model is unknown.

A level's k-NN vote (model, make, type, year) gives every value a weight: the summed similarity
of the neighbours that have it (``voting.knn_vote``). ``Calibration`` turns the vote into the
probability that its winner is right with a softmax over every value the gallery knows at that
level. Value ``v`` gets the logit ``w_v / (k * T) + a * m_v`` (``k`` the neighbours that voted, so
an enrolled vehicle with 3 photos is not penalised for having few; ``m_v`` the cosine of the
nearest of them with value ``v``); values no neighbour has get the logit ``b``. The winner stays
the vote's winner, so no answer changes; only the number beside it does. ``T``, ``b`` and ``a``
are fitted per level on held-out photos by minimising the log loss of "the winner is right"
(``calibration_fit.fit_softmax``). ``b`` is there because with 196 models the mass of the many values
nobody voted for dominates: a temperature alone left the model level's ECE at 5.1% on dev, with
``b`` 2.7%. ``a`` says how much closer the nearest neighbour of a value is matters beyond the vote
(how sure a photo is depends on how near it is, not only on how many neighbours agree): fitted
across three trainings it lowered the held-out log loss at every level (README).

Partial answers: when the model-level answer is unknown (KNN+), make and type are still given
when their own calibrated confidence clears their own threshold (``threshold_at_max_wrong``:
the lowest at which at most 10% of held-out photos, with their own class taken out of the
gallery, get a wrong make / type named). An artifact without a
calibration keeps the plain vote share and withholds every level of an unknown vehicle.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vericar.core.errors import ArtifactError
from vericar.search.taxonomy import LEVELS
from vericar.search.voting import knn_vote

PARTIAL_LEVELS = ("make", "type")  # levels that may still be named when the model is unknown
T_BOUNDS = (1e-3, 10.0)
B_BOUNDS = (-30.0, 30.0)
A_BOUNDS = (0.0, 100.0)  # logit per unit of cosine; >= 0: a nearer neighbour never makes its value less likely
# "knn-softmax": temperatures and biases only (every artifact before the similarity term, and any
# fit that left it at 0: older vericars read those). "knn-softmax-sim": a level has a term.
METHODS = ("knn-softmax", "knn-softmax-sim")


def _voters(scores: np.ndarray, idx: np.ndarray, labels: Sequence[str], level_of: Callable[[str], Any]):
    """(value, max(sim, 0)) of each real neighbour of one query (faiss pads missing ones with -1)."""
    for s, j in zip(np.ravel(scores), np.ravel(idx)):
        if j >= 0 and np.isfinite(s):
            yield level_of(labels[int(j)]), max(float(s), 0.0)


def level_weights(scores: np.ndarray, idx: np.ndarray, labels: Sequence[str],
                  level_of: Callable[[str], Any]) -> dict[Any, float]:
    """Per-value vote weights of one query (the weights ``knn_vote`` sums): value -> Σ max(sim, 0)."""
    w: dict[Any, float] = {}
    for v, s in _voters(scores, idx, labels, level_of):
        w[v] = w.get(v, 0.0) + s
    return w


def level_maxima(scores: np.ndarray, idx: np.ndarray, labels: Sequence[str],
                 level_of: Callable[[str], Any]) -> dict[Any, float]:
    """Per value among one query's neighbours: the largest max(sim, 0) of a neighbour with that value."""
    m: dict[Any, float] = {}
    for v, s in _voters(scores, idx, labels, level_of):
        m[v] = max(m.get(v, 0.0), s)
    return m


def softmax_confidence(weights: dict[Any, float], winner: Any, k: int, n_values: int, temperature: float,
                       bias: float = 0.0, maxima: dict[Any, float] | None = None, scale: float = 0.0) -> float:
    """Softmax probability of ``winner`` over ``n_values`` values, logits ``w / (k T) + scale * maxima[v]``;
    values without a vote (``n_values`` minus those in ``weights``) get the logit ``bias``."""
    if winner is None or winner not in weights:
        return 0.0
    near = (maxima or {}) if scale else {}
    z = {v: w / (max(int(k), 1) * float(temperature)) + scale * near.get(v, 0.0) for v, w in weights.items()}
    n_absent = max(int(n_values) - len(z), 0)
    m = max(max(z.values()), float(bias))  # subtract the largest logit: no overflow at small T
    denom = sum(math.exp(x - m) for x in z.values()) + n_absent * math.exp(bias - m)
    return math.exp(z[winner] - m) / denom


@dataclass
class Calibration:
    """Per-level softmax settings and partial-answer thresholds (empty: uncalibrated, the old behaviour).

    ``temperatures[level]``: the softmax temperature of that level (missing: plain vote share).
    ``biases[level]``: the logit of the values no neighbour voted for (missing: 0).
    ``scales[level]``: the logit per unit of cosine of a value's nearest neighbour (missing: 0).
    ``thresholds[level]``: for ``PARTIAL_LEVELS``, the confidence above which that level is still
    named when the model-level answer is unknown (missing: never named then).
    ``info``: how and on what it was fitted (recipe, photo counts, fitted figures).
    """

    temperatures: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    biases: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.temperatures or self.thresholds)

    def vote(self, scores: np.ndarray, idx: np.ndarray, labels: Sequence[str], level_of: Callable[[str], Any],
             level: str, k: int, n_values: int) -> tuple[Any, float]:
        """One query's answer at ``level`` and its confidence (calibrated when this level has a temperature)."""
        winner, share = knn_vote(scores[None, :], idx[None, :], labels, level_of)[0]
        t = self.temperatures.get(level)
        if t is None:
            return winner, float(share)
        a = self.scales.get(level, 0.0)
        maxima = level_maxima(scores, idx, labels, level_of) if a else None
        return winner, softmax_confidence(level_weights(scores, idx, labels, level_of), winner, k, n_values, t,
                                          self.biases.get(level, 0.0), maxima, a)

    def unknown_levels(self, confidence: dict[str, float], unknown: bool) -> list[str]:
        """Levels whose answer is withheld: none for a known vehicle; for an unknown one, model and
        year always, make and type unless their confidence clears their threshold."""
        if not unknown:
            return []
        return [lvl for lvl in LEVELS
                if lvl not in PARTIAL_LEVELS or lvl not in self.thresholds or lvl not in confidence
                or confidence[lvl] < self.thresholds[lvl]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored under "calibration" in an artifact's config.json."""
        scales = {lvl: a for lvl, a in self.scales.items() if a}
        d = {"method": METHODS[bool(scales)], "temperatures": dict(self.temperatures), "biases": dict(self.biases),
             "thresholds": dict(self.thresholds), "info": self.info}
        return {**d, "scales": scales} if scales else d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibration:
        """Inverse of ``to_dict``; None (an artifact written before calibration existed) -> uncalibrated."""
        if d is None:
            return cls()
        if not isinstance(d, dict) or d.get("method") not in METHODS:
            got = d.get("method") if isinstance(d, dict) else d
            raise ArtifactError(f"calibration method {got!r} is not one this vericar reads ({', '.join(METHODS)}): "
                                "the artifact was written by another vericar version, or by hand. Install the "
                                "version that wrote it, or re-calibrate with python -m train.calibrate.")
        try:
            temps, thr, biases, scales = ({str(k): float(v) for k, v in (d.get(key) or {}).items()}
                                          for key in ("temperatures", "thresholds", "biases", "scales"))
        except (TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"calibration values must be numbers ({e}); "
                                "re-calibrate with python -m train.calibrate.") from e
        bad = [k for k in list(temps) + list(thr) + list(biases) + list(scales) if k not in LEVELS]
        finite = all(math.isfinite(x) for x in list(temps.values()) + list(biases.values()) + list(scales.values()))
        if bad or not finite or any(t <= 0 for t in temps.values()) or any(a < 0 for a in scales.values()):
            raise ArtifactError(f"calibration has unknown levels {bad}, or temperatures {temps} / biases {biases} / "
                                f"scales {scales} that are not finite (temperatures > 0, scales >= 0); "
                                f"levels are {LEVELS}. Re-calibrate with python -m train.calibrate.")
        return cls(temps, thr, dict(d.get("info") or {}), biases, scales)
