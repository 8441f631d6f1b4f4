"""The per-vehicle attribute stage: colour and viewpoint of each vehicle the recognizer embeds.

A collaborator of the Recognizer, like the detector: ``Recognizer(..., attributes=Attributes(...))``,
loaded from the model folder (``attributes-colour.*``, ``attributes-viewpoint.*``: safetensors + JSON;
a folder without them, as an older one, gives ``None`` attributes) and switched in the config tree
(``AttributesCfg``; ``vericar.load(..., attributes=False)`` turns the stage off).

No second network pass: ``FeatureTap`` catches the pooled backbone features on their way into the
model's embedding head while the recognizer embeds the crops, per thread, so requests served side
by side never see each other's features. For a CNN it also catches the last feature map on its way
into the global pool and keeps the means of its left, centre and right thirds (``column_means``):
global pooling throws away where things are, and a viewpoint is mostly that (which end of the car
is at which side, and how wide each face is).
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from dataclasses import replace

from vericar.attributes.colour import body_colour
from vericar.attributes.head import LinearHead
from vericar.attributes.plates import PlateReader
from vericar.core.config import AttributesCfg
from vericar.core.errors import ArtifactError

COLOUR_FILE, VIEWPOINT_FILE = "attributes-colour", "attributes-viewpoint"
_TAP_LOCK = threading.Lock()
# What a head reads (its info["features"]): parts joined by "+", in this order.
FEATURE_KINDS = ("backbone", "body", "backbone+body", "backbone+columns")


def column_means(fmap: Any) -> Any:
    """A feature map ``(B, C, H, W)`` (torch) -> ``(B, 3C)``: the means of its left, centre and right thirds
    (a map under 3 wide: its mean three times)."""
    import torch

    w = fmap.shape[-1]
    if w < 3:
        return fmap.mean((2, 3)).repeat(1, 3)
    a = w // 3
    return torch.cat([fmap[..., lo:hi].mean((2, 3)) for lo, hi in ((0, a), (a, w - a), (w - a, w))], 1)


def map_pool(model: Any) -> Any:
    """The module that pools the tapped network's last feature map (a timm CNN's ``global_pool``; an
    ensemble's first member, whose head the tap reads), or None (a ViT has tokens, not a map)."""
    m = model.members[0] if hasattr(model, "members") else model
    if getattr(m, "kind", None) == "vit":
        return None
    pool = getattr(getattr(m, "backbone", None), "global_pool", None)
    if not callable(getattr(pool, "register_forward_pre_hook", None)):
        return None
    # a channels-last pool's input would be averaged over the wrong axis: no columns rather than wrong ones
    return pool if getattr(pool, "input_fmt", None) in (None, "NCHW") else None


class Captured(list):
    """The pooled feature batches a capture caught, in forward order; ``columns``: the column means of
    the same passes' feature maps (empty when the network has no map)."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list = []


@dataclass
class Described:
    """One vehicle's attributes (``None``: unsure, or the stage is off / has no head)."""

    colour: str | None = None
    colour_confidence: float | None = None
    viewpoint: str | None = None
    viewpoint_confidence: float | None = None
    plate: dict[str, Any] | None = None  # {"text", "box" (the crop's pixels here), "confidence"}


class FeatureTap:
    """Catches the input of ``model.head`` (the pooled backbone features) and the column means of the
    map the pool reads (``map_pool``) during :meth:`capture`, in the calling thread only; rows come in
    forward order."""

    def __init__(self, model: Any, columns: bool = True) -> None:
        self._local = threading.local()
        self._handles = [model.head.register_forward_pre_hook(self._hook)]
        pool = map_pool(model) if columns else None  # columns=False: no head reads them, no cost
        if pool is not None:
            self._handles.append(pool.register_forward_pre_hook(self._map_hook))

    def _hook(self, module: Any, args: tuple) -> None:
        rows = getattr(self._local, "rows", None)
        if rows is not None:
            rows.append(args[0].detach().float().cpu().numpy())

    def _map_hook(self, module: Any, args: tuple) -> None:
        rows = getattr(self._local, "rows", None)
        if rows is not None and args[0].dim() == 4:
            rows.columns.append(column_means(args[0].detach().float()).cpu().numpy())

    @contextmanager
    def capture(self) -> Iterator[Captured]:
        """``with tap.capture() as rows: model(...)``: ``rows`` then holds the feature batches (and
        ``rows.columns`` the column means)."""
        self._local.rows = rows = Captured()
        try:
            yield rows
        finally:
            self._local.rows = None

    def remove(self) -> None:
        """Take the hooks off the model."""
        for h in self._handles:
            h.remove()


