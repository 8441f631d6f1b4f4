"""Same vehicle or not: the evidence two photos give, and its calibrated probability.

Two photos of one model lie close in the embedding (their ``cosine``), and their neighbours in the
gallery vote for the same values: ``agree_<level>`` is the chance that one neighbour drawn from
each photo's vote (weights max(cos, 0), as ``voting.knn_vote``) has the same model / make / type,
i.e. Σ_v p_a(v) p_b(v). Models nest in makes, so ``agree_model`` ≤ ``agree_make``, and
``agree_model_in_make`` = agree_model / agree_make is the chance that two such neighbours share the
model given that they share the make: "same model" is "same make" and "same model within it".
``nearness`` (the smaller of the two photos' nearest-neighbour cosines) says how much those votes
are worth: far from every known vehicle (a model the gallery lacks), two photos' votes agree or
not by chance; ``agree_<level>_near`` (agreement × nearness) lets the weight of the agreement grow
with it. A logistic model per level (model, make, type) turns these features into the probability
that both photos share that level (``MONOTONE``: the likeness features, whose weights a fit may
keep ≥ 0). ``same_*`` is None when it falls in the level's ``band`` (weak
evidence either way). There are two sets of rules: ``levels`` for two vehicles the gallery knows,
``open_levels`` for a pair in which either is flagged unknown (KNN+): there the neighbours' votes
say less (two photos of a model the gallery lacks and two of two such models both vote for
look-alikes). A rule may be ``capped_by`` coarser levels: one model is one make, so a capped model
rule never gives P(same model) above P(same make) (``PairCalibration.probabilities``; optional,
``train/calibrate_pairs.py --cap``). Or it may be ``given`` them: fitted only on pairs of one make, it
is P(same model | same make), and P(same model) = P(same model | same make) x P(same make)
(``--factor``): the make rule alone says whether two makes differ, so the model rule need not weigh
make agreement against them. Fitted on validation pairs only (train/calibrate_pairs.py),
each set on the pairs it answers, stored under "compare" in an artifact's config.json.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vericar.core.errors import ArtifactError

PAIR_LEVELS = ("model", "make", "type")  # levels a comparison answers, finest first
FEATURES = ("cosine", "agree_model", "agree_make", "agree_type", "nearness",
            "agree_model_near", "agree_make_near", "agree_type_near", "agree_model_in_make")
# Evidence that the two photos are alike, whose weights `train/calibrate_pairs.py --monotone` keeps >= 0:
# one model is one make and one type, so agreeing more at any level should never make "same" less
# likely. Fitted freely, the collinear agreements take negative weights (the model rule weighs make
# agreement about -3: among pairs of one make, a strong make agreement goes with two models), which
# ranks some pairs of two makes above pairs of one model. Kept >= 0, easy pairs gain but pairs of
# one make and of models the gallery lacks lose (docs/verification.md), so it is not the default.
MONOTONE = ("cosine", "agree_model", "agree_make", "agree_type", "agree_model_near", "agree_make_near",
            "agree_type_near", "agree_model_in_make")
# A fit with a rule ``given`` a coarser level is written as the second method, so that a vericar from before
# conditions refuses it ("install the version that wrote it") instead of reading the conditional rule as P(same).
METHODS = ("pair-logistic", "pair-logistic-given")
REFIT = "Fit one with `python train/calibrate_pairs.py --artifact DIR`"


def vote_shares(neighbours: Sequence[tuple[str, float]], level_of: Callable[[str], Any]) -> dict[Any, float]:
    """One photo's vote at a level as shares summing to 1: value -> Σ max(cos, 0) / total (every
    neighbour equally when none is similar; {} without neighbours)."""
    w: dict[Any, float] = {}
    for label, s in neighbours:
        v = level_of(label)
        w[v] = w.get(v, 0.0) + (max(float(s), 0.0) if math.isfinite(s) else 0.0)
    total = sum(w.values())
    if total <= 0.0:
        n = len(neighbours)
        return {v: sum(1 for lab, _ in neighbours if level_of(lab) == v) / n for v in w} if n else {}
    return {v: x / total for v, x in w.items()}


def pair_features(cosine: float, a: Sequence[tuple[str, float]], b: Sequence[tuple[str, float]],
                  level_of: Callable[[str, str], Any]) -> dict[str, float]:
    """Every candidate feature (``FEATURES``) of one pair: ``a`` / ``b`` are each photo's voting
    neighbours as (label, cosine), best ranked first; ``level_of(label, level)`` its value there."""
    out = {"cosine": float(cosine)}
    for lvl in PAIR_LEVELS:
        pa = vote_shares(a, lambda lab, lvl=lvl: level_of(lab, lvl))
        pb = vote_shares(b, lambda lab, lvl=lvl: level_of(lab, lvl))
        out[f"agree_{lvl}"] = float(sum(p * pb.get(v, 0.0) for v, p in pa.items()))
    near = [max((s for _, s in n), default=0.0) for n in (a, b)]
    out["nearness"] = float(min(near))
    for lvl in PAIR_LEVELS:  # agreement counts for more when both photos are near known vehicles
        out[f"agree_{lvl}_near"] = out[f"agree_{lvl}"] * out["nearness"]
    make = out["agree_make"]  # >= agree_model: two neighbours of one model are of one make
    out["agree_model_in_make"] = min(out["agree_model"] / make, 1.0) if make > 1e-12 else 0.0
    return out


@dataclass(frozen=True)
class LevelRule:
    """One level's logistic model: P(same) = σ(Σ w_i x_i + bias), and the band of no verdict."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    band: tuple[float, float] = (0.5, 0.5)  # [low, high]: probabilities strictly inside get None
    capped_by: tuple[str, ...] = ()  # coarser levels whose probability this one's may not exceed
    given: tuple[str, ...] = ()  # coarser levels this rule is conditional on: theirs multiplies its own

    def probability(self, feats: dict[str, float]) -> float:
        z = self.bias + sum(w * feats[f] for f, w in zip(self.features, self.weights))
        return float(1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0))))

    def verdict(self, p: float) -> bool | None:
        """True at or above the band, False at or below it, None inside (weak evidence)."""
        lo, hi = self.band
        if p >= hi:
            return True
        return False if p <= lo else None

    def to_dict(self) -> dict[str, Any]:
        d = {"features": list(self.features), "weights": list(self.weights), "bias": self.bias,
             "band": list(self.band)}
        d.update({k: list(v) for k, v in (("capped_by", self.capped_by), ("given", self.given)) if v})
        return d


