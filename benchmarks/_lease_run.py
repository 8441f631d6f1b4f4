"""``gpu_lease.py run`` (on the GPU machine) and ``unpack`` (here).

``run`` trains the all-classes model and the open-world model (``--holdout-classes "label%5==4"``)
at the same time on the one GPU (each with half the CPU cores for its DataLoader workers), then
evaluates both on the dev photos on the GPU (and the shipped default under the same conditions),
times GPU prediction, and leaves in ``--out`` at most 8 files under 16 MiB: results.json, logs.txt
and each artifact as a zip in 15 MiB pieces. ``unpack`` joins the pieces and loads the artifacts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PIECE = 15 * 2**20  # < the 16 MiB a returned file may have
MAX_FILES, MAX_BYTES = 8, 64 * 2**20
# Dry run: the same steps with a tiny random model on the CPU, in seconds.
TINY = ["--backbone", "timm:test_efficientnet", "--pretrained", "false", "--embed-dim", "16", "--train-size", "32",
        "--eval-size", "32", "--cache-short-side", "48", "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
        "--m-per-class", "2", "--val-gallery-per-class", "3", "--mixed-precision", "no"]
HOLDOUT = "label%5==4"


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lease", default="/tmp/lease", help="where `stage` unpacked the parts")
    p.add_argument("--out", default=os.environ.get("OUT", "lease-out"), help="what comes back ($OUT on the machine)")
    p.add_argument("--time-limit", type=float, default=360.0,
                   help="seconds per training run (from its start); then it stops and writes its artifact")
    p.add_argument("--workers", type=int, help="DataLoader workers per run (default: half the cores, less 1)")
    p.add_argument("--dry-run", action="store_true", help="tiny random model on the CPU: checks every step")
    p.add_argument("--train-args", default="", help="extra train.py flags for both runs, e.g. '--epochs 20'")
    p.set_defaults(func=run)


def add_unpack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="src", required=True, help="the folder the files came back to")
    p.add_argument("--dest", required=True, help="where to put the artifacts (e.g. runs/gpu)")
    p.set_defaults(func=unpack)


def _env(lease: Path) -> dict[str, str]:
    site = [str(lease / "site")] if (lease / "site").is_dir() else []
    path = os.pathsep.join([*site, str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1"}


def _machine(env: dict[str, str]) -> dict[str, Any]:
    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'cuda': c, 'gpu': torch.cuda.get_device_name(0) if c else None}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    info = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-500:]}
    return {**info, "cpus": os.cpu_count()}


def _train_cmds(args: argparse.Namespace, data: Path, out: Path) -> dict[str, list[str]]:
    workers = args.workers if args.workers is not None else (0 if args.dry_run else max(1, (os.cpu_count() or 2) // 2 - 1))
    base = [sys.executable, "-m", "train.train", "--config", str(REPO / "train/configs/offline-gpu.yaml"),
            "--data", str(data / "train.csv"), "--num-workers", str(workers), "--decode-workers", str(workers),
            "--time-limit", str(args.time_limit), "--progress", "false", "--thumbnails", "false",
            *(TINY if args.dry_run else []), *args.train_args.split()]
    # The all-classes run keeps the shipped default's validation slice (5%, seed 0): the two compare on it.
    return {"all": [*base, "--val-fraction", "0.05", "--output-dir", str(out / "all")],
            "ow": [*base, "--holdout-classes", HOLDOUT, "--output-dir", str(out / "ow")]}


def _eval_cmds(args: argparse.Namespace, data: Path, out: Path) -> dict[str, list[str]]:
    dev, train = str(data / "dev.csv"), str(data / "train.csv")
    base = ["--device", "cpu" if args.dry_run else "cuda",
            "--workers", "0" if args.dry_run else "4", "--batch-size", "64", "--no-progress", "--queries", dev]
    cmds = {"all_dev": [*base, "--model", f"local-dir:{out / 'all'}"],
            "ow_dev": [*base, "--model", f"local-dir:{out / 'ow'}"],
            "ow_enrolled": [*base, "--model", f"local-dir:{out / 'ow'}", "--enroll", train, "--enroll-filter", HOLDOUT,
                            "--queries-filter", HOLDOUT],
            "ow_trained_same_gallery": [*base, "--model", f"local-dir:{out / 'ow'}", "--enroll", train,
                                        "--enroll-filter", HOLDOUT, "--queries-filter", "label%5!=4"]}
    if not args.dry_run and (REPO / "vericar" / "default" / "config.json").is_file():
        cmds["default_dev"] = [*base, "--model", f"local-dir:{REPO / 'vericar' / 'default'}"]  # same photos, same GPU
    return {k: [*v, "--json", str(out / "evals" / f"{k}.json")] for k, v in cmds.items()}


def _all_at_once(cmds: dict[str, list[str]], env: dict[str, str], logs: Path) -> dict[str, dict[str, Any]]:
    """Start every command, wait for all; exit code and wall seconds of each, output in logs/NAME.log."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, t0 = {}, time.time()
    for name, cmd in cmds.items():
        procs[name] = subprocess.Popen(cmd, stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                       env=env, cwd=REPO)
    done = {}
    for name, p in procs.items():
        rc = p.wait()
        done[name] = {"rc": rc, "wall_s": round(time.time() - t0, 1)}
        print(f"{name}: exit {rc} after {done[name]['wall_s']} s", flush=True)
    return done


