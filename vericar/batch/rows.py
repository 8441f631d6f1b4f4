"""One row per photo (or per vehicle): the app's /identify answer for it, flat enough for a table.

A row is ``file``, ``vehicle`` (1, 2, ... largest first; only with ``all_vehicles``), ``error`` (None,
or what is wrong with the photo), then every key of ``vericar.ui.present.prediction_dict`` (what
/identify gives per vehicle) except ``neighbours``, in its order, with ``confidence`` spread into
``confidence_make``, ``confidence_model``, ``confidence_type`` and ``confidence_year``. So a field
added to ``Prediction`` (it reaches /identify through ``Prediction.to_dict``) becomes a column with no
change here; nested values (``box``, a dict) stay nested in JSONL / Parquet and are JSON text in CSV.
"""
from __future__ import annotations

from typing import Any, Sequence

from vericar.search.taxonomy import LEVELS
from vericar.ui.present import prediction_dict
from vericar.vision.scene import no_vehicle

DROPPED = ("neighbours",)  # the gallery entries behind an answer: the app's tiles, not a table's business


def vehicle_row(file: str, pred: Any, vehicle: int | None = None, *, all_vehicles: bool = False) -> dict[str, Any]:
    """The row of one vehicle (``pred``, a Prediction) of photo ``file``."""
    row: dict[str, Any] = {"file": file}
    if all_vehicles:
        row["vehicle"] = vehicle
    row["error"] = None
    d = prediction_dict(pred)
    row["box"] = d.pop("box", None)
    for key, value in d.items():
        if key in DROPPED:
            continue
        if key == "confidence":  # prediction_dict gives all four levels, always
            row.update((f"confidence_{lvl}", value.get(lvl)) for lvl in LEVELS)
        else:
            row[key] = value
    return row


def photo_rows(file: str, preds: Sequence[Any], *, all_vehicles: bool) -> list[dict[str, Any]]:
    """The rows of photo ``file``: its main vehicle (``preds[0]``; a no-vehicle answer when empty), or,
    with ``all_vehicles``, one per vehicle numbered from 1 (one row with no number when it has none)."""
    if not preds:
        return [vehicle_row(file, no_vehicle(), None, all_vehicles=all_vehicles)]
    if not all_vehicles:
        return [vehicle_row(file, preds[0])]
    return [vehicle_row(file, p, i, all_vehicles=True) for i, p in enumerate(preds, start=1)]


def columns(all_vehicles: bool) -> list[str]:
    """Every row's keys, in order (a Prediction's fields as they are in this vericar)."""
    return list(vehicle_row("", no_vehicle(), None, all_vehicles=all_vehicles))


def error_row(file: str, message: str, *, all_vehicles: bool) -> dict[str, Any]:
    """The row of a photo that could not be read: ``error`` says why, every answer column is empty."""
    row = dict.fromkeys(columns(all_vehicles))
    row.update(file=file, error=" ".join(str(message).split()))  # one line: a CSV cell, a log line
    return row
