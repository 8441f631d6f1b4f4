"""The report's HTML pages, rendered with Jinja2 from templates/ (autoescaped: class names are text).

Every image is embedded as a base64 PNG / JPEG data URI, so one file holds the whole page and reads
offline. ``pair_thumbnails`` draws a most-confused pair from the query photos: a photo of the true
class that was taken for the other, beside a photo of the other class.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image, ImageDraw

from vericar.core.errors import VericarError
from vericar.vision.images import make_thumbnail, open_image

TEMPLATES = Path(__file__).with_name("templates")
THUMB = 150


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data`` as a data: URI (an image the page carries itself)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg_bytes(img: Image.Image, quality: int = 80) -> bytes:
    """``img`` as JPEG bytes (photos: far smaller than PNG)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda x: "—" if x is None else f"{100 * x:.2f}%"
    env.filters["uri"] = data_uri
    return env


def _thumb(path: Any) -> Image.Image | None:
    """A THUMB-sized copy of the photo at ``path``; None if it is not a readable local file."""
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    try:
        return make_thumbnail(open_image(path), THUMB)
    except (VericarError, OSError):
        return None


def _tile(img: Image.Image | None, caption: str) -> Image.Image:
    """A fixed-size tile: the thumbnail centred, or the caption where there is no photo."""
    tile = Image.new("RGB", (THUMB, THUMB), (235, 238, 242))
    if img is not None:
        tile.paste(img, ((THUMB - img.width) // 2, (THUMB - img.height) // 2))
    else:
        ImageDraw.Draw(tile).multiline_text((6, THUMB // 2 - 10), "no photo of\n" + caption[:22], fill=(60, 60, 60))
    return tile


def pair_thumbnails(pairs: pd.DataFrame, table: pd.DataFrame) -> dict[tuple[str, str], str]:
    """For each (true, predicted) pair: a data URI of two photos side by side when the query photos
    are files here, else nothing for that pair."""
    out = {}
    for t, p in zip(pairs["true"], pairs["predicted"]):
        mistaken = table[(table["true_model"] == t) & (table["pred_model"] == p)]["file"]
        other = table[table["true_model"] == p]
        other = pd.concat([other[other["pred_model"] == p], other[other["pred_model"] != p]])["file"]
        a = _thumb(mistaken.iloc[0]) if len(mistaken) else None
        b = _thumb(other.iloc[0]) if len(other) else None
        if a is None and b is None:
            continue
        both = Image.new("RGB", (2 * THUMB + 4, THUMB), (255, 255, 255))
        both.paste(_tile(a, t), (0, 0))
        both.paste(_tile(b, p), (THUMB + 4, 0))
        out[(t, p)] = data_uri(jpeg_bytes(both), "image/jpeg")
    return out


def render_report(rep: dict[str, Any], *, title: str, thumbs: dict[tuple[str, str], str],
                  explore: dict[str, Any] | None = None, command: str | None = None, top_pairs: int = 20) -> str:
    """report.html's text for ``report.build``'s tables and figures."""
    r = rep["result"]
    pairs = rep["pairs"].head(top_pairs).to_dict("records")
    for row in pairs:
        row["thumb"] = thumbs.get((row["true"], row["predicted"]))
    return _env().get_template("report.html.j2").render(
        title=title, command=command, r=r, levels=list((r.get("top1") or {}).keys()), pairs=pairs,
        figures=rep["figures"], per_class=rep["per_class"].sort_values("f1").to_dict("records"),
        attributes={k: v.to_dict("records") for k, v in rep["attributes"].items()}, explore=explore)


def render_explore(explore: dict[str, Any], *, title: str) -> str:
    """The dataset explorer's page (explore.py) on its own."""
    return _env().get_template("explore.html.j2").render(title=title, explore=explore)
