"""Fitting the open-world part of a calibration on never-trained models (``Calibration.unseen``).

A vehicle whose model the network never saw sits further from its own make than a trained model
with its own class taken out of the gallery does, and nearer to other makes. So what is shown for
such vehicles is fitted on photos of classes the network was never trained on (an open-world
training's held-out classes, whose training photos are neither trained on nor dev), queried against
the gallery of the trained ones:

- the make / type softmax for an unknown vehicle (``fit_softmax`` on their votes), so "make 70%"
  is right about 70% of the time on such vehicles too;
- ``make_floor``: a photo whose make confidence is under it counts as unknown even when its KNN+
  score is low. Most never-trained photos are not flagged by KNN+ at all and get a full answer,
  with a make that is often wrong; the floor catches some of them. The KNN+ threshold is refitted so
  that known photos are still flagged at the nominal rate (floor and score together), and of the
  floors that keep that rate the one with the fewest wrong makes in full answers is chosen;
- the partial-answer thresholds: the lowest confidence at which at most ``max_wrong`` of the
  never-trained photos that are flagged unknown get a wrong make (type) named.

``carry_over`` puts such a part, fitted on one training, on another of the same recipe trained on
every class (the shipped default, which has no never-trained classes of its own): the softmax,
floor and thresholds are probabilities and carry over; its KNN+ threshold is refitted on its own
validation photos with the floor.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from vericar.core.errors import VericarError
from vericar.search.calibration import PARTIAL_LEVELS, Calibration
from vericar.search.calibration_fit import (collect_votes, expected_calibration_error, fit_softmax,
                                            threshold_at_max_wrong)

FLOOR_STEPS = 11  # floors tried: flagging 0, 10%, ..., 100% of the known photos' false-unknown budget


def ood_threshold(scores: np.ndarray, floored: np.ndarray, false_unknown: float) -> float:
    """KNN+ threshold (unknown: score above it) at which ``false_unknown`` of these known photos are flagged,
    by it or by the floor (``floored``)."""
    n_more = int(np.floor(false_unknown * len(scores))) - int(floored.sum())
    rest = np.sort(np.asarray(scores, dtype=np.float64)[~floored])[::-1]
    if not len(rest):
        return float("inf")
    if n_more <= 0:  # the floor alone uses the budget: the score flags none of the others
        return float(rest[0])
    return float(rest[n_more]) if n_more < len(rest) else float("-inf")


def _answers(rec: Any, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Each photo's KNN+ score, make confidence (known calibration, no floor) and prediction, as ``rec`` gives them."""
    preds = rec.predict_embeddings(emb)
    return (np.array([p.ood_score for p in preds]), np.array([p.confidence.get("make", 0.0) for p in preds]), preds)


def _outcome(known_u: np.ndarray, conf_u: np.ndarray, correct: np.ndarray, max_wrong: float) -> dict[str, Any]:
    """Given right / wrong / withheld on the never-trained photos: full answers where ``known_u``, partial ones
    above the threshold at which at most ``max_wrong`` of the flagged photos get a wrong value."""
    unk = ~known_u
    t = threshold_at_max_wrong(conf_u[unk], correct[unk], max_wrong) if unk.any() else None
    given = known_u | (unk & (conf_u >= t)) if t is not None else known_u.copy()
    return {"threshold": t, "given_right": float((given & correct).mean()), "given_wrong": float((given & ~correct).mean()),
            "withheld": float((~given).mean()), "full_answer_wrong": float((known_u & ~correct).mean()),
            "flagged_given_wrong": float((given & ~correct)[unk].mean()) if unk.any() else None}


