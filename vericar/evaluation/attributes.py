"""Colour and viewpoint figures of ``python -m vericar.evaluate``: queries whose CSV has ``colour`` /
``viewpoint`` columns (or an ``--attributes`` CSV of ``file,colour,viewpoint`` beside them) are
answered by the whole pipeline (``Recognizer.predict_batch``: detector, crop, embedding pass,
attribute heads) and scored with ``metrics.attribute_scores`` (empty label: not scored)."""
from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from vericar.attributes.colour import COLOURS, coarse
from vericar.attributes.viewpoint import VIEWPOINTS
from vericar.core.errors import VericarError
from vericar.evaluation.data import Sample
from vericar.evaluation.metrics import attribute_scores

VOCABULARY = {"colour": COLOURS, "viewpoint": VIEWPOINTS}


def with_labels(samples: Sequence[Sample], path: str | Path, queries_csv: str | Path) -> list[Sample]:
    """``samples`` with colour / viewpoint from ``path`` (``file,colour,viewpoint``; ``file`` as in the
    queries CSV, so relative to its folder); photos it does not name keep theirs."""
    path, base = Path(path), Path(queries_csv).parent
    if not path.is_file():
        raise VericarError(f"--attributes {path} not found; give a CSV with the header file,colour,viewpoint.")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "file" not in (reader.fieldnames or []) or not {"colour", "viewpoint"} & set(reader.fieldnames or []):
            raise VericarError(f"{path} needs a 'file' column and a 'colour' and/or 'viewpoint' column "
                               f"(got {reader.fieldnames}).")
        labels = {str(base / r["file"]): r for r in reader}
    out = []
    for s in samples:
        r = labels.get(str(s.image))
        out.append(s if r is None else replace(s, colour=(r.get("colour") or "").strip() or None,
                                              viewpoint=(r.get("viewpoint") or "").strip() or None))
    if not any(str(s.image) in labels for s in samples):
        raise VericarError(f"no query photo is named in {path}; its 'file' column must match the queries CSV's.")
    return out


def check_vocabulary(samples: Sequence[Sample]) -> None:
    """Refuse a label outside the vocabulary before any photo is embedded."""
    for s in samples:
        for name, words in VOCABULARY.items():
            value = getattr(s, name)
            if value is not None and value not in words:
                raise VericarError(f"{s.image}: {name} {value!r} is not one of {list(words)} (leave it empty if unsure).")


def evaluate_attributes(rec: Any, samples: Sequence[Sample], batch_size: int = 16) -> dict[str, Any] | None:
    """Colour (15 names and coarse groups) and viewpoint scores over the labelled samples; None when none is."""
    labelled = [s for s in samples if s.colour is not None or s.viewpoint is not None]
    if not labelled:
        return None
    check_vocabulary(labelled)
    preds = []
    for i in range(0, len(labelled), batch_size):
        preds += rec.predict_batch([s.image for s in labelled[i:i + batch_size]])
    return {"heads": rec.attributes.active,
            "colour": attribute_scores([s.colour for s in labelled], [p.colour for p in preds], coarse),
            "viewpoint": attribute_scores([s.viewpoint for s in labelled], [p.viewpoint for p in preds])}


def table_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for evaluate's markdown table."""
    def pct(x: Any) -> str:
        return "—" if x is None else f"{100 * x:.2f}%"

    c, v = r["colour"], r["viewpoint"]
    rows = [("colour photos (answered)", f"{c['n']} ({c['answered']})"), ("colour coverage", pct(c["coverage"])),
            ("colour accuracy (15 names)", pct(c["accuracy"])), ("colour accuracy (coarse)", pct(c["coarse_accuracy"])),
            ("viewpoint photos (answered)", f"{v['n']} ({v['answered']})"), ("viewpoint coverage", pct(v["coverage"])),
            ("viewpoint accuracy", pct(v["accuracy"]))]
    return rows if r["heads"] else rows + [("attribute heads", "none in this model: every answer is null")]


def confusion_markdown(confusion: dict[str, dict[str, int]], order: Sequence[str]) -> str:
    """A confusion table: a row per true value, a column per answer (and null)."""
    cols = [o for o in order if any(o in row for row in confusion.values())] + ["null"]
    rows = [o for o in order if o in confusion]
    head = "| true \\ answer | " + " | ".join(cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for t in rows:
        lines.append(f"| {t} | " + " | ".join(str(confusion[t].get(c, "")) or "" for c in cols) + " |")
    return "\n".join(lines)
