"""The same pipeline on Ray Data: one recognizer per actor, on one machine or a cluster.

    paths (driver) -> ray.data.from_items -> map_batches(IdentifyPhotos, concurrency=N)  # one model per actor
                   -> rows back to the driver -> the same resumable writer as the plain engine

Each actor loads the recognizer once (``IdentifyPhotos.__init__``) and runs ``identify_batch`` on its
batches: the same code, and so the same rows, as the plain engine. A photo's rows travel as one JSON
text, so a photo is written whole or not at all. Without an address, Ray starts on this machine and
stops at the end; with one (``ray://HOST:10001`` or ``HOST:6379``, or ``auto``) the run joins that
cluster, whose every node must have vericar installed and see the photos at the same paths (see
docs/batch.md). Ray is an optional extra: ``pip install "vericar[ray]"``.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from vericar.batch.pipeline import identify_batch, load_recognizer
from vericar.core.errors import VericarError


class IdentifyPhotos:
    """Ray Data's callable class: built once per actor (the model loads there), called per batch."""

    def __init__(self, model: str, detector: str | None, added: dict[str, Any] | None, batch_size: int,
                 all_vehicles: bool, max_vehicles: int) -> None:
        self.rec = load_recognizer(model, detector=detector, added=added, batch_size=batch_size)
        self.all_vehicles, self.max_vehicles = all_vehicles, max_vehicles

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [str(f) for f in batch["file"]]
        per_photo = identify_batch(self.rec, files, all_vehicles=self.all_vehicles, max_vehicles=self.max_vehicles)
        return {"file": np.array(files, dtype=object),
                "rows": np.array([json.dumps(rows) for rows in per_photo], dtype=object)}


def import_ray() -> Any:
    """The ``ray`` module, or a VericarError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is the [data] extra
    except ImportError as e:
        raise VericarError(f"--engine ray needs Ray Data ({e}); install it with pip install \"vericar[ray]\" "
                           "(or pip install \"ray[data]\"), or leave --engine out for the plain engine.") from e
    return ray


def run_ray(todo: Sequence[str], write: Any, *, model: str, detector: str | None = None,
            added: dict[str, Any] | None = None, address: str | None = None, workers: int = 0,
            batch_size: int = 16, all_vehicles: bool = False, max_vehicles: int = 10,
            progress: bool = False) -> None:
    """Identify ``todo`` on Ray Data and hand each block's rows to ``write`` on this (the driver's) side.

    ``workers``: actors, each with its own recognizer and one CPU (0: one per CPU of the cluster).
    A Ray already started in this process (``ray.init`` by the caller) is used as it is and left running.
    """
    ray = import_ray()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its plan and progress lines: ours say it per photo
    started = not ray.is_initialized()
    if started:
        handlers = _signal_handlers()  # ray.init installs its own SIGTERM/SIGINT handlers in this process
        _start(ray, address)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts photos, with errors
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.from_items([{"file": f} for f in todo])
        ds = ds.map_batches(IdentifyPhotos, batch_size=batch_size, batch_format="numpy", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=n),
                            fn_constructor_kwargs=dict(model=model, detector=detector, added=added,
                                                       batch_size=batch_size, all_vehicles=all_vehicles,
                                                       max_vehicles=max_vehicles))
        errors = 0
        with tqdm(total=len(todo), unit="photo", desc="identify (ray)", disable=not progress) as bar:
            for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
                per_photo = [json.loads(s) for s in block["rows"]]
                write([row for rows in per_photo for row in rows])
                errors += sum(1 for rows in per_photo if rows[0]["error"] is not None)
                bar.update(len(per_photo))
                if errors:
                    bar.set_postfix(errors=errors, refresh=False)
    finally:
        if started:
            ray.shutdown()
            _restore(handlers)


def _signal_handlers() -> dict[int, Any]:
    """This process's SIGTERM and SIGINT handlers, so a run leaves them as it found them."""
    return {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}


def _restore(handlers: dict[int, Any]) -> None:
    """Put back the handlers that ``ray.init`` replaced (only the main thread may set them)."""
    if threading.current_thread() is threading.main_thread():
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _start(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address``, or start Ray on this machine with vericar importable by its workers."""
    import vericar

    # Workers of a local Ray import vericar from where this process did (a source checkout included).
    home = str(Path(vericar.__file__).resolve().parents[1])
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING,
                     runtime_env={"env_vars": {"PYTHONPATH": home}})
    except Exception as e:  # noqa: BLE001 - Ray raises bare Exception / ConnectionError / RuntimeError here
        where = f"the Ray cluster at {address}" if address else "Ray on this machine"
        fix = ("check the address (ray status on the head shows it) and that this machine can reach it" if address
               else "Ray gives its processes 30 s to start, which an overloaded machine can miss: try again, or "
                    "start it yourself (ray start --head) and pass --address auto")
        raise VericarError(f"could not start {where} ({type(e).__name__}: {e}); {fix}; or leave --engine out "
                           "for the plain engine.") from e