def fit_unseen(rec: Any, calibration: Calibration, known_emb: np.ndarray, unseen_emb: np.ndarray,
               unseen_labels: Sequence[str], *, max_wrong: float = 0.1,
               false_unknown: float = 0.05) -> tuple[Calibration, float, dict[str, Any]]:
    """``calibration`` with its open-world part fitted on never-trained photos ``unseen_emb``, the KNN+
    threshold to use with it, and a report. ``rec``'s gallery must hold none of their classes; ``known_emb``
    are held-out photos of trained classes (the validation views the known calibration was fitted on)."""
    trained = set(rec.gallery.classes)
    seen = sorted(set(unseen_labels) & trained)
    if seen:
        raise VericarError(f"the unseen fit takes photos of never-trained models only, but {seen[:3]} are in the "
                           "gallery; use an open-world training's held-out classes (--holdout-classes).")
    rec.calibration = replace(calibration, unseen={})
    s_k, c_k, _ = _answers(rec, known_emb)
    s_u, c_u, p_u = _answers(rec, unseen_emb)
    votes = collect_votes(rec, unseen_emb, list(unseen_labels))
    levels = [lvl for lvl in PARTIAL_LEVELS if lvl in votes]
    fits = {lvl: fit_softmax(votes[lvl]) for lvl in levels}
    conf = {lvl: votes[lvl].confidences(*fits[lvl]) for lvl in levels}
    make_ok = np.array([p.make == rec.taxonomy.level_value(t, "make") for p, t in zip(p_u, unseen_labels)])
    best = None
    for q in np.linspace(0.0, false_unknown, FLOOR_STEPS):
        floor = float(np.quantile(c_k, q)) if q else 0.0
        t_o = ood_threshold(s_k, c_k < floor, false_unknown)
        known_u = (s_u <= t_o) & (c_u >= floor)
        key = (-int((known_u & ~make_ok).sum()), int((known_u & make_ok).sum()), -q)  # fewest wrong makes
        if best is None or key > best[0]:
            best = (key, floor, t_o, known_u)
    _, floor, t_o, known_u = best
    outcome = {lvl: _outcome(known_u, conf[lvl], votes[lvl].correct, max_wrong) for lvl in levels}
    unseen = {"temperatures": {lvl: fits[lvl][0] for lvl in levels}, "biases": {lvl: fits[lvl][1] for lvl in levels},
              "scales": {lvl: fits[lvl][2] for lvl in levels if fits[lvl][2]}, "make_floor": floor or None,
              "info": {"fitted_on": f"{len(unseen_labels)} photos of {len(set(unseen_labels))} never-trained models",
                       "max_wrong": max_wrong, "false_unknown": false_unknown}}
    thresholds = {lvl: o["threshold"] for lvl, o in outcome.items() if o["threshold"] is not None}
    unk = ~known_u
    report = {"n_unseen": len(unseen_labels), "n_known": len(known_emb), "make_floor": floor, "ood_threshold": t_o,
              "known_flagged": float(((s_k > t_o) | (c_k < floor)).mean()), "unseen_flagged": float(unk.mean()),
              "levels": {lvl: {**o, "ece_unseen": expected_calibration_error(conf[lvl][unk], votes[lvl].correct[unk])
                               if unk.any() else None} for lvl, o in outcome.items()}}
    unseen["info"]["fit"] = report
    return replace(calibration, thresholds={**{k: v for k, v in calibration.thresholds.items() if k not in levels},
                                            **thresholds}, unseen=unseen), t_o, report


def carry_over(rec: Any, calibration: Calibration, source: Calibration, known_emb: np.ndarray, *,
               false_unknown: float = 0.05, source_name: str = "another training") -> tuple[Calibration, float]:
    """``calibration`` (fitted on this model's known photos) with ``source``'s open-world part and thresholds,
    and this model's KNN+ threshold refitted with that floor on ``known_emb`` (its held-out known photos)."""
    if not source.unseen:
        raise VericarError(f"{source_name} has no part fitted on never-trained models; fit one first "
                           "(python train/calibrate.py --artifact OPEN_WORLD_RUN --unseen).")
    rec.calibration = replace(calibration, unseen={})
    s_k, c_k, _ = _answers(rec, known_emb)
    floor = source.unseen.get("make_floor") or 0.0
    t_o = ood_threshold(s_k, c_k < floor, false_unknown)
    info = {**source.unseen.get("info", {}), "carried_over_from": source_name}
    thresholds = {**calibration.thresholds, **{k: v for k, v in source.thresholds.items() if k in PARTIAL_LEVELS}}
    return replace(calibration, thresholds=thresholds, unseen={**source.unseen, "info": info}), t_o
