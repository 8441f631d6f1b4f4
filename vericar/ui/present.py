"""How the app presents results: the /identify JSON, result markdown, neighbour tiles, the model
card tab and the example drawings. No gradio here: app.py stays the UI wiring, and these are
plain functions a test (or another front end) can call.
"""
from __future__ import annotations

import math
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from vericar.search.taxonomy import LEVELS
from vericar.ui.labels import md_text

if TYPE_CHECKING:
    from vericar.core.recognizer import Recognizer

TILE = (160, 120)


def make_examples(folder: Path) -> list[str]:
    """Draw a few simple synthetic vehicles (never real photos) as the app's examples."""
    folder.mkdir(parents=True, exist_ok=True)
    glass, out = (200, 225, 245), []
    for name, colour, tall in [("red-sedan", (200, 30, 40), 0.0), ("blue-suv", (30, 70, 170), 0.35),
                               ("yellow-van", (235, 190, 20), 0.6)]:
        path, top = folder / f"{name}.png", int(80 - 40 * tall)
        if not path.is_file():
            img = Image.new("RGB", (320, 200), (170, 205, 235))
            d = ImageDraw.Draw(img)
            d.rectangle([0, 150, 320, 200], fill=(90, 90, 95))  # road
            d.rounded_rectangle([30, 95, 290, 150], radius=14, fill=colour)  # body
            d.polygon([(80, 95), (110, top), (220 + 40 * tall, top), (255, 95)], fill=colour)  # cabin
            d.polygon([(92, 93), (115, top + 8), (160, top + 8), (160, 93)], fill=glass)
            d.polygon([(168, 93), (168, top + 8), (215 + 35 * tall, top + 8), (240, 93)], fill=glass)
            for cx in (85, 235):  # wheels
                d.ellipse([cx - 22, 128, cx + 22, 172], fill=(25, 25, 25))
                d.ellipse([cx - 9, 141, cx + 9, 159], fill=(180, 180, 180))
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # one per writer: apps may share a data dir
            img.save(tmp, format="PNG")
            os.replace(tmp, path)  # several workers may draw at once
        out.append(str(path))
    return out


def finite(x: float) -> float | None:
    """``x``, or None when it is inf/NaN."""
    return float(x) if math.isfinite(x) else None  # JSON has no inf/NaN (OOD score of a tiny gallery)


def placeholder(label: str, score: float) -> Image.Image:
    """A tile for a gallery entry that has no thumbnail: its label and score, drawn."""
    img = Image.new("RGB", TILE, (226, 232, 240))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    words, lines = label.split(), [""]
    for w in words:  # greedy word wrap to the tile width
        trial = f"{lines[-1]} {w}".strip()
        if draw.textlength(trial, font=font) > TILE[0] - 12 and lines[-1]:
            lines.append(w)
        else:
            lines[-1] = trial
    text = "\n".join(lines[:5] + [f"sim {score:.2f}"])
    draw.multiline_text((6, 6), text, fill=(30, 41, 59), font=font, spacing=3)
    return img


def prediction_dict(pred: Any) -> dict[str, Any]:
    """The /identify answer: Prediction.to_dict() without refs (they may be server file paths).

    An unknown vehicle gets no label, model or year, and make / type only where that level is
    confident on its own (``Prediction.unknown_levels``); a withheld level's confidence is 0: a
    client reading only ``label`` must not take the nearest known vehicle for an answer. The
    nearest ones stay listed in ``neighbours``. ``confidence`` always has all four levels.
    """
    d = pred.to_dict()
    d["ood_score"] = finite(d["ood_score"])
    d["confidence"] = {lvl: float(d["confidence"].get(lvl, 0.0)) for lvl in LEVELS}
    if d["unknown"]:
        withheld = {lvl for lvl in d["confidence"] if not pred.is_known(lvl)} | {"model", "year"}
        d.update(label=None, **{lvl: None for lvl in LEVELS if lvl in withheld})
        d["confidence"] = {k: 0.0 if k in withheld else v for k, v in d["confidence"].items()}
    d["neighbours"] = [{"label": n["label"], "score": finite(n["score"])} for n in d["neighbours"]]
    return d


def look_words(pred: Any) -> tuple[str, list[str]]:
    """What a vehicle looks like, in words: the colour that goes before its name ('' when unsure or
    not measured) and what goes after it (the viewpoint, the plate's text)."""
    after = [pred.viewpoint] if getattr(pred, "viewpoint", None) else []
    plate = getattr(pred, "plate", None)
    if plate and plate.get("text"):
        after.append(f"plate {plate['text']}")
    return getattr(pred, "colour", None) or "", after


def described(pred: Any, name: str) -> str:
    """``name`` with the vehicle's looks: "white BMW X5 SUV 2007 · front-side" (plain text)."""
    before, after = look_words(pred)
    return " · ".join([f"{before} {name}".strip(), *after])


