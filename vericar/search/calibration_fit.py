"""Fitting a ``Calibration`` (vericar/search/calibration.py) on held-out photos, and measuring one.

``collect_votes`` gathers each level's votes for photos the gallery does not hold, as the
recognizer votes; ``fit_softmax`` fits a level's softmax (temperature, absent-value logit, nearness
scale) by log loss; ``fit_votes`` fits every level and the partial-answer thresholds
(``threshold_at_max_wrong``) on the same photos with their own class taken out. ECE and the
reliability bins are here too: the figures the fit reports are the ones benchmarks/ measure.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vericar.search.calibration import (A_BOUNDS, B_BOUNDS, PARTIAL_LEVELS, T_BOUNDS, Calibration, level_maxima,
                                        level_weights, softmax_confidence)
from vericar.search.taxonomy import LEVELS
from vericar.search.voting import knn_vote

A_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # where the profile search over the nearness scale looks
B_STARTS = (-6.0, 0.0, 6.0)  # where each (T, b) search starts: the loss has a basin on each side of b = 0
MIN_GAIN = 1e-4  # log loss (nats per photo) a nearness term must save to be kept


@dataclass
class LevelVotes:
    """What fitting needs of one level's votes over held-out photos."""

    weights: list[dict[Any, float]]
    winners: list[Any]
    ks: list[int]
    n_values: int
    correct: np.ndarray  # bool: winner == true value
    n_values_per_query: list[int] | None = None  # per photo when it differs (own class out, joined sources)
    maxima: list[dict[Any, float]] | None = None  # per photo, value -> its nearest neighbour's cosine

    @classmethod
    def concat(cls, parts: Sequence[LevelVotes]) -> LevelVotes:
        """One level's votes from several sources (e.g. the validation slices of several trainings
        of one recipe) as one set of photos, each keeping its own count of values."""
        if not parts:
            raise ValueError("no votes to concatenate; give at least one LevelVotes.")
        ns = [n for p in parts for n in (p.n_values_per_query or [p.n_values] * len(p.winners))]
        has = {p.maxima is not None for p in parts}
        if len(has) > 1:  # a fit would silently lose the nearness term for every photo
            raise ValueError("some of these votes have maxima (nearest cosine per value) and some not; "
                             "collect them all with collect_votes.")
        maxima = [m for p in parts for m in p.maxima] if has == {True} else None
        return cls([w for p in parts for w in p.weights], [v for p in parts for v in p.winners],
                   [k for p in parts for k in p.ks], parts[0].n_values,
                   np.concatenate([np.asarray(p.correct, bool) for p in parts]), ns, maxima)

    def confidences(self, temperature: float | None, bias: float = 0.0, scale: float = 0.0) -> np.ndarray:
        """Each photo's confidence in its winner: the plain vote share (``temperature`` None) or the
        calibrated softmax (a ``scale`` needs the votes' ``maxima``)."""
        if temperature is None:  # the plain vote share
            return np.array([w.get(v, 0.0) / (sum(w.values()) or 1.0) for w, v in zip(self.weights, self.winners)])
        if scale and self.maxima is None:
            raise ValueError("these votes have no maxima (nearest cosine per value); collect them with collect_votes.")
        ns = self.n_values_per_query or [self.n_values] * len(self.winners)
        maxima = self.maxima or [None] * len(self.winners)
        return np.array([softmax_confidence(w, v, k, n, temperature, bias, m, scale)
                         for w, v, k, n, m in zip(self.weights, self.winners, self.ks, ns, maxima)])


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary log loss of probabilities ``p`` for outcomes ``y``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def fit_softmax(votes: LevelVotes) -> tuple[float, float, float]:
    """The temperature, absent-value logit and nearness scale that minimise the log loss of "the
    winner is right" (the scale is 0 for votes without ``maxima``).

    The loss is not convex: at a fixed ``a`` it can have one basin with a small T and b > 0 and
    another with a larger T and b < 0 (the shipped default's type level), and a search in
    (T, b, a) started at a = 0 stayed there. So (T, b) is searched from several starts
    (``_fit_tb``), and ``a`` as a profile: (T, b) fitted at a = 0 and at each ``a`` of A_GRID, the
    best polished in (log T, b, a). A term that lowers the loss by less than MIN_GAIN is dropped
    (a = 0: the calibration older vericars read). Never worse than the fit without it; all stay
    inside T_BOUNDS / B_BOUNDS / A_BOUNDS.
    """
    from scipy.optimize import minimize

    if len(votes.winners) == 0:
        raise ValueError("no held-out photos to fit a temperature on; give at least one.")
    lo, hi = (math.log(b) for b in T_BOUNDS)

    def clip(p: np.ndarray) -> tuple[float, float, float]:
        a = min(max(p[2], A_BOUNDS[0]), A_BOUNDS[1])
        t = min(max(math.exp(min(max(p[0], lo), hi)), T_BOUNDS[0]), T_BOUNDS[1])  # exp(log(10)) > 10
        return t, float(min(max(p[1], B_BOUNDS[0]), B_BOUNDS[1])), float(a)

    def loss(p: np.ndarray) -> float:
        return log_loss(votes.confidences(*clip(p)), votes.correct)

    best = _fit_tb(loss, 0.0, (lo, hi))
    if votes.maxima is not None:
        profile = min((_fit_tb(loss, a, (lo, hi)) for a in A_GRID), key=loss)
        simplex = profile + np.array([[0, 0, 0], [0.3, 0, 0], [0, 1.0, 0], [0, 0, max(1.0, 0.2 * profile[2])]])
        res = minimize(loss, profile, method="Nelder-Mead",
                       options={"xatol": 1e-4, "fatol": 1e-7, "initial_simplex": simplex, "maxiter": 1500})
        near = res.x if res.fun <= loss(profile) else profile
        if loss(near) < loss(best) - MIN_GAIN:
            best = near
    return clip(best)


