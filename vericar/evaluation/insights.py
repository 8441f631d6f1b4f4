"""The Insights file: what the app's Insights tab shows of a model, computed once by ``evaluate --report``.

A folder ``insights/`` (in the report folder, then in the artifact: ``train/ship.py --insights DIR``)
with ``insights.json`` and the PNG figures it names. It holds tables and figures only, never a
photo: an artifact is committed and published, the dataset's photos must not be. The app reads
it when the page is built; nothing is computed per view.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from vericar.core.errors import VericarError

FOLDER = "insights"
FILE = "insights.json"
FORMAT = 1
KEPT_PAIRS = 100  # most-confused pairs kept (the report shows 20, the app's gallery as many)
HOW = ("make it with `python -m vericar.evaluate --model SPEC --queries DEV.csv --explore TRAIN.csv --report DIR`, "
       "then `python train/ship.py --artifact ARTIFACT --insights DIR` (docs/report.md)")


def _records(df: Any) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))  # plain JSON types (numpy ints / floats become numbers)


def write(folder: str | Path, rep: dict[str, Any], *, title: str, explore: dict[str, Any] | None = None,
          command: str | None = None) -> Path:
    """Write ``folder`` (replacing it) from ``report.build``'s tables and figures and the explorer's
    figures (its sample grids, which are photos, stay out)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    figures = []
    for name, (caption, png) in rep["figures"].items():
        (folder / f"{name}.png").write_bytes(png)
        figures.append({"name": name, "file": f"{name}.png", "caption": caption})
    doc: dict[str, Any] = {
        "format": FORMAT, "title": title, "command": command, "result": rep["result"],
        "per_class": _records(rep["per_class"]), "per_make": _records(rep["per_make"]),
        "confusions": _records(rep["pairs"].head(KEPT_PAIRS)),
        "reliability": {lvl: {"ece": f["ece"], "bins": f["bins"]} for lvl, f in rep["reliability"].items()},
        "attributes": {k: _records(v) for k, v in rep["attributes"].items()},
        "figures": figures, "explore": None,
    }
    if explore:
        ex_figs = []
        for name, (caption, png) in explore["figures"].items():
            (folder / f"explore_{name}.png").write_bytes(png)
            ex_figs.append({"name": name, "file": f"explore_{name}.png", "caption": caption})
        doc["explore"] = {k: explore[k] for k in ("source", "n_photos", "n_classes", "seconds", "class_counts",
                                                   "summary")} | {"figures": ex_figs}
    (folder / FILE).write_text(json.dumps(doc, indent=1))
    return folder


def load(folder: str | Path) -> dict[str, Any] | None:
    """The insights in ``folder`` (an artifact or a report folder: its ``insights/`` is read), with
    ``folder`` set to where the figures are; None when there are none."""
    folder = Path(folder)
    if (folder / FOLDER / FILE).is_file():
        folder = folder / FOLDER
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VericarError(f"{path} cannot be read ({e}); {HOW}.") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("per_class"), list):
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise VericarError(f"{path} is not an insights file of format {FORMAT} (got {got!r}); {HOW}.")
    missing = [f["file"] for f in doc.get("figures", []) + ((doc.get("explore") or {}).get("figures") or [])
               if not (folder / f["file"]).is_file()]
    if missing:
        raise VericarError(f"{path} names figures that are not beside it: {missing}; {HOW}.")
    doc["folder"] = str(folder)
    return doc


def copy_into(source: str | Path, artifact: str | Path) -> Path:
    """Copy the insights of a report folder (or an insights folder) into ``artifact/insights``, checked first."""
    doc = load(source)
    if doc is None:
        raise VericarError(f"{source} holds no {FOLDER}/{FILE}; {HOW}.")
    dest = Path(artifact) / FOLDER
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    src = Path(doc["folder"])
    for f in [FILE] + [f["file"] for f in doc["figures"] + ((doc.get("explore") or {}).get("figures") or [])]:
        shutil.copy2(src / f, dest / f)
    return dest