class Attributes:
    """Colour and viewpoint heads over the recogniser's features and the crops' pixels."""

    def __init__(self, colour: LinearHead | None = None, viewpoint: LinearHead | None = None,
                 cfg: AttributesCfg | None = None, plates: PlateReader | None = None) -> None:
        self.cfg = cfg or AttributesCfg()
        # The plate reader (vericar/attributes/plates.py) when cfg.plates is "read".
        self.plates = (plates or PlateReader()) if self.cfg.plates == "read" else None
        self.heads = {"colour": colour, "viewpoint": viewpoint}  # kept (and saved) when switched off
        for head in self.heads.values():
            if head is not None and head.info.get("features", "backbone") not in FEATURE_KINDS:
                raise ArtifactError(f"an attribute head reads {head.info.get('features')!r} features; this vericar "
                                    f"knows {list(FEATURE_KINDS)}. Install the vericar that wrote the model.")

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

    def tap(self, model: Any) -> FeatureTap:
        """The feature tap on ``model`` (hooked on first use, once per model; the map's columns only
        when a head reads them)."""
        columns = any("columns" in h.info.get("features", "") for h in (self.colour, self.viewpoint) if h is not None)
        with _TAP_LOCK:
            if getattr(self, "_tap", None) is None or self._tap_model is not model:
                self._tap, self._tap_model = FeatureTap(model, columns), model
            return self._tap

    def run(self, model: Any, embed: Any, crops: Sequence[Any]) -> tuple[np.ndarray, list[Described]]:
        """``embed(crops)`` (the recognizer's embedding pass through ``model``) and each crop's
        attributes from the features that same pass computed."""
        if not self.active:
            return embed(crops), [Described() for _ in crops]
        with self.tap(model).capture() as rows:
            emb = embed(crops)
        n = len(crops)
        return emb, self.describe(tap_features(rows, n), crops, tap_features(rows.columns, n))

    def describe(self, features: np.ndarray | None, crops: Sequence[Any],
                 columns: np.ndarray | None = None) -> list[Described]:
        """Each crop's attributes from its pooled backbone features ``(N, F)``, the column means of its
        feature map ``(N, 3 x the map's channels)`` (either None: not captured; a head that needs it
        answers None) and its pixels (PIL)."""
        out = [Described() for _ in crops]
        if not crops or not self.active:
            return out
        parts: dict[str, np.ndarray | None] = {"backbone": features, "columns": columns}
        for head, name in ((self.colour, "colour"), (self.viewpoint, "viewpoint")):
            if head is None:
                continue
            needs = head.info.get("features", "backbone").split("+")
            if "body" in needs and parts.get("body") is None:
                parts["body"] = np.stack([body_colour(c) for c in crops])
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


def tap_features(rows: list, n: int) -> np.ndarray | None:
    """The captured rows as one ``(n, F)`` array; None when their count is neither ``n`` nor ``2n`` (the
    forward pass was not one row per crop, so rows cannot be matched to vehicles). ``2n``: a flip-averaged
    pass (vericar.models.embedding.flip_averaged) puts each crop and its mirror image through in turn; the
    heads read the crop as shown."""
    if not rows:
        return None
    x = np.concatenate(rows)
    return x if len(x) == n else x[0::2] if len(x) == 2 * n else None
