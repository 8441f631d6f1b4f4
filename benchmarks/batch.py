"""vericar identify's throughput on this machine: the plain engine and the Ray engine against
``rec.predict_batch`` in a loop, on the same dev photos, with peak memory.

    nice -n 10 python benchmarks/batch.py [--photos ../shared/data/stanford_cars/dev] [--n 1000]
        [--batch-size 16] [--rounds 4] [--ray-workers 2] [--json benchmarks/results/batch.json]

- ``predict_batch loop``: ``for chunk: rec.predict_batch(chunk_of_paths)`` (the floor: no rows, no writing);
- ``plain engine``: ``vericar.batch.local.run_local`` with the same recognizer, rows written to a CSV;
  the photos are split in ``--rounds`` chunks and the two run in turn on each chunk (first one, then the
  other, alternating), so a shared machine's changing load weighs on both alike;
- ``ray engine``: ``run_ray`` with a local Ray of ``--ray-workers`` actors (one model and one CPU each),
  from ``ray.init`` to the last row; its start (Ray up, actors' models loaded: until the first rows come
  back) and its steady rate after that are given apart, so Ray's overhead on one machine is shown.

Peak memory: this process's peak RSS (model + batches; the plain engine and the loop share it) and, for
Ray, the peak of the summed RSS of this process and every Ray process (sampled every 0.5 s; shared pages,
such as the object store's, count once per process that maps them, so it is an upper bound).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared/data/stanford_cars/dev"


class PeakRSS:
    """The peak of the summed RSS of this process and its children (Ray's processes), sampled in a thread."""

    def __init__(self, every: float = 0.5) -> None:
        import psutil

        self.me, self.every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:  # a process that just ended
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _loop(rec, chunk: list[str], batch_size: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(chunk), batch_size):
        rec.predict_batch(chunk[i:i + batch_size])
    return time.perf_counter() - t


def _plain(rec, chunk: list[str], batch_size: int, out: Path) -> float:
    from vericar.batch.local import run_local
    from vericar.batch.rows import columns
    from vericar.batch.writer import open_writer

    writer = open_writer(out, columns(False))
    t = time.perf_counter()
    run_local(rec, chunk, writer.write, batch_size=batch_size, workers=1)
    return time.perf_counter() - t


def _ray(photos: list[str], batch_size: int, workers: int, out: Path) -> dict:
    from vericar.batch.ray_engine import run_ray
    from vericar.batch.rows import columns
    from vericar.batch.writer import open_writer

    writer, times = open_writer(out, columns(False)), []

    def write(rows: list[dict]) -> None:
        writer.write(rows)
        times.append((time.perf_counter(), len(rows)))

    t = time.perf_counter()
    with PeakRSS() as mem:
        run_ray(photos, write, model="default", workers=workers, batch_size=batch_size)
    total = time.perf_counter() - t
    first_t, first_n = times[0]
    steady = (len(photos) - first_n) / (times[-1][0] - first_t) if len(times) > 1 else float("nan")
    return {"seconds": total, "photos_per_s": len(photos) / total, "start_s": first_t - t,
            "steady_photos_per_s": steady, "peak_rss_mb": mem.peak / 2**20, "rows": writer.rows_written}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=str(DEV), help="a folder of photos (default: the dev slice)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true", help="only the loop and the plain engine")
    ap.add_argument("--no-local", action="store_true", help="only the Ray engine")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    import vericar
    from vericar.batch.inputs import find_photos

    vericar.tune_malloc()  # as the vericar command does
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    photos = find_photos([args.photos])[: args.n]
    result: dict = {"photos": len(photos), "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
                    "started": started, "load_average_1_5_15_min": {"start": load_before}}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_local:
            result.update(_local(photos, args, Path(tmp)))
        if not args.no_ray:
            result["ray_engine"] = _ray(photos, args.batch_size, args.ray_workers, Path(tmp) / "ray.csv")
            result["ray_engine"]["workers"] = args.ray_workers
    result["load_average_1_5_15_min"]["end"] = os.getloadavg()
    result["ended"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _local(photos: list[str], args: argparse.Namespace, tmp: Path) -> dict:
    """The predict_batch loop and the plain engine, in turn on each of ``args.rounds`` chunks."""
    import vericar

    rec = vericar.load("default", batch_size=args.batch_size)
    rec.predict_batch(photos[:2])  # warm-up (first-call allocations, detector set-up)
    loop_s = plain_s = 0.0
    size = -(-len(photos) // args.rounds)
    for r in range(args.rounds):
        chunk = photos[r * size:(r + 1) * size]
        if r % 2 == 0:
            loop_s += _loop(rec, chunk, args.batch_size)
            plain_s += _plain(rec, chunk, args.batch_size, tmp / "plain.csv")
        else:
            plain_s += _plain(rec, chunk, args.batch_size, tmp / "plain.csv")
            loop_s += _loop(rec, chunk, args.batch_size)
        print(f"round {r + 1}/{args.rounds}: loop {loop_s:.0f} s, plain {plain_s:.0f} s so far", flush=True)
    return {"predict_batch_loop": {"seconds": loop_s, "photos_per_s": len(photos) / loop_s},
            "plain_engine": {"seconds": plain_s, "photos_per_s": len(photos) / plain_s, "share_of_loop": loop_s / plain_s},
            "local_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


if __name__ == "__main__":
    main()
