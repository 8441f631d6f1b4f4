"""/identify round trip through gradio_client: latency p50/p95 and throughput with concurrent clients.

    python benchmarks/app_latency.py [--model default] [--calls 50] [--clients 8] [--json out.json]
    python benchmarks/app_latency.py --url http://127.0.0.1:7860   # an app that is already running

Without --url the app is launched in-process (app.create_app) on a free port over --model, with a
throw-away data dir. The photo is a synthetic drawing unless --image names a file. ``--floor``
also times the same upload to an endpoint that does nothing (a bare Gradio app served the same
way): the part of the round trip no model or app code can remove.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # app.py and vericar/ at the repo root, also when run as a script


def synthetic_photo(path: Path) -> str:
    """A 640x400 drawing of a car (the benchmark needs no real photos)."""
    img = Image.new("RGB", (640, 400), (160, 200, 235))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 300, 640, 400], fill=(80, 80, 85))
    d.rounded_rectangle([60, 190, 580, 300], radius=28, fill=(180, 20, 30))
    d.polygon([(160, 190), (220, 110), (440, 110), (510, 190)], fill=(180, 20, 30))
    for cx in (170, 470):
        d.ellipse([cx - 44, 256, cx + 44, 344], fill=(20, 20, 20))
    img.save(path)
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sequential_ms(url: str, photo: str, calls: int, api_name: str = "/identify", warmup: int = 3) -> np.ndarray:
    """Round-trip times (ms) of ``calls`` sequential requests from one gradio_client."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    for _ in range(warmup):  # first calls pay for lazy imports, thread pools and caches
        client.predict(handle_file(photo), api_name=api_name)
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.predict(handle_file(photo), api_name=api_name)
        lat.append(time.perf_counter() - t0)
    return np.array(lat) * 1000


def gradio_floor(photo: str, calls: int) -> dict:
    """p50/p95 of the same upload to a bare Gradio app whose endpoint does nothing."""
    import gradio as gr

    with gr.Blocks() as bare:
        f, out, go = gr.File(type="filepath"), gr.JSON(), gr.Button()
        go.click(lambda path: {"label": None}, [f], [out], api_name="noop")
    bare.queue()
    bare.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    try:
        ms = sequential_ms(bare.local_url, photo, calls, "/noop")
    finally:
        bare.close()
    return {"floor_p50_ms": float(np.percentile(ms, 50)), "floor_p95_ms": float(np.percentile(ms, 95))}


def run(url: str, photo: str, calls: int, clients: int) -> dict:
    """Sequential latency over ``calls`` requests, then throughput with ``clients`` threads."""
    from gradio_client import Client, handle_file

    ms = sequential_ms(url, photo, calls)
    pool_clients = [Client(url, verbose=False) for _ in range(clients)]
    per = max(1, calls // clients)

    def worker(c) -> int:
        for _ in range(per):
            c.predict(handle_file(photo), api_name="/identify")
        return per

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(worker, pool_clients))
    wall = time.perf_counter() - t0
    return {
        "calls": calls, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(statistics.fmean(ms)), "clients": clients, "concurrent_calls": done,
        "throughput_rps": done / wall,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model spec served in-process (ignored with --url)")
    ap.add_argument("--url", default=None, help="benchmark an app that is already running")
    ap.add_argument("--image", default=None, help="photo to send (default: a synthetic drawing)")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=None, help="app queue concurrency (default: the app's)")
    ap.add_argument("--floor", action="store_true", help="also time the same upload to a do-nothing endpoint")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    from vericar.core.errors import VericarError

    try:
        res = _bench(args)
    except VericarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{'model':<28} {'calls':>5} {'p50 ms':>8} {'p95 ms':>8} {'clients':>7} {'req/s':>7}")
    print(f"{res['model'][:28]:<28} {res['calls']:>5} {res['p50_ms']:>8.1f} {res['p95_ms']:>8.1f} "
          f"{res['clients']:>7} {res['throughput_rps']:>7.1f}")
    if "floor_p50_ms" in res:
        print(f"{'do-nothing endpoint (floor)':<28} {res['calls']:>5} {res['floor_p50_ms']:>8.1f} {res['floor_p95_ms']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def _bench(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="vericar-bench-") as tmp:
        photo = args.image or synthetic_photo(Path(tmp) / "car.png")
        demo = None
        url = args.url
        if url is None:
            # Importing app builds its module-level demo from these variables: the model is loaded once.
            os.environ["VERICAR_MODEL"] = args.model
            os.environ["VERICAR_DATA_DIR"] = str(Path(tmp) / "data")
            if args.concurrency:
                os.environ["VERICAR_CONCURRENCY"] = str(args.concurrency)
            from vericar import tune_malloc

            tune_malloc()  # as `python app.py` does: this process is the server
            import app  # noqa: PLC0415 - the repo-root app module

            if app.demo.title == app.ERROR_TITLE:  # the error page: say why the model did not load
                app.create_app(args.model)
            demo = app.demo
            demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
            url = demo.local_url
        try:
            res = run(url, photo, args.calls, args.clients)
        finally:
            if demo is not None:
                demo.close()
        if args.floor:
            res.update(gradio_floor(photo, args.calls))
    res["model"] = args.model if args.url is None else args.url
    return res


if __name__ == "__main__":
    sys.exit(main())
