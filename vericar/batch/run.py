"""``vericar identify``'s job, for the command and for Python: find the photos, skip those already in the
output, run an engine (plain or Ray), append the rows, count what happened."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vericar.batch.inputs import IMAGE_SUFFIXES, find_photos
from vericar.batch.rows import columns
from vericar.batch.writer import open_writer
from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer

ENGINES = ("local", "ray")


@dataclass
class RunStats:
    """What a run did: photos found, skipped (already in the output), identified now, their rows and errors."""

    found: int
    skipped: int
    photos: int
    rows: int
    errors: int
    seconds: float

    def summary(self, out: str | os.PathLike) -> str:
        """One line for the end of the command."""
        rate = f", {self.photos / self.seconds:.1f} photos/s" if self.photos and self.seconds > 0 else ""
        skipped = f"; {self.skipped} already there, skipped" if self.skipped else ""
        errors = (f"; {self.errors} could not be read or identified (see their 'error' column)" if self.errors
                  else "; no errors")
        return (f"wrote {_n(self.rows, 'row')} for {_n(self.photos, 'photo')} to {out} in {self.seconds:.1f} s"
                f"{rate}{skipped}{errors}.")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def identify(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, model: str = "default",
             detector: str | None = None, data_dir: str | os.PathLike | None = None, rec: Recognizer | None = None,
             engine: str = "local", address: str | None = None, batch_size: int = 16, workers: int | None = None,
             all_vehicles: bool = False, max_vehicles: int = 10, progress: bool = False) -> RunStats:
    """Identify every photo that ``paths`` names into ``out`` (.csv, .jsonl or .parquet), resuming it.

    ``rec``: a recognizer to use as it is (plain engine only); else ``model`` is loaded with ``detector``
    and the vehicles added to it in ``data_dir`` (default: the app's, ``vericar.ui.enrolled.default_data_dir``).
    ``workers``: the plain engine's photo-opening threads (default 1), or Ray's actors (default: one per CPU).
    """
    from vericar.ui.enrolled import default_data_dir, read_added

    if engine not in ENGINES:
        raise VericarError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}.")
    workers = (1 if engine == "local" else 0) if workers is None else workers
    if batch_size < 1 or workers < 0 or max_vehicles < 1:
        raise VericarError(f"--batch-size ({batch_size}) and --max-vehicles ({max_vehicles}) must be at least 1 "
                           f"and --workers ({workers}) at least 0.")
    if rec is not None and engine != "local":
        raise VericarError("a Recognizer object runs on the plain engine only; give the Ray engine a model spec.")
    photos = find_photos(paths)
    if not photos:
        raise VericarError(f"no photos were found in {', '.join(map(str, paths))} (folders are searched for "
                           f"files ending in {', '.join(sorted(IMAGE_SUFFIXES))}).")
    writer = open_writer(out, columns(all_vehicles))
    todo = [p for p in photos if p not in writer.done]
    errors = 0

    def write(rows: list[dict]) -> None:
        nonlocal errors
        writer.write(rows)
        errors += len({r["file"] for r in rows if r["error"] is not None})

    start, written = time.perf_counter(), writer.rows_written
    if todo:
        added = read_added(Path(data_dir) if data_dir else default_data_dir()) if rec is None else None
        kw = dict(batch_size=batch_size, all_vehicles=all_vehicles, max_vehicles=max_vehicles, progress=progress)
        if engine == "ray":
            from vericar.batch.ray_engine import run_ray

            run_ray(todo, write, model=model, detector=detector, added=added, address=address, workers=workers, **kw)
        else:
            from vericar.batch.local import run_local
            from vericar.batch.pipeline import load_recognizer

            rec = rec or load_recognizer(model, detector=detector, added=added, batch_size=batch_size)
            run_local(rec, todo, write, workers=workers, **kw)
    writer.close()
    return RunStats(len(photos), len(photos) - len(todo), len(todo), writer.rows_written - written, errors,
                    time.perf_counter() - start)
