"""A vehicle's colour: one of VCoR's 15 names with a confidence, or None when unsure.

The head (``vericar.attributes.head.LinearHead``) reads two things about the vehicle's crop: the
recogniser's own pooled backbone features (captured from the pass that embeds the crop, no
second network pass) and a CIELAB summary of the pixels where the body is (``body_colour``):
a centre-weighted window that leaves out the top (glass, roof, background), the bottom corners
(wheels, ground) and specular highlights. Which of the two, or both, was chosen by cross-validation on
labelled training photos (docs/attributes.md).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

COLOURS = ("beige", "black", "blue", "brown", "gold", "green", "grey", "orange", "pink", "purple", "red",
           "silver", "tan", "white", "yellow")
#: Names that shade into each other, reported together in the headline figure.
COARSE = {"silver": "grey", "beige": "brown", "tan": "brown", "gold": "yellow", "pink": "purple"}

SIZE = 48  # pixels per side the crop is summarised at: enough for colour, cheap (about 1 ms)
L_BINS, C_BINS, H_BINS = 8, 5, 12


def coarse(name: str | None) -> str | None:
    """The coarse group of a colour name (grey = grey + silver, brown = brown + beige + tan,
    yellow = yellow + gold, purple = purple + pink; other names are their own group)."""
    return None if name is None else COARSE.get(name, name)


@lru_cache(maxsize=1)
def _lab_transform() -> Any:
    from PIL import ImageCms

    return ImageCms.buildTransformFromOpenProfiles(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                                   "RGB", "LAB")


def to_lab(photo: Any, size: int = SIZE) -> np.ndarray:
    """``photo`` (PIL) squashed to ``size`` x ``size``, as CIELAB floats (H, W, 3): L in 0-100, a and b signed."""
    from PIL import Image, ImageCms

    small = photo.convert("RGB").resize((size, size), Image.BILINEAR)
    lab = np.asarray(ImageCms.applyTransform(small, _lab_transform()), dtype=np.float32)
    # PIL's LAB mode: L scaled to 0-255; a and b are signed bytes stored as unsigned.
    a, b = lab[..., 1], lab[..., 2]
    a, b = np.where(a > 127, a - 256, a), np.where(b > 127, b - 256, b)
    return np.stack([lab[..., 0] * (100.0 / 255.0), a, b], axis=-1)


@lru_cache(maxsize=4)
def body_weights(size: int = SIZE) -> np.ndarray:
    """Where the body is in a tight vehicle crop (any view): a centre-weighted window over rows
    35-85% (below the glass, above the road), wheels' bottom corners down-weighted; sums to 1."""
    y = (np.arange(size) + 0.5) / size
    x = (np.arange(size) + 0.5) / size
    rows = np.exp(-0.5 * ((y - 0.6) / 0.14) ** 2)
    cols = np.exp(-0.5 * ((x - 0.5) / 0.28) ** 2)
    w = rows[:, None] * cols[None, :]
    wheels = (y[:, None] > 0.7) & (np.abs(x[None, :] - 0.5) > 0.22)
    w[wheels] *= 0.2
    return (w / w.sum()).astype(np.float32)


def body_colour(photo: Any) -> np.ndarray:
    """A CIELAB summary of the body's pixels (``L_BINS + C_BINS + H_BINS + 6`` numbers): weighted
    histograms of lightness, chroma and hue angle (hue weighted by chroma, so greys add little),
    and the weighted medians of L, a, b, chroma and the 25th / 75th percentile of L. Highlights
    (L > 95 with little chroma, e.g. sun on glass or chrome) are left out unless they are most of the body."""
    lab = to_lab(photo).reshape(-1, 3)
    w = body_weights().reshape(-1).copy()
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    chroma = np.hypot(a, b)
    highlight = (L > 95) & (chroma < 8)
    if w[highlight].sum() < 0.5:
        w[highlight] = 0.0
    w /= w.sum()
    hue = (np.degrees(np.arctan2(b, a)) + 360.0) % 360.0
    h_l = np.histogram(L, bins=L_BINS, range=(0, 100), weights=w)[0]
    h_c = np.histogram(np.minimum(chroma, 59.9), bins=C_BINS, range=(0, 60), weights=w)[0]
    cw = w * np.clip(chroma / 20.0, 0.0, 1.0)
    h_h = np.histogram(hue, bins=H_BINS, range=(0, 360), weights=cw)[0]
    stats = [_wquantile(L, w, 0.5), _wquantile(a, w, 0.5), _wquantile(b, w, 0.5), _wquantile(chroma, w, 0.5),
             _wquantile(L, w, 0.25), _wquantile(L, w, 0.75)]
    return np.concatenate([h_l, h_c, h_h, np.array(stats, np.float32) / 50.0]).astype(np.float32)


def _wquantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][min(int(np.searchsorted(cum, q * cum[-1])), len(v) - 1)])