@dataclass
class PairCalibration:
    """Per level (``PAIR_LEVELS``) its ``LevelRule`` for two known vehicles (``levels``) and for a pair
    with an unknown one (``open_levels``; None: ``levels`` for every pair); ``info``: what it was
    fitted on and its figures."""

    levels: dict[str, LevelRule]
    info: dict[str, Any] = field(default_factory=dict)
    open_levels: dict[str, LevelRule] | None = None

    def rules(self, unknown: bool) -> dict[str, LevelRule]:
        """The rules for a pair in which a vehicle is flagged unknown (``unknown``) or none is."""
        return self.open_levels if unknown and self.open_levels is not None else self.levels

    def probabilities(self, feats: dict[str, float], unknown: bool) -> dict[str, float]:
        """Each level's probability for one pair's features, a rule's conditions and caps applied: P(same
        model) is P(same model | same make) x P(same make) when the model rule is ``given`` the make, and
        at most P(same make) when it is ``capped_by`` it (same model implies same make)."""
        return capped_probabilities(self.rules(unknown), feats)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored under "compare" in an artifact's config.json."""
        rules = [*self.levels.values(), *(self.open_levels or {}).values()]
        method = METHODS[any(r.given for r in rules)]
        d = {"method": method, "levels": {lvl: r.to_dict() for lvl, r in self.levels.items()}, "info": self.info}
        if self.open_levels is not None:
            d["open_levels"] = {lvl: r.to_dict() for lvl, r in self.open_levels.items()}
        return d

    @classmethod
    def from_dict(cls, d: Any) -> PairCalibration | None:
        """Inverse of ``to_dict``; None (an artifact fitted before comparisons existed) -> None."""
        if d is None:
            return None
        if not isinstance(d, dict) or d.get("method") not in METHODS:
            got = d.get("method") if isinstance(d, dict) else type(d).__name__
            raise ArtifactError(f"compare calibration method {got!r} is not one this vericar reads "
                                f"({', '.join(METHODS)}): install the vericar version that wrote it, or re-fit it. "
                                f"{REFIT}.")
        sets = {}
        for key in ("levels", "open_levels"):
            levels = d.get(key)
            if levels is None and key == "open_levels":
                continue
            if not isinstance(levels, dict) or set(levels) != set(PAIR_LEVELS):
                raise ArtifactError(f"compare calibration {key} must have the levels {list(PAIR_LEVELS)}, got "
                                    f"{sorted(levels) if isinstance(levels, dict) else levels!r}. {REFIT}.")
            sets[key] = {lvl: _rule(lvl, levels[lvl]) for lvl in PAIR_LEVELS}
        given = any(r.given for rules in sets.values() for r in rules.values())
        if given != (d["method"] == METHODS[1]):
            raise ArtifactError(f"compare calibration method {d['method']!r} with {'a' if given else 'no'} rule given a "
                                f"coarser level: method {METHODS[1]!r} goes with such rules only. {REFIT}.")
        return cls(sets["levels"], dict(d.get("info") or {}), sets.get("open_levels"))


def capped_probabilities(rules: dict[str, LevelRule], feats: dict[str, float]) -> dict[str, float]:
    """``rules``' probability per level for one pair: each multiplied by its ``given`` levels' and capped
    by its ``capped_by`` levels' (already final themselves: the coarsest level first, so a chain of
    caps or conditions holds all the way down)."""
    out: dict[str, float] = {}
    for lvl in sorted(rules, key=lambda v: -PAIR_LEVELS.index(v)):
        r = rules[lvl]
        out[lvl] = min([r.probability(feats) * math.prod(out[g] for g in r.given)] + [out[c] for c in r.capped_by])
    return {lvl: out[lvl] for lvl in rules}


