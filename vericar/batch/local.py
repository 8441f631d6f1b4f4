"""The plain engine: batches through one recognizer in this process, the next batch opened meanwhile."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Sequence

from tqdm.auto import tqdm

from vericar.batch.pipeline import identify_batch, open_photo
from vericar.core.recognizer import Recognizer


def run_local(rec: Recognizer, todo: Sequence[str], write: Any, *, batch_size: int = 16, workers: int = 1,
              all_vehicles: bool = False, max_vehicles: int = 10, progress: bool = False) -> None:
    """Identify ``todo`` batch by batch and hand each batch's rows to ``write`` (a list of rows) as soon
    as it is done, so an interrupted run loses at most the batch in flight.

    ``workers`` threads open and decode the next batch's photos while the model runs on this one (0: the
    photos are opened in turn, between batches). ``progress``: a tqdm bar (photos, rate, ETA, errors).
    """
    batches = [list(todo[i:i + batch_size]) for i in range(0, len(todo), batch_size)]
    errors = 0
    bar = tqdm(total=len(todo), unit="photo", desc="identify", disable=not progress, smoothing=0.1)
    with (ThreadPoolExecutor(workers, thread_name_prefix="vericar-open") if workers > 0 else nullcontext()) as pool:
        ahead = _open(pool, batches[0]) if batches else None
        for n, files in enumerate(batches):
            opened = [f.result() for f in ahead] if ahead is not None else None
            ahead = _open(pool, batches[n + 1]) if n + 1 < len(batches) else None
            per_photo = identify_batch(rec, files, all_vehicles=all_vehicles, max_vehicles=max_vehicles,
                                       opened=opened)
            write([row for rows in per_photo for row in rows])
            errors += sum(1 for rows in per_photo if rows[0]["error"] is not None)
            bar.update(len(files))
            if errors:
                bar.set_postfix(errors=errors, refresh=False)
    bar.close()


def _open(pool: ThreadPoolExecutor | None, files: list[str]) -> list[Future] | None:
    """Start opening ``files`` on the pool (None without one: the batch opens them itself)."""
    return None if pool is None else [pool.submit(open_photo, f) for f in files]