def result_markdown(pred: Any, threshold: float | None) -> str:
    """The Identify tab's verdict: the vehicle and its levels, or an unknown-vehicle notice naming none."""
    if pred.unknown:
        thr = f", above the threshold of {threshold:.3f}" if threshold is not None else ""
        named = [getattr(pred, lvl) for lvl in ("make", "type") if pred.is_known(lvl) and getattr(pred, lvl)]
        if named:  # a partial answer: "Jeep · SUV — model not in the gallery"
            conf = ", ".join(f"{lvl} {pred.confidence.get(lvl, 0):.0%}" for lvl in ("make", "type")
                             if pred.is_known(lvl))
            return (f"### {md_text(described(pred, ' · '.join(named)))} — model not in the gallery\nConfidence: {conf}. "
                    f"Unknown-vehicle score **{pred.ood_score:.3f}**{thr}: the exact model is unlike every vehicle "
                    "the model knows. If it is a new vehicle, add it in the *Add a vehicle* tab.")
        return (f"### {md_text(described(pred, 'unknown vehicle'))}\nUnknown-vehicle score **{pred.ood_score:.3f}**{thr}: this photo is unlike "
                "every vehicle the model knows, so no name is given. If it is a new vehicle, add it in "
                "the *Add a vehicle* tab.")
    parts = [f"**{lvl}**: {md_text(getattr(pred, lvl))}" for lvl in ("make", "model", "type", "year")
             if getattr(pred, lvl)]
    return f"### {md_text(described(pred, pred.label))}\n" + " · ".join(parts) + "\n\n" + score_words(pred.ood_score, threshold)


def score_words(score: float, threshold: float | None) -> str:
    """The unknown-vehicle score with its threshold, in words."""
    if threshold is None:
        return f"Unknown-vehicle score {score:.3f} (no threshold calibrated, so no photo is called unknown)."
    return (f"Unknown-vehicle score {score:.3f}, below the threshold of {threshold:.3f} above which a photo "
            "counts as a vehicle the model does not know (lower is more familiar).")


def model_card(rec: "Recognizer", spec: str | None = None) -> tuple[str, str | None]:
    """Markdown for the Model card tab, and the training-curve image path if the artifact has one.

    The artifact's folder (README.md, training curve) is the one ``rec`` was loaded from
    (``rec.config.source``): nothing is resolved or downloaded again. ``spec``: the name to show
    (default: the spec it was loaded with)."""
    meta = rec.meta or {}
    source = rec.config.source
    spec = spec or (source.spec if source else "(built in code)")
    lines = [f"**Model spec:** `{spec}` · backbone `{getattr(rec.model, 'spec', '?')}` · "
             f"embedding {rec.model.output_dim}-d · gallery {len(rec.gallery)} photos of "
             f"{len(rec.gallery.classes)} vehicles · k={rec.k} · unknown-vehicle threshold "
             f"{'not calibrated' if rec.ood.threshold is None else format(rec.ood.threshold, '.4g')}"]
    # The calibration fit's report (temperatures, biases, per-level ECE) is in the card's own
    # calibration table below; dumped here it would be 30 rows of internals for a visitor.
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if k != "calibration"}
    if metrics:
        lines += ["", "#### Metrics", "", "| metric | value |", "|---|---|"]
        flat: list[tuple[str, Any]] = []

        def walk(prefix: str, v: Any) -> None:
            if isinstance(v, dict):
                for k, sub in v.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), sub)
            else:
                flat.append((prefix, v))

        walk("", metrics)
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in flat
                  if v is not None and v != "" and v != {}]  # a visitor has no use for an empty row
    if meta.get("command"):
        cmd = meta["command"] if isinstance(meta["command"], str) else " ".join(map(str, meta["command"]))
        lines += ["", "#### Training command", "", f"```\n{public_text(cmd)}\n```"]
    folder = Path(source.folder) if source and source.folder else None
    curve = None
    if folder is not None:
        readme = folder / "README.md"
        if readme.is_file():
            text = readme.read_text(encoding="utf-8", errors="replace")
            if text.startswith("---"):  # drop the Hub card's YAML header
                end = text.find("\n---", 3)
                text = text[end + 4:] if end > 0 else text
            text = _SETTINGS.sub("", _MD_IMAGE.sub("", text))  # the curve is shown below; settings are for developers
            lines += ["", "---", "", public_text(text.strip())]
        if (folder / "training_curve.png").is_file():
            curve = str(folder / "training_curve.png")
    if len(lines) == 1:
        lines += ["", "This model carries no metrics or training command (it was not saved by python train/train.py)."]
    return "\n".join(lines), curve


_SETTINGS = re.compile(r"^## Settings\n.*?(?=^## |\Z)", re.S | re.M)  # the training config dump
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)\n?")  # relative images cannot load in the app's Markdown
# Folders of the machine that trained the model (output dirs, data paths): not a visitor's business.
_PATH = re.compile(r"(?<![\w.:/])(?:\.\./|/)[\w.-]+(?:/[\w.-]+)*")


def public_text(text: str) -> str:
    """``text`` without the training machine's folders: dataset paths from the dataset's name on
    (``../shared/data/stanford_cars/train.csv`` -> ``stanford_cars/train.csv``), other paths -> ``OUT``."""
    def short(m: re.Match) -> str:
        parts = m.group(0).split("/")
        return "/".join(parts[parts.index("stanford_cars"):]) if "stanford_cars" in parts[:-1] else "OUT"
    return _PATH.sub(short, text)
