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
``b`` 2.7%. ``a`` says how much the nearness of a value's nearest neighbour matters beyond the vote
(how sure a photo is depends on how near it is, not only on how many neighbours agree): fitted
on two trainings' validation views, it lowered the third's log loss at model, make and type (not
year) and the ECE under a harsher shift at every level (benchmarks/calibration_loto.py, README).

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
METHODS = ("knn-softmax", "knn-softmax-sim", "knn-softmax-open")  # open: with a part fitted on never-trained models


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
    ``unseen``: fitted on never-trained models (vericar/search/unseen_fit.py), empty when not: the make /
    type softmax for a vehicle whose model is unknown (``temperatures``, ``biases``, ``scales``), and
    ``make_floor``, the make confidence under which a photo counts as unknown even when its KNN+
    score is low. ``thresholds`` are then compared with those unseen confidences.
    """

    temperatures: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    biases: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    unseen: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.temperatures or self.thresholds)

    def vote(self, scores: np.ndarray, idx: np.ndarray, labels: Sequence[str], level_of: Callable[[str], Any],
             level: str, k: int, n_values: int, *, unseen: bool = False) -> tuple[Any, float]:
        """One query's answer at ``level`` and its confidence (calibrated when this level has a temperature;
        ``unseen``: as calibrated on never-trained models, where this calibration has that level)."""
        winner, share = knn_vote(scores[None, :], idx[None, :], labels, level_of)[0]
        temps, biases, scales = self.softmax_settings(unseen and level in self.unseen.get("temperatures", {}))
        t = temps.get(level)
        if t is None:
            return winner, float(share)
        a = scales.get(level, 0.0)
        maxima = level_maxima(scores, idx, labels, level_of) if a else None
        return winner, softmax_confidence(level_weights(scores, idx, labels, level_of), winner, k, n_values, t,
                                          biases.get(level, 0.0), maxima, a)

    def softmax_settings(self, unseen: bool = False) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """(temperatures, biases, scales) for known vehicles, or (``unseen``) for never-trained models."""
        if unseen:
            u = self.unseen
            return u.get("temperatures", {}), u.get("biases", {}), u.get("scales", {})
        return self.temperatures, self.biases, self.scales

    def below_floor(self, confidence: dict[str, float]) -> bool:
        """Whether a photo is too unsure of its make to be called known (the unseen fit's ``make_floor``)."""
        floor = self.unseen.get("make_floor")
        return floor is not None and "make" in confidence and confidence["make"] < floor

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
        method = METHODS[2] if self.unseen else METHODS[bool(scales)]
        d = {"method": method, "temperatures": dict(self.temperatures), "biases": dict(self.biases),
             "thresholds": dict(self.thresholds), "info": self.info}
        if self.unseen:
            d["unseen"] = {k: dict(v) if isinstance(v, dict) else v for k, v in self.unseen.items()}
        return {**d, "scales": scales} if scales else d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibration:
        """Inverse of ``to_dict``; None (an artifact written before calibration existed) -> uncalibrated."""
        if d is None:
            return cls()
        if not isinstance(d, dict) or d.get("method") not in METHODS:
            got = d.get("method") if isinstance(d, dict) else type(d).__name__
            raise ArtifactError(f"calibration method {got!r} is not one this vericar reads ({', '.join(METHODS)}): "
                                "the artifact was written by another vericar version, or by hand. Install the "
                                "version that wrote it, or re-calibrate with python train/calibrate.py.")
        if d.get("scales") and d["method"] == METHODS[0]:  # a reader of the old method would ignore them
            raise ArtifactError(f"calibration method {d['method']!r} has no nearness scales, but scales "
                                f"{d['scales']!r} are given; re-calibrate with python train/calibrate.py.")
        temps, thr, biases, scales = (_numbers(d, key) for key in ("temperatures", "thresholds", "biases", "scales"))
        if not isinstance(d.get("info") or {}, dict):
            raise ArtifactError(f"calibration info must be an object, got {d.get('info')!r}; "
                                "re-calibrate with python train/calibrate.py.")
        out_of_range = {f"{key}[{lvl}]": x for key, vals, (lo, hi) in (
            ("temperatures", temps, T_BOUNDS), ("biases", biases, B_BOUNDS), ("scales", scales, A_BOUNDS),
            ("thresholds", thr, (0.0, 1.0))) for lvl, x in vals.items()
            if not lo - 1e-9 * abs(lo) <= x <= hi + 1e-9 * abs(hi)}  # exp(log(10)) is 10.000000000000002; NaN fails
        bad = [k for k in list(temps) + list(thr) + list(biases) + list(scales) if k not in LEVELS]
        if bad or out_of_range:
            raise ArtifactError(f"calibration has unknown levels {bad} or values out of range {out_of_range} "
                                f"(levels are {LEVELS}; temperatures in {T_BOUNDS}, biases in {B_BOUNDS}, scales "
                                f"in {A_BOUNDS}, thresholds in [0, 1]). Re-calibrate with python train/calibrate.py.")
        return cls(temps, thr, dict(d.get("info") or {}), biases, scales, _unseen(d))


def _unseen(d: dict[str, Any]) -> dict[str, Any]:
    """The calibration's ``unseen`` part, checked (method "knn-softmax-open" has it, the others none)."""
    u = d.get("unseen")
    if (u is not None) != (d["method"] == METHODS[2]) or (u is not None and not isinstance(u, dict)):
        raise ArtifactError(f"calibration method {d['method']!r} with unseen={u!r}: method {METHODS[2]!r} goes with "
                            "an object fitted on never-trained models, the others with none; re-calibrate with "
                            "python train/calibrate.py.")
    if u is None:
        return {}
    out: dict[str, Any] = {key: _numbers(u, key) for key in ("temperatures", "biases", "scales")}
    floor = u.get("make_floor")
    bounds = {"temperatures": T_BOUNDS, "biases": B_BOUNDS, "scales": A_BOUNDS}
    bad = {f"{key}[{lvl}]": x for key, vals in out.items() for lvl, x in vals.items()
           if lvl not in PARTIAL_LEVELS or not bounds[key][0] - 1e-9 <= x <= bounds[key][1] + 1e-9}
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1):
        bad["make_floor"] = floor
    if bad:
        raise ArtifactError(f"calibration unseen part has values out of range or levels other than "
                            f"{PARTIAL_LEVELS}: {bad}; re-calibrate with python train/calibrate.py.")
    return {**out, "make_floor": None if floor is None else float(floor), "info": dict(u.get("info") or {})}


def _numbers(d: dict[str, Any], key: str) -> dict[str, float]:
    """``d[key]`` as level -> float; ArtifactError unless it is absent or an object of real numbers."""
    vals = d.get(key)
    if vals is None:
        return {}
    if not isinstance(vals, dict) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                             for x in vals.values()):
        raise ArtifactError(f"calibration {key} must be an object of numbers per level, got {vals!r}; "
                            "re-calibrate with python train/calibrate.py.")
    return {str(k): float(x) for k, x in vals.items()}
