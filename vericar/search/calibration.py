"""Confidences that are probabilities, and partial answers when the vehicle's model is unknown.

A level's k-NN vote (model, make, type, year) gives every value a weight: the summed similarity
of the neighbours that have it (``voting.knn_vote``). ``Calibration`` turns those weights into
the probability that the vote's winner is right with a temperature-scaled softmax over every
value the gallery knows at that level: value ``v`` gets the logit ``w_v / (k * T)`` (``k`` the
neighbours that voted, so an enrolled vehicle with 3 photos is not penalised for having few),
values no neighbour has get the logit ``b``. The softmax is monotonic in the weights, so the
winner is the vote's winner and no answer changes; only the number beside it does. ``T`` and
``b`` are fitted per level on held-out photos by minimising the log loss of "the winner is
right" (``fit_softmax``). ``b`` is there because with 196 models the mass of the many values
nobody voted for dominates: a temperature alone left the model level's ECE at 5.1% on dev,
with ``b`` 2.7% (README).

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


def level_weights(scores: np.ndarray, idx: np.ndarray, labels: Sequence[str],
                  level_of: Callable[[str], Any]) -> dict[Any, float]:
    """Per-value vote weights of one query (the weights ``knn_vote`` sums): value -> Σ max(sim, 0)."""
    w: dict[Any, float] = {}
    for s, j in zip(np.ravel(scores), np.ravel(idx)):
        if j >= 0 and np.isfinite(s):
            v = level_of(labels[int(j)])
            w[v] = w.get(v, 0.0) + max(float(s), 0.0)
    return w


def softmax_confidence(weights: dict[Any, float], winner: Any, k: int, n_values: int, temperature: float,
                       bias: float = 0.0) -> float:
    """Softmax probability of ``winner`` over ``n_values`` values, logits ``w / (k T)``; values
    without a vote (``n_values`` minus those in ``weights``) get the logit ``bias``."""
    if winner is None or winner not in weights:
        return 0.0
    z = {v: w / (max(int(k), 1) * float(temperature)) for v, w in weights.items()}
    n_absent = max(int(n_values) - len(z), 0)
    m = max(max(z.values()), float(bias))  # subtract the largest logit: no overflow at small T
    denom = sum(math.exp(x - m) for x in z.values()) + n_absent * math.exp(bias - m)
    return math.exp(z[winner] - m) / denom


@dataclass
class Calibration:
    """Per-level temperatures and partial-answer thresholds (empty: uncalibrated, the old behaviour).

    ``temperatures[level]``: the softmax temperature of that level (missing: plain vote share).
    ``biases[level]``: the logit of the values no neighbour voted for (missing: 0).
    ``thresholds[level]``: for ``PARTIAL_LEVELS``, the confidence above which that level is still
    named when the model-level answer is unknown (missing: never named then).
    ``info``: how and on what it was fitted (recipe, photo counts, fitted figures).
    """

    temperatures: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    biases: dict[str, float] = field(default_factory=dict)

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
        return winner, softmax_confidence(level_weights(scores, idx, labels, level_of), winner, k, n_values, t,
                                          self.biases.get(level, 0.0))

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
        return {"method": "knn-softmax", "temperatures": dict(self.temperatures), "biases": dict(self.biases),
                "thresholds": dict(self.thresholds), "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibration:
        """Inverse of ``to_dict``; None (an artifact written before calibration existed) -> uncalibrated."""
        if d is None:
            return cls()
        if not isinstance(d, dict) or d.get("method") != "knn-softmax":
            raise ArtifactError(f"not a vericar calibration: {d!r}; expected {{'method': 'knn-softmax', ...}} as "
                                "Calibration.to_dict() writes. Re-calibrate with python -m train.calibrate.")
        try:
            temps = {str(k): float(v) for k, v in (d.get("temperatures") or {}).items()}
            thr = {str(k): float(v) for k, v in (d.get("thresholds") or {}).items()}
            biases = {str(k): float(v) for k, v in (d.get("biases") or {}).items()}
        except (TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"calibration values must be numbers ({e}); "
                                "re-calibrate with python -m train.calibrate.") from e
        bad = [k for k in list(temps) + list(thr) + list(biases) if k not in LEVELS]
        finite = all(math.isfinite(x) for x in list(temps.values()) + list(biases.values()))
        if bad or not finite or any(t <= 0 for t in temps.values()):
            raise ArtifactError(f"calibration has unknown levels {bad}, or temperatures {temps} / biases {biases} "
                                "that are not finite (temperatures > 0); "
                                f"levels are {LEVELS}. Re-calibrate with python -m train.calibrate.")
        return cls(temps, thr, dict(d.get("info") or {}), biases)


# ------------------------------------------------------------------------------- fitting
@dataclass
class LevelVotes:
    """What fitting needs of one level's votes over held-out photos."""

    weights: list[dict[Any, float]]
    winners: list[Any]
    ks: list[int]
    n_values: int
    correct: np.ndarray  # bool: winner == true value
    n_values_per_query: list[int] | None = None  # per photo when it differs (own class out, joined sources)

    @classmethod
    def concat(cls, parts: Sequence[LevelVotes]) -> LevelVotes:
        """One level's votes from several sources (e.g. the validation slices of several trainings
        of one recipe) as one set of photos, each keeping its own count of values."""
        if not parts:
            raise ValueError("no votes to concatenate; give at least one LevelVotes.")
        ns = [n for p in parts for n in (p.n_values_per_query or [p.n_values] * len(p.winners))]
        return cls([w for p in parts for w in p.weights], [v for p in parts for v in p.winners],
                   [k for p in parts for k in p.ks], parts[0].n_values,
                   np.concatenate([np.asarray(p.correct, bool) for p in parts]), ns)

    def confidences(self, temperature: float | None, bias: float = 0.0) -> np.ndarray:
        if temperature is None:  # the plain vote share
            return np.array([w.get(v, 0.0) / (sum(w.values()) or 1.0) for w, v in zip(self.weights, self.winners)])
        ns = self.n_values_per_query or [self.n_values] * len(self.winners)
        return np.array([softmax_confidence(w, v, k, n, temperature, bias)
                         for w, v, k, n in zip(self.weights, self.winners, self.ks, ns)])


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary log loss of probabilities ``p`` for outcomes ``y``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def fit_softmax(votes: LevelVotes) -> tuple[float, float]:
    """The temperature and absent-value logit that minimise the log loss of "the winner is right".

    Nelder-Mead over (log T, b) from the best temperature at b = 0 (a bounded 1-D search), so the
    fit is never worse than temperature scaling alone; both stay inside T_BOUNDS / B_BOUNDS.
    """
    from scipy.optimize import minimize, minimize_scalar

    if len(votes.winners) == 0:
        raise ValueError("no held-out photos to fit a temperature on; give at least one.")
    lo, hi = (math.log(b) for b in T_BOUNDS)
    t0 = minimize_scalar(lambda lt: log_loss(votes.confidences(math.exp(lt)), votes.correct),
                         bounds=(lo, hi), method="bounded", options={"xatol": 1e-4}).x

    def loss(p: np.ndarray) -> float:
        lt, b = min(max(p[0], lo), hi), min(max(p[1], B_BOUNDS[0]), B_BOUNDS[1])
        return log_loss(votes.confidences(math.exp(lt), b), votes.correct)

    res = minimize(loss, np.array([t0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7})
    best = res.x if res.fun <= loss(np.array([t0, 0.0])) else np.array([t0, 0.0])
    return float(math.exp(min(max(best[0], lo), hi))), float(min(max(best[1], B_BOUNDS[0]), B_BOUNDS[1]))


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
    out = {lvl: LevelVotes([], [], [], rec.n_values(lvl), np.zeros(len(true_labels), bool)) for lvl in levels}
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
    """Fit per-level temperatures on held-out photos of known vehicles and the partial-answer
    thresholds (make, type) on the same photos with their own class taken out of the gallery:
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
    n = len(next(iter(known.values())).winners)
    report: dict[str, Any] = {"n": n, "max_wrong": max_wrong, "levels": {}}
    for lvl, v in known.items():
        report["levels"][lvl] = {
            "temperature": temps[lvl], "bias": biases[lvl], "accuracy": float(v.correct.mean()),
            "ece_vote_share": expected_calibration_error(v.confidences(None), v.correct),
            "ece_calibrated": expected_calibration_error(v.confidences(temps[lvl], biases[lvl]), v.correct)}
    thresholds: dict[str, float] = {}
    for lvl in PARTIAL_LEVELS if loo is not None else ():
        v = loo[lvl]
        conf = v.confidences(temps[lvl], biases[lvl])
        t = threshold_at_max_wrong(conf, v.correct, max_wrong)
        given = conf >= t if t is not None else np.zeros(len(conf), bool)
        report["levels"][lvl].update(
            partial_threshold=t, partial_accuracy=float(v.correct.mean()),
            partial_given_right=float((given & v.correct).mean()),
            partial_given_wrong=float((given & ~v.correct).mean()))
        if t is not None:
            thresholds[lvl] = t
    return Calibration(temps, thresholds, {**(info or {}), "fit": report}, biases), report
