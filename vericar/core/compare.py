"""Comparison: do two photos show the same vehicle model (and make, and body type)?

``compare(rec, photo_a, photo_b)`` finds each photo's main vehicle (the detector, as ``predict``),
embeds both in one batch, lets each vote among its gallery neighbours, and turns the pair's
evidence (vericar/search/pair_calibration.py: cosine, agreement of the two votes, nearness) into a
calibrated probability per level. Works for vehicles the gallery does not hold: when either photo
is flagged unknown, rules fitted on the validation pairs with a photo flagged (a hard photo of a
known model, or a model taken out of the gallery) answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vericar.core.errors import VericarError
from vericar.core.prediction import Prediction
from vericar.search.pair_calibration import PAIR_LEVELS, REFIT, PairCalibration, pair_features


@dataclass
class Comparison:
    """Whether two photos show the same model, make and type: ``same_*`` is True / False, or None
    when the probability lies in that level's band of weak evidence; ``probability`` is the
    model level's (make / type: ``probabilities``). ``a`` / ``b``: each photo's main vehicle as
    ``predict`` answers it, with its ``box``."""

    same_model: bool | None
    probability: float
    same_make: bool | None
    same_type: bool | None
    probabilities: dict[str, float]
    threshold: float
    bands: dict[str, tuple[float, float]]
    cosine: float
    a: Prediction
    b: Prediction


def neighbour_votes(pred: Prediction) -> list[tuple[str, float]]:
    """A prediction's voting neighbours as (label, cosine), in ranking order."""
    return [(n.label, n.score) for n in pred.neighbours]


def compare_predictions(rec: Any, cal: PairCalibration, pa: Prediction, pb: Prediction, ea: np.ndarray,
                        eb: np.ndarray) -> Comparison:
    """The comparison of two already-answered vehicles (embeddings ``ea`` / ``eb``, L2-normalised)."""
    cos = float(np.dot(ea, eb))
    feats = pair_features(cos, neighbour_votes(pa), neighbour_votes(pb), rec.taxonomy.level_value)
    unknown = pa.unknown or pb.unknown
    rules, probs = cal.rules(unknown), cal.probabilities(feats, unknown)
    same = {lvl: rules[lvl].verdict(probs[lvl]) for lvl in PAIR_LEVELS}
    if same["model"] is True:  # one model is one make and one type: the coarser answers follow
        same.update(make=True if same["make"] is not False else None, type=True if same["type"] is not False else None)
    return Comparison(same["model"], probs["model"], same["make"], same["type"], probs, 0.5,
                      {lvl: rules[lvl].band for lvl in PAIR_LEVELS}, cos, pa, pb)


def compare(rec: Any, photo_a: Any, photo_b: Any) -> Comparison:
    """Compare the main vehicles of two photos (paths, bytes, PIL or arrays). VericarError when the
    model has no fitted comparison, a photo is missing or unreadable, or one has no vehicle."""
    from vericar.vision.images import open_image
    from vericar.vision.scene import main_vehicles

    cal = rec.comparison
    if cal is None:
        raise VericarError("this model has no calibrated comparison (its config.json has no \"compare\" section: "
                           f"it was saved before comparisons existed), so no probability can be given. {REFIT}.")
    for name, photo in (("A", photo_a), ("B", photo_b)):
        if photo is None:
            raise VericarError(f"photo {name} is missing: compare needs two photos, one of each vehicle.")
    photos = [open_image(photo_a), open_image(photo_b)]
    found = main_vehicles(rec, photos)
    for name, f in zip("AB", found):
        if f is None:
            raise VericarError(f"No vehicle was found in photo {name} (the detector saw none), so there is "
                               "nothing to compare; try a photo where the vehicle is larger or clearer.")
    (pa, ea), (pb, eb) = found
    return compare_predictions(rec, cal, pa, pb, ea, eb)
