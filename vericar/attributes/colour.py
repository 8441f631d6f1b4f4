"""A vehicle's colour: one of VCoR's 15 names with a confidence, or None when unsure.

The head (``vericar.attributes.head.LinearHead``) reads what the recogniser's own pass gives
(vericar/attributes/tap.py: no second network pass) and two CIELAB summaries of the crop's pixels,
both weighted towards where the body is (``body_weights``: a centre-weighted window that plays down
the top, with glass, roof and background, and the bottom corners, with wheels and ground):
``body_colour``, the body's own colours, and ``scene_light``, the body against its scene and how it
shines. Which parts a head reads is in its JSON (``features``); the shipped one was chosen by
cross-validation on labelled training photos (docs/attributes.md).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

COLOURS = ("beige", "black", "blue", "brown", "gold", "green", "grey", "orange", "pink", "purple", "red",
           "silver", "tan", "white", "yellow")
#: Names that shade into each other, reported together in the headline figure.
COARSE = {"silver": "grey", "beige": "brown", "tan": "brown", "gold": "yellow", "pink": "purple"}

SIZE = 48  # pixels per side the crop is summarised at: enough for colour, cheap (about 2 ms)
LAB_BINS = (6, 7, 7)  # L in 0-100, a and b in -60..60 (clipped)

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


@lru_cache(maxsize=16)
def body_weights(size: int = SIZE, width: int | None = None) -> np.ndarray:
    """Where the body is in a tight vehicle crop (any view), on a ``size`` x ``width`` grid (square by
    default): a centre-weighted window over rows 35-85% (below the glass, above the road), wheels'
    bottom corners down-weighted; sums to 1."""
    y = (np.arange(size) + 0.5) / size
    x = (np.arange(width or size) + 0.5) / (width or size)
    rows = np.exp(-0.5 * ((y - 0.6) / 0.14) ** 2)
    cols = np.exp(-0.5 * ((x - 0.5) / 0.28) ** 2)
    w = rows[:, None] * cols[None, :]
    wheels = (y[:, None] > 0.7) & (np.abs(x[None, :] - 0.5) > 0.22)
    w[wheels] *= 0.2
    return (w / w.sum()).astype(np.float32)


def body_colour(photo: Any) -> np.ndarray:
    """A CIELAB summary of the body's pixels (308 numbers), every pixel weighted by ``body_weights``:
    a joint L x a x b histogram (6 x 7 x 7 bins), the 5/25/50/75/95th percentiles of lightness, the
    25/50/75th of chroma and of the lightness gradient (flat white paint vs graded metallic silver),
    and the share of the body lighter than L 70, 80 and 90."""
    lab = to_lab(photo)
    w = body_weights()
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    hist = np.histogramdd(np.stack([L.ravel(), np.clip(a, -59, 59).ravel(), np.clip(b, -59, 59).ravel()], 1),
                          bins=LAB_BINS, range=[(0, 100), (-60, 60), (-60, 60)], weights=w.ravel())[0].ravel()
    chroma = np.hypot(a, b).ravel()
    gy, gx = np.gradient(L)
    grad = np.hypot(gx, gy).ravel()
    ww, Lr = w.ravel(), L.ravel()
    stats = ([_wquantile(Lr, ww, q) for q in (0.05, 0.25, 0.5, 0.75, 0.95)]
             + [_wquantile(chroma, ww, q) for q in (0.25, 0.5, 0.75)]
             + [_wquantile(grad, ww, q) for q in (0.25, 0.5, 0.75)])
    light = [float(ww[Lr > t].sum()) for t in (70, 80, 90)]
    return np.concatenate([hist, np.array(stats, np.float32) / 50.0, np.array(light, np.float32)]).astype(np.float32)


def scene_light(photo: Any) -> np.ndarray:
    """How light the body is against the rest of its crop, and how it shines (18 numbers): the 5/25/50/75/
    95th percentiles of lightness over the whole crop and the 25/50/75th over its top 30% (sky, glass),
    the body's median lightness less the crop's median and 95th, the crop's median chroma, its share of
    near-white pixels; at 96 px, the body's 25/50/75/90th percentiles of the lightness gradient, its
    share lighter than L 95 and its 98th less its 50th lightness percentile. Exposure moves a white car
    toward silver and a grey one toward black; against its own scene, and by its highlights (metallic
    flake shines in points, flat paint does not), the paint is easier to tell."""
    lab = to_lab(photo)
    L, chroma, w = lab[..., 0], np.hypot(lab[..., 1], lab[..., 2]), body_weights().ravel()
    whole = [float(np.percentile(L, q)) for q in (5, 25, 50, 75, 95)]
    top = [float(np.percentile(L[: int(0.3 * L.shape[0])], q)) for q in (25, 50, 75)]
    body_median = _wquantile(L.ravel(), w, 0.5)
    context = whole + top + [body_median - whole[2], body_median - whole[4], float(np.median(chroma)),
                             float((L > 95).mean())]
    fine = to_lab(photo, 2 * SIZE)[..., 0]
    gy, gx = np.gradient(fine)
    grad, wf, Lf = np.hypot(gx, gy).ravel(), body_weights(2 * SIZE).ravel(), fine.ravel()
    shine = [_wquantile(grad, wf, q) for q in (0.25, 0.5, 0.75, 0.9)]
    shine += [float(wf[Lf > 95].sum()), _wquantile(Lf, wf, 0.98) - _wquantile(Lf, wf, 0.5)]
    return np.concatenate([np.array(context, np.float32) / 50.0, np.array(shine, np.float32) / 20.0]).astype(np.float32)


def _wquantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][min(int(np.searchsorted(cum, q * cum[-1])), len(v) - 1)])
