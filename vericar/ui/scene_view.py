"""How the app presents a photo with several vehicles: the /identify JSON (main vehicle's keys +
``box`` + ``vehicles``), the photo with a labelled box on every vehicle, a line per other vehicle.
No gradio here (as vericar/ui/present.py)."""
from __future__ import annotations

from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from vericar.ui.present import described, finite, prediction_dict

# What the vehicle looks like (vericar/attributes; plate: {text, box, confidence} or null).
ATTRIBUTE_KEYS = ("colour", "colour_confidence", "viewpoint", "viewpoint_confidence", "plate")
VEHICLE_KEYS = ("label", "make", "model", "type", "year", "confidence", "unknown", "ood_score", *ATTRIBUTE_KEYS)
NO_VEHICLE = "no vehicle found"
# Main vehicle first, then a few distinct colours for the others.
COLOURS = [(234, 88, 12), (37, 99, 235), (22, 163, 74), (147, 51, 234), (219, 39, 119), (13, 148, 136)]


def short_label(pred: Any) -> str:
    """A vehicle's name as shown on its box: the label, or 'unknown vehicle'."""
    return "unknown vehicle" if pred.unknown else (pred.label or "unknown vehicle")


def identify_answer(preds: Sequence[Any], main: Any) -> dict[str, Any]:
    """The /identify JSON: every key of the main vehicle's answer (``prediction_dict``), its
    ``box``, and ``vehicles`` (each {box, label, make, model, type, year, confidence, unknown,
    ood_score, colour, colour_confidence, viewpoint, viewpoint_confidence, plate}, largest first; []
    when no vehicle was found, with ``message`` saying so)."""
    d = prediction_dict(main)
    d["box"] = main.box
    d["vehicles"] = []
    for p in preds:
        v = prediction_dict(p)
        d["vehicles"].append({"box": p.box, **{k: v[k] for k in VEHICLE_KEYS}})
    if not preds:
        d["message"] = NO_VEHICLE
    return d


def draw_vehicles(photo: Image.Image, preds: Sequence[Any]) -> Image.Image:
    """A copy of ``photo`` with a box and a short label on every vehicle (main vehicle: thicker)."""
    img = photo.convert("RGB").copy()
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(img.size) / 45)))
    for i, p in enumerate(preds):
        if p.box is None:
            continue
        colour = COLOURS[i % len(COLOURS)]
        x1, y1, x2, y2 = p.box
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=width * (2 if i == 0 else 1))
        text = f"{i + 1}. {described(p, short_label(p))}"
        tx, ty = x1, max(0, y1 - font.size - 6)
        l, t, r, b = draw.textbbox((tx + 3, ty + 2), text, font=font)
        draw.rectangle([l - 3, t - 2, r + 3, b + 2], fill=colour)
        draw.text((tx + 3, ty + 2), text, fill=(255, 255, 255), font=font)
    return img


def others_markdown(preds: Sequence[Any]) -> str:
    """One line per vehicle other than the main one (numbered as on the photo); '' when none."""
    if len(preds) < 2:
        return ""
    lines = [f"\n\n**Other vehicles in the photo** ({len(preds) - 1}):"]
    for i, p in enumerate(preds[1:], start=2):
        score = finite(p.ood_score)
        conf = "" if p.unknown else f" · confidence {p.confidence.get('model', 0.0):.2f}"
        lines.append(f"- {i}. {described(p, short_label(p))}{conf} · unknown-vehicle score "
                     f"{'—' if score is None else format(score, '.3f')}")
    return "\n".join(lines)


def no_vehicle_markdown() -> str:
    """The Identify tab's answer for a photo without a vehicle."""
    return ("### No vehicle found\nThe detector found no car, bus or truck in this photo (or only a faint "
            "trace of one, and the photo as a whole does not look like a known vehicle). Try a photo where the "
            "vehicle is larger or clearer.")