def _run_summary(art: Path) -> dict[str, Any]:
    """What the artifact's config and metrics.csv say about its training."""
    if not (art / "config.json").is_file():
        return {"artifact": False}
    meta = json.loads((art / "config.json").read_text())["meta"]
    import csv
    rows = list(csv.DictReader(open(art / "metrics.csv"))) if (art / "metrics.csv").is_file() else []
    epoch_s = [round(float(r["epoch_s"]), 2) for r in rows]
    return {"artifact": True, "train_seconds": meta.get("train_seconds"), "stopped": meta.get("stopped"),
            "epochs_done": meta.get("epochs_done"), "seconds_per_epoch": epoch_s,
            "mean_epoch_s": round(sum(epoch_s) / len(epoch_s), 2) if epoch_s else None,
            "validation": meta["metrics"]["validation"], "classes": meta.get("classes")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.gpu_lease import staged_ok

    lease, out = Path(args.lease), Path(args.out)
    staged_ok(lease)
    env, data, work = _env(lease), lease / "data", lease / "work"
    results: dict[str, Any] = {"dry_run": args.dry_run, "machine": _machine(env), "started": time.strftime("%F %T")}
    if not args.dry_run and not results["machine"].get("cuda"):
        raise SystemExit(f"no GPU visible to torch ({results['machine']}); use --dry-run to check the steps on a CPU.")
    t0 = time.time()
    train = _train_cmds(args, data, work)
    results["train_commands"] = {k: " ".join(v[1:]) for k, v in train.items()}
    results["train"] = _all_at_once(train, env, work / "logs")
    for k in train:
        results["train"][k].update(_run_summary(work / k))
    evals = _eval_cmds(args, data, work)
    (work / "evals").mkdir(exist_ok=True)
    results["eval_commands"] = {k: "python -m vericar.evaluate " + " ".join(v) for k, v in evals.items()}
    latency_args = [str(work / "all"), "cpu" if args.dry_run else "cuda", str(data / _first_dev(data))]
    # One process for every evaluation and the latency run: one start-up (torch, timm, faiss) instead of five.
    job = work / "evals" / "job.json"
    job.write_text(json.dumps({"evaluate": evals, "latency": latency_args, "out": str(work / "evals" / "latency.json")}))
    results["eval_runs"] = _all_at_once({"evaluate": [sys.executable, __file__, str(job)]}, env, work / "logs")
    results["dev"] = {k: json.loads((work / "evals" / f"{k}.json").read_text())
                      for k in evals if (work / "evals" / f"{k}.json").is_file()}
    lat = work / "evals" / "latency.json"
    results["latency"] = json.loads(lat.read_text()) if lat.is_file() else {"error": "no latency.json: see logs.txt"}
    results["total_s"] = round(time.time() - t0, 1)
    return _collect(results, work, out)


def _first_dev(data: Path) -> str:
    with open(data / "dev.csv") as f:
        f.readline()
        return f.readline().split(",")[0]


def _collect(results: dict[str, Any], work: Path, out: Path) -> dict[str, Any]:
    """results.json + logs.txt + the artifacts as zip pieces, within what a call can bring back."""
    out.mkdir(parents=True, exist_ok=True)
    logs = []
    for log in sorted((work / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        logs += [f"==== {log.name} (last 150 of {len(lines)} lines)", *lines[-150:]]
    (out / "logs.txt").write_text("\n".join(logs) + "\n")
    budget_files, budget_bytes = MAX_FILES - 2, MAX_BYTES - 2**20
    results["returned"] = {}
    for name in ("all", "ow"):  # the all-classes model first: it is the candidate default
        art = work / name
        if not (art / "config.json").is_file():
            continue
        z = work / f"{name}.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
            for p in sorted(art.rglob("*")):
                if p.is_file() and "checkpoints" not in p.relative_to(art).parts:
                    f.write(p, p.relative_to(art))
        size = z.stat().st_size
        n = -(-size // PIECE)
        if n > budget_files or size > budget_bytes:
            results["returned"][name] = f"not returned: {size / 2**20:.1f} MiB in {n} pieces would pass the limits"
            continue
        with open(z, "rb") as f:
            for i in range(n):
                (out / f"{name}.zip.{i:03d}").write_bytes(f.read(PIECE))
        budget_files, budget_bytes = budget_files - n, budget_bytes - size
        results["returned"][name] = {"pieces": n, "mib": round(size / 2**20, 2)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("machine", "total_s", "returned")}))
    return results


def latency(model_dir: str, device: str, photo: str) -> dict[str, float]:
    """Median ms of Recognizer.predict on one photo (decode done) and of embedding a batch of 64, on ``device``."""
    import statistics

    import torch

    import vericar
    from vericar.vision.images import open_image
    from vericar.models.embedding import embed

    rec = vericar.load(f"local-dir:{model_dir}")
    rec.model.to(device)
    img = open_image(photo)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn, n: int) -> float:
        for _ in range(3):
            fn()
        ts = []
        for _ in range(n):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            ts.append(1000 * (time.perf_counter() - t))
        return round(statistics.median(ts), 2)

    return {"device": device, "predict_batch1_ms": timed(lambda: rec.predict(img), 30),
            "embed_batch64_ms": timed(lambda: embed(rec.model, [img] * 64, batch_size=64), 10)}


def unpack(args: argparse.Namespace) -> dict[str, Any]:
    """Join NAME.zip.NNN pieces into DEST/NAME, load each artifact, print the figures of results.json."""
    import vericar

    src, dest = Path(args.src), Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    loaded = {}
    for name in ("all", "ow"):
        pieces = sorted(src.glob(f"{name}.zip.*"))
        if not pieces:
            continue
        z = dest / f"{name}.zip"
        with open(z, "wb") as f:
            for p in pieces:
                f.write(p.read_bytes())
        with zipfile.ZipFile(z) as f:
            f.extractall(dest / name)
        z.unlink()
        rec = vericar.load(f"local-dir:{dest / name}")
        loaded[name] = {"gallery": len(rec.gallery), "classes": len(rec.gallery.classes),
                        "threshold": rec.ood.threshold, "folder": str(dest / name)}
        print(f"{name}: loads from {dest / name}: {len(rec.gallery)} gallery photos, {len(rec.gallery.classes)} classes")
    if (src / "results.json").is_file():
        results = json.loads((src / "results.json").read_text())
        (dest / "results.json").write_text(json.dumps(results, indent=1))
        for k, r in results.get("dev", {}).items():
            top1, ood = (r.get("top1") or {}).get("model"), r.get("ood") or {}
            print(f"{k}: dev top-1 {top1}  OOD AUROC {ood.get('auroc')}  ({r['n_queries']} queries)")
    return loaded


def _evaluate_job(path: str) -> None:
    """Each evaluation of ``run`` in turn (an error in one does not stop the others), then the latency."""
    from vericar.evaluate import main as evaluate

    job, failed = json.loads(Path(path).read_text()), []
    for name, argv in job["evaluate"].items():
        print(f"==== {name}: python -m vericar.evaluate {' '.join(argv)}", flush=True)
        try:
            evaluate(argv)
        except Exception as e:  # noqa: BLE001  reported, and the exit code says so
            print(f"{name} failed: {type(e).__name__}: {e}", flush=True)
            failed.append(name)
    if Path(job["latency"][0], "config.json").is_file():
        Path(job["out"]).write_text(json.dumps(latency(*job["latency"])))
    if failed:
        raise SystemExit(f"failed: {failed}")


if __name__ == "__main__":  # `python3 benchmarks/_lease_run.py JOB.json`: what run starts after training
    sys.path.insert(0, str(REPO))
    _evaluate_job(sys.argv[1])