def _fit_tb(loss: Any, a: float, log_t_bounds: tuple[float, float]) -> np.ndarray:
    """(log T, b, a) minimising ``loss`` at this ``a``: from each b of B_STARTS, the best temperature
    at that b (a bounded 1-D search), then Nelder-Mead over (log T, b); the best end point, clipped
    to the bounds (outside them the loss is flat, and a search that wandered there stops early)."""
    from scipy.optimize import minimize, minimize_scalar

    lo, hi = log_t_bounds

    def at(p: np.ndarray) -> np.ndarray:
        return np.r_[min(max(p[0], lo), hi), min(max(p[1], B_BOUNDS[0]), B_BOUNDS[1]), a]

    ends = []
    for b0 in B_STARTS:
        t0 = minimize_scalar(lambda lt: loss(np.array([lt, b0, a])), bounds=log_t_bounds, method="bounded",
                             options={"xatol": 1e-4}).x
        start = np.array([t0, b0])
        res = minimize(lambda p: loss(at(p)), start, method="Nelder-Mead",
                       options={"xatol": 1e-4, "fatol": 1e-7, "initial_simplex": start + [[0, 0], [0.3, 0], [0, 2.0]]})
        ends += [at(res.x), at(start)]
    return min(ends, key=loss)


def threshold_at_max_wrong(conf: np.ndarray, correct: np.ndarray, max_wrong: float) -> float | None:
    """Lowest confidence threshold at which the answers given (conf >= it) that are wrong make up at
    most ``max_wrong`` of all photos; None when even the highest observed confidence gives more."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool)
    if len(conf) == 0:
        return None
    order = np.argsort(-conf, kind="stable")
    c, wrong = conf[order], np.cumsum(~correct[order]) / len(conf)
    # Only cut between different values: a threshold gives every photo with that confidence or none.
    last_of_value = np.r_[c[1:] != c[:-1], True]
    good = np.flatnonzero((wrong <= max_wrong) & last_of_value)  # wrong only grows down the list
    return None if len(good) == 0 else float(c[good[-1]])


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: Σ_bins (n_b / n) |accuracy_b − mean confidence_b| over ``bins`` equal-width bins of [0, 1]."""
    return float(sum(n * abs(acc - mc) for _, _, n, mc, acc in reliability(conf, correct, bins)) / max(len(conf), 1))


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[tuple[float, float, int, float, float]]:
    """Per non-empty bin: (low, high, count, mean confidence, accuracy); the last bin includes 1.0."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    b = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for i in range(bins):
        m = b == i
        if m.any():
            out.append((i / bins, (i + 1) / bins, int(m.sum()), float(conf[m].mean()), float(correct[m].mean())))
    return out


def collect_votes(rec: Any, emb: np.ndarray, true_labels: Sequence[str], *,
                  exclude_own: bool = False) -> dict[str, LevelVotes]:
    """Each level's votes for held-out photos ``emb`` of ``true_labels``, as ``rec`` would vote.

    ``exclude_own=True`` takes each photo's own class out of its neighbours (and out of the
    count of values), the situation of a vehicle whose model the gallery does not know.
    Levels other than "model" only when every label is hierarchical (make / type / year known).
    """
    from vericar.search.taxonomy import Taxonomy

    labels, depth = rec.gallery.labels, rec.k
    tax = Taxonomy.from_labels(list(rec.gallery.classes) + list(true_labels))
    hier = all(tax.is_hierarchical(lab) for lab in true_labels)
    levels = LEVELS if hier else ("model",)
    extra = max(rec._class_counts().values()) if exclude_own else 0  # own photos that may come first
    _, cos, idx = rec.search(np.asarray(emb, dtype=np.float32), depth + extra)
    per_value = {lvl: {} for lvl in levels}  # classes per value, to shrink n_values when excluding
    for c in rec.gallery.classes:
        for lvl in levels:
            v = tax.level_value(c, lvl)
            per_value[lvl][v] = per_value[lvl].get(v, 0) + 1
    out = {lvl: LevelVotes([], [], [], rec.n_values(lvl), np.zeros(len(true_labels), bool), maxima=[])
           for lvl in levels}
    for q, true in enumerate(true_labels):
        keep = [i for i, j in enumerate(idx[q]) if j >= 0 and not (exclude_own and labels[j] == true)][:depth]
        s, ix = cos[q, keep], idx[q, keep]
        k = min(rec.k, int(rec.k_cap(ix[:1])[0])) if len(ix) else rec.k
        s, ix = s[:k], ix[:k]
        for lvl in levels:
            fn = (lambda lab: lab) if lvl == "model" else (lambda lab, lvl=lvl: tax.level_value(lab, lvl))
            v = out[lvl]
            w = level_weights(s, ix, labels, fn)
            winner = knn_vote(s[None, :], ix[None, :], labels, fn)[0][0]
            v.weights.append(w)
            v.maxima.append(level_maxima(s, ix, labels, fn))
            v.winners.append(winner)
            v.ks.append(k)
            v.correct[q] = winner == fn(true)
    if exclude_own:  # the softmax of a photo runs over the values left once its class is gone
        for lvl in levels:
            n = [rec.n_values(lvl) - (per_value[lvl].get(tax.level_value(t, lvl), 0) == 1) for t in true_labels]
            out[lvl].n_values_per_query = n
    return out


def fit_calibration(rec: Any, emb: np.ndarray, true_labels: Sequence[str], *, max_wrong: float = 0.1,
                    info: dict[str, Any] | None = None) -> tuple[Calibration, dict[str, Any]]:
    """Fit each level's softmax (``fit_softmax``) on held-out photos of known vehicles and the
    partial-answer thresholds (make, type) on the same photos with their own class taken out of the gallery:
    the lowest confidence at which at most ``max_wrong`` of them get a wrong answer at that level.

    ``rec`` must not hold these photos in its gallery (a query would find itself). Returns the
    calibration and a report (per level: photos, ECE before and after, the threshold's coverage).
    """
    return fit_votes(*held_out_votes(rec, emb, true_labels), max_wrong=max_wrong, info=info)


def held_out_votes(rec: Any, emb: np.ndarray, true_labels: Sequence[str]) -> tuple[dict[str, LevelVotes],
                                                                                   dict[str, LevelVotes] | None]:
    """What ``fit_votes`` fits on: each level's votes for these photos, and for the partial-answer
    levels the votes with each photo's own class taken out (None when the labels have no make / type)."""
    known = collect_votes(rec, emb, true_labels)
    loo = collect_votes(rec, emb, true_labels, exclude_own=True) if all(lvl in known for lvl in PARTIAL_LEVELS) else None
    return known, loo


def fit_votes(known: dict[str, LevelVotes], loo: dict[str, LevelVotes] | None, *, max_wrong: float = 0.1,
              info: dict[str, Any] | None = None) -> tuple[Calibration, dict[str, Any]]:
    """``fit_calibration`` on votes already collected (``held_out_votes``; several sources may be
    joined with ``LevelVotes.concat`` first)."""
    fits = {lvl: fit_softmax(v) for lvl, v in known.items()}
    temps, biases = {lvl: f[0] for lvl, f in fits.items()}, {lvl: f[1] for lvl, f in fits.items()}
    scales = {lvl: f[2] for lvl, f in fits.items() if f[2]}
    n = len(next(iter(known.values())).winners)
    report: dict[str, Any] = {"n": n, "max_wrong": max_wrong, "levels": {}}
    for lvl, v in known.items():
        report["levels"][lvl] = {
            "temperature": temps[lvl], "bias": biases[lvl], "scale": fits[lvl][2], "accuracy": float(v.correct.mean()),
            "ece_vote_share": expected_calibration_error(v.confidences(None), v.correct),
            "ece_calibrated": expected_calibration_error(v.confidences(*fits[lvl]), v.correct)}
    thresholds: dict[str, float] = {}
    for lvl in PARTIAL_LEVELS if loo is not None else ():
        v = loo[lvl]
        conf = v.confidences(*fits[lvl])
        t = threshold_at_max_wrong(conf, v.correct, max_wrong)
        given = conf >= t if t is not None else np.zeros(len(conf), bool)
        report["levels"][lvl].update(
            partial_threshold=t, partial_accuracy=float(v.correct.mean()),
            partial_given_right=float((given & v.correct).mean()),
            partial_given_wrong=float((given & ~v.correct).mean()))
        if t is not None:
            thresholds[lvl] = t
    return Calibration(temps, thresholds, {**(info or {}), "fit": report}, biases, scales), report
