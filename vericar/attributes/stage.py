"""The per-vehicle attribute stage: colour and viewpoint of each vehicle the recognizer embeds.

A collaborator of the Recognizer, like the detector: ``Recognizer(..., attributes=Attributes(...))``,
loaded from the model folder (``attributes-colour.*``, ``attributes-viewpoint.*``: safetensors + JSON;
a folder without them, as an older one, gives ``None`` attributes) and switched in the config tree
(``AttributesCfg``; ``vericar.load(..., attributes=False)`` turns the stage off).

No second network pass: ``FeatureTap`` (vericar/attributes/tap.py) catches what the heads read from
the pass that embeds the crops (pooled backbone features, the last map's column means, the early
stages' body-pooled maps), per thread, so requests served side by side never see each other's.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dataclasses import replace

from vericar.attributes.colour import body_colour, scene_light
from vericar.attributes.head import LinearHead
from vericar.attributes.plates import PlateReader
from vericar.attributes.tap import PARTS, FeatureTap, available_parts, tap_of
from vericar.core.config import AttributesCfg
from vericar.core.errors import ArtifactError

COLOUR_FILE, VIEWPOINT_FILE = "attributes-colour", "attributes-viewpoint"
# What a head reads (its info["features"]): parts joined by "+", in the order the head was fitted with.
# The first three come from the embedding pass (vericar/attributes/tap.py), the last two from the crop's
# pixels (colour.py).
FEATURE_PARTS = (*PARTS, "body", "scene")


@dataclass
class Described:
    """One vehicle's attributes (``None``: unsure, or the stage is off / has no head)."""

    colour: str | None = None
    colour_confidence: float | None = None
    viewpoint: str | None = None
    viewpoint_confidence: float | None = None
    plate: dict[str, Any] | None = None  # {"text", "box" (the crop's pixels here), "confidence"}


class Attributes:
    """Colour and viewpoint heads over the recogniser's features and the crops' pixels."""

    def __init__(self, colour: LinearHead | None = None, viewpoint: LinearHead | None = None,
                 cfg: AttributesCfg | None = None, plates: PlateReader | None = None) -> None:
        self.cfg = cfg or AttributesCfg()
        # The plate reader (vericar/attributes/plates.py) when cfg.plates is "read".
        self.plates = (plates or PlateReader()) if self.cfg.plates == "read" else None
        self.heads = {"colour": colour, "viewpoint": viewpoint}  # kept (and saved) when switched off
        for head in self.heads.values():
            parts = str(head.info.get("features", "backbone")).split("+") if head is not None else []
            if any(p not in FEATURE_PARTS for p in parts) or len(set(parts)) != len(parts):
                raise ArtifactError(f"an attribute head reads {head.info.get('features')!r} features; this vericar "
                                    f"knows {list(FEATURE_PARTS)}, joined by '+'. Install the vericar that "
                                    "wrote the model.")

    @property
    def colour(self) -> LinearHead | None:
        """The colour head when it is there and switched on."""
        return self.heads["colour"] if self.cfg.colour else None

    @property
    def viewpoint(self) -> LinearHead | None:
        """The viewpoint head when it is there and switched on."""
        return self.heads["viewpoint"] if self.cfg.viewpoint else None

    @property
    def active(self) -> bool:
        """Whether any head runs (else every vehicle's attributes are None, at no cost)."""
        return self.colour is not None or self.viewpoint is not None or self.plates is not None

    def with_plates(self, mode: str, reader: PlateReader | None = None) -> "Attributes":
        """The same heads with plate reading set to ``mode`` ("read" | "off"), by ``reader`` if given."""
        return Attributes(self.heads["colour"], self.heads["viewpoint"], replace(self.cfg, plates=mode), reader)

    @classmethod
    def load(cls, directory: str | os.PathLike | None, cfg: AttributesCfg | None = None) -> "Attributes":
        """The heads saved in a model folder (missing files: that head is None)."""
        if directory is None:
            return cls(None, None, cfg)
        return cls(LinearHead.load(directory, COLOUR_FILE), LinearHead.load(directory, VIEWPOINT_FILE), cfg)

    def save(self, directory: str | os.PathLike) -> None:
        """Write the heads there are (switched on or not) into a model folder."""
        for name, file in (("colour", COLOUR_FILE), ("viewpoint", VIEWPOINT_FILE)):
            if self.heads[name] is not None:
                self.heads[name].save(directory, file)

    def reads(self) -> set[str]:
        """The feature parts the switched-on heads read."""
        return {p for h in (self.colour, self.viewpoint) if h is not None
                for p in h.info.get("features", "backbone").split("+")}

    def tap(self, model: Any) -> FeatureTap:
        """The tap on ``model`` (vericar.attributes.tap.tap_of: one per model, shared). Warns when a head
        reads a part this network cannot give: that head answers None until it is refitted."""
        missing = self.reads() - available_parts(model) - {"body", "scene"}
        if missing:
            spec = getattr(model, "spec", "this model")
            warnings.warn(f"an attribute head reads {sorted(missing)} features, which {spec} "
                          "does not have; it answers None. Refit the heads for this model "
                          "(benchmarks/attributes_fit.py).", RuntimeWarning, stacklevel=2)
        return tap_of(model)

    def run(self, model: Any, embed: Any, crops: Sequence[Any]) -> tuple[np.ndarray, list[Described]]:
        """``embed(crops)`` (the recognizer's embedding pass through ``model``) and each crop's
        attributes from the features that same pass computed."""
        if not self.active:
            return embed(crops), [Described() for _ in crops]
        with self.tap(model).capture(self.reads() & set(PARTS)) as rows:
            emb = embed(crops)
        return emb, self.describe(crops, {p: rows.part(p, len(crops)) for p in PARTS})

    def describe(self, crops: Sequence[Any], caught: dict[str, np.ndarray | None]) -> list[Described]:
        """Each crop's attributes from what the tap caught in its embedding pass (``caught``: part name ->
        ``(N, width)`` or None, vericar.attributes.tap.Captured.part; a head that needs a missing part
        answers None) and from its pixels (PIL)."""
        out = [Described() for _ in crops]
        if not crops or not self.active:
            return out
        parts = dict(caught)
        pixels = {"body": body_colour, "scene": scene_light}
        for head, name in ((self.colour, "colour"), (self.viewpoint, "viewpoint")):
            if head is None:
                continue
            needs = head.info.get("features", "backbone").split("+")
            for k in needs:
                if k in pixels and parts.get(k) is None:
                    parts[k] = np.stack([pixels[k](c) for c in crops])
            if any(parts.get(k) is None for k in needs):
                continue
            x = np.concatenate([parts[k] for k in needs], axis=1)
            for d, (value, conf) in zip(out, head.answer(x)):
                setattr(d, name, value)
                setattr(d, f"{name}_confidence", round(conf, 4))
        for d, crop in zip(out, crops if self.plates is not None else []):
            found = self.plates.read(crop)
            d.plate = found.to_dict() if found is not None else None
        return out
