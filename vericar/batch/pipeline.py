"""One batch of photos through a recognizer, as rows: what both engines (local, Ray) run.

A photo that cannot be opened (not an image, truncated, too large) or that breaks the model gets an
error row and the others go on; only an interrupt (Ctrl-C) or a lost process stops a batch.
"""
from __future__ import annotations

from typing import Any, Sequence

from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer
from vericar.batch.rows import error_row, photo_rows
from vericar.vision.images import open_image
from vericar.vision.scene import MAX_VEHICLES


def load_recognizer(model: str, *, detector: str | None = None, added: dict[str, Any] | None = None,
                    batch_size: int = 16) -> Recognizer:
    """``vericar.load(model)`` with ``detector`` (None: the model's own) and the vehicles added to it in
    the app's store (``vericar.ui.enrolled.read_added``), as the app answers with them."""
    from vericar.artifacts.hub import load
    from vericar.ui.enrolled import merge_added

    rec = load(model, batch_size=batch_size, **({"detector": detector} if detector else {}))
    if added:
        merge_added(rec, added)
    return rec


def open_photo(file: str) -> Any:
    """The photo at ``file`` (PIL), or the error that says why it cannot be used."""
    try:
        return open_image(file)
    except (VericarError, OSError) as e:  # OSError: unreadable (permissions, a vanished network file)
        return e


def identify_batch(rec: Recognizer, files: Sequence[str], *, all_vehicles: bool = False,
                   max_vehicles: int = MAX_VEHICLES, opened: Sequence[Any] | None = None) -> list[list[dict]]:
    """The rows of each photo of ``files`` (a list per photo, in order). ``opened``: the photos already
    opened with ``open_photo`` (the local engine opens the next batch while this one runs).

    Without ``all_vehicles`` the photos go through ``rec.predict_batch`` together (one forward pass),
    with it each through ``rec.predict_all``: the very calls a Python user makes, so rows agree with them.
    """
    opened = [open_photo(f) for f in files] if opened is None else list(opened)
    good = [i for i, im in enumerate(opened) if not isinstance(im, BaseException)]
    out: list[list[dict]] = [[error_row(f, str(im), all_vehicles=all_vehicles)] if isinstance(im, BaseException)
                             else [] for f, im in zip(files, opened)]
    if not good:
        return out
    if all_vehicles:
        for i in good:
            out[i] = _guarded(files[i], lambda im=opened[i]: rec.predict_all(im, max_vehicles=max_vehicles), True)
        return out
    try:
        preds = rec.predict_batch([opened[i] for i in good])
    except Exception:  # noqa: BLE001 - one photo broke the batch: answer them one by one to find it
        for i in good:
            out[i] = _guarded(files[i], lambda im=opened[i]: [rec.predict(im)], False)
        return out
    for i, pred in zip(good, preds):
        out[i] = photo_rows(files[i], [pred], all_vehicles=False)
    return out


def _guarded(file: str, predict: Any, all_vehicles: bool) -> list[dict]:
    """``photo_rows`` of ``predict()``, or an error row when it fails on this photo."""
    try:
        return photo_rows(file, predict(), all_vehicles=all_vehicles)
    except Exception as e:  # noqa: BLE001 - any failure on one photo must not stop the other ten thousand
        return [error_row(file, f"could not be identified ({type(e).__name__}: {e})", all_vehicles=all_vehicles)]
