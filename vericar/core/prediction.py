"""What a recognizer answers: a Prediction per vehicle, its Neighbours, an Explanation.

Plain data, no model: the recognizer, the scene code (detections → predictions) and the app's
presentation all build or read these without importing each other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vericar.search.taxonomy import LEVELS

PREDICTION_LEVELS = LEVELS  # levels reported in a Prediction, finest first; "model" is the full class label


@dataclass
class Neighbour:
    """One gallery entry close to the query; ``score`` is the plain cosine similarity (neighbours
    come in the recognizer's ranking order, which the density correction may change)."""

    label: str
    score: float
    ref: str | None = None
    index: int = -1


@dataclass
class Prediction:
    """What the recognizer says about one photo."""

    label: str | None
    make: str | None
    model: str | None
    type: str | None
    year: str | None
    confidence: dict[str, float]
    unknown: bool
    ood_score: float
    neighbours: list[Neighbour] = field(default_factory=list)
    # Levels whose answer is withheld ("model", "year", and "make"/"type" unless confident enough):
    # empty for a known vehicle; the values above stay the nearest guesses (vericar/search/calibration.py).
    unknown_levels: list[str] = field(default_factory=list)
    # Where the vehicle is: [x1, y1, x2, y2] in the photo's pixels (EXIF orientation applied);
    # None when no detector ran. vehicle_found=False: the detector found no vehicle in the photo.
    box: list[int] | None = None
    vehicle_found: bool = True
    # What the vehicle looks like (vericar/attributes): a VCoR colour name and a viewpoint (front,
    # front-side, side, rear-side, rear), each None when unsure or not measured, with the head's
    # probability (None when no head ran). plate: {"text", "box", "confidence"} or None.
    colour: str | None = None
    colour_confidence: float | None = None
    viewpoint: str | None = None
    viewpoint_confidence: float | None = None
    plate: dict[str, Any] | None = None

    def is_known(self, level: str) -> bool:
        """Whether ``level``'s answer is given (an unknown one built without ``unknown_levels``: none)."""
        return not self.unknown or (bool(self.unknown_levels) and level not in self.unknown_levels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the app's ``/identify`` answer)."""
        d = asdict(self)
        d["neighbours"] = [{"label": n.label, "score": n.score, "ref": n.ref} for n in self.neighbours]
        return d


@dataclass
class Explanation:
    """A Grad-CAM++ heatmap (H×W in [0, 1]) and the photo with it overlaid; ``photo`` is what lies
    under the heat (the main vehicle's crop as the model saw it), so a caller can show it beside
    the overlay without finding the vehicle again."""

    heatmap: np.ndarray
    overlay: Any  # PIL.Image.Image
    label: str | None
    photo: Any = None  # PIL.Image.Image, the overlay's size