def _rule(level: str, r: Any) -> LevelRule:
    """One level's rule from JSON, checked: known features, one finite weight each, a band in [0, 1]."""
    try:
        feats = tuple(str(f) for f in r["features"])
        weights = tuple(float(w) for w in r["weights"])
        bias, band = float(r["bias"]), tuple(float(x) for x in r["band"])
        caps, given = r.get("capped_by", []), r.get("given", [])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"compare calibration level {level!r} is malformed ({type(e).__name__}: {e}); "
                            f"it needs features, weights, bias and band. {REFIT}.") from e
    bad = [f for f in feats if f not in FEATURES]
    numbers = (*weights, bias, *band)
    if bad or len(weights) != len(feats) or len(band) != 2 or not all(math.isfinite(x) for x in numbers) \
            or not 0.0 <= band[0] <= band[1] <= 1.0:
        raise ArtifactError(f"compare calibration level {level!r}: unknown features {bad} (known: {list(FEATURES)}), "
                            f"{len(weights)} weights for {len(feats)} features, or band {list(band)} not "
                            f"0 <= low <= high <= 1. {REFIT}.")
    coarser = PAIR_LEVELS[PAIR_LEVELS.index(level) + 1:] if level in PAIR_LEVELS else ()
    for key, v in (("capped_by", caps), ("given", given)):
        if not isinstance(v, list) or any(c not in coarser for c in v) or len(set(v)) != len(v):
            raise ArtifactError(f"compare calibration level {level!r}: {key} must be a list of distinct coarser "
                                f"levels (of {list(coarser)}), got {v!r}. {REFIT}.")
    return LevelRule(feats, weights, bias, (band[0], band[1]), tuple(caps), tuple(given))


def logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, nonneg: Sequence[bool], c: float = 10.0
             ) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression (sklearn's objective: Σ w_i log-loss_i + ||coef||² / 2c, the bias
    free) whose coefficients flagged in ``nonneg`` are kept ≥ 0; returns (coef, bias)."""
    import warnings

    from scipy.optimize import minimize
    from scipy.special import expit

    x, y, w = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(weight, np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[1:] + theta[0]
        g = w * (expit(z) - y)
        nll = float(w @ (np.logaddexp(0.0, z) - y * z))
        return nll + 0.5 * float(theta[1:] @ theta[1:]) / c, np.concatenate([[g.sum()], x.T @ g + theta[1:] / c])

    bounds = [(None, None)] + [(0.0, None) if nn else (None, None) for nn in nonneg]
    r = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"maxiter": 2000, "ftol": 1e-10, "gtol": 1e-6})
    if not r.success:  # often a line search that cannot improve at the optimum: worth a look, not a stop
        warnings.warn(f"the pair rule's logistic fit did not report convergence ({r.message}); check its weights",
                      RuntimeWarning, stacklevel=2)
    return r.x[1:], float(r.x[0])


def fit_rule(x: np.ndarray, y: np.ndarray, features: Sequence[str], weight: np.ndarray | None = None,
             max_abstain: float = 0.05, coin: float = 2 / 3, monotone: Sequence[str] = ()) -> LevelRule:
    """A level's logistic model fitted on pair features ``x`` (n, len(features)) and outcomes ``y``
    (``weight``: per pair, e.g. to balance same and different pairs; the features in ``monotone``
    get weights ≥ 0), and its band: the widest [0.5 - d, 0.5 + d] whose pairs, answered at 0.5, are
    right less than ``coin`` of the time, while at most ``max_abstain`` of the (weighted) pairs fall
    inside it."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError(f"need both same and different pairs to fit on, got {int(y.sum())} same of {len(y)}.")
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    coef, bias = logistic(x, y, w, [f in monotone for f in features])
    from scipy.special import expit

    p = expit(np.asarray(x, np.float64) @ coef + bias)
    band = fit_band(p, y, w, max_abstain, coin)
    return LevelRule(tuple(features), tuple(float(v) for v in coef), bias, band)


def fit_band(p: np.ndarray, y: np.ndarray, weight: np.ndarray, max_abstain: float = 0.05, coin: float = 2 / 3
             ) -> tuple[float, float]:
    """The widest band [0.5 - d, 0.5 + d] whose pairs (probabilities ``p``, outcomes ``y``), answered at
    0.5, are right less than ``coin`` of the time, while at most ``max_abstain`` of the ``weight`` falls
    inside it."""
    p, y, w = np.asarray(p, np.float64), np.asarray(y, bool), np.asarray(weight, np.float64)
    right = (p >= 0.5) == y
    best = 0.0
    for d in np.arange(0.01, 0.5, 0.01):
        inside = np.abs(p - 0.5) < d
        share = w[inside].sum() / w.sum()
        if share > max_abstain:
            break
        if inside.any() and np.average(right[inside], weights=w[inside]) < coin:
            best = float(d)
    return (0.5 - best, 0.5 + best)
