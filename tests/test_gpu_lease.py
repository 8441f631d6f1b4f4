"""The GPU lease plan end to end on the CPU: pack (tiny subset, small parts) → stage each part
(checksums, a real wheel installed with pip --no-index --target) → run --dry-run (both models
trained at once, evaluated, results + artifact pieces within the return limits) → unpack (loads)."""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def _dataset(root: Path, classes: int = 10, per_class: int = 4, dev_per_class: int = 2) -> Path:
    """A Stanford-Cars-shaped folder: train.csv + train/*.jpg, dev.csv + dev/*.jpg (labels 0..classes-1)."""
    for split, n in (("train", per_class), ("dev", dev_per_class)):
        (root / split).mkdir(parents=True)
        rows = []
        for c in range(classes):
            for i in range(n):
                img = Image.new("RGB", (60 + 3 * i, 40), (20 * c, 40 + 10 * i, 200 - 15 * c))
                ImageDraw.Draw(img).rectangle([5 + i, 8, 25 + 3 * c, 30], fill=(250 - 20 * c, 30 * (c % 3), 90))
                name = f"{split}/{c:03d}{i:02d}.jpg"
                img.save(root / name, quality=50)
                rows.append((name, c, f"Make{c % 3} Model{c} Sedan 20{10 + c}"))
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "class_name"])
            w.writerows(rows)
    return root


def _wheel(folder: Path) -> Path:
    """A real (tiny) wheel, so staging runs the same pip command it runs on the GPU machine."""
    files = {"lease_probe/__init__.py": b"VALUE = 42\n",
             "lease_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: lease-probe\nVersion: 1.0\n",
             "lease_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}\n"
                     for n, b in files.items()) + "lease_probe-1.0.dist-info/RECORD,,\n"
    path = folder / "lease_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
        z.writestr("lease_probe-1.0.dist-info/RECORD", record)
    return path


def test_pack_stage_run_unpack_dry_run(tmp_path):
    from benchmarks import gpu_lease

    data = _dataset(tmp_path / "cars")
    wheel = _wheel(tmp_path)
    lease_dir, machine, back, here = tmp_path / "lease", tmp_path / "machine", tmp_path / "back", tmp_path / "here"
    plan = gpu_lease.main(["pack", "--data", str(data), "--out", str(lease_dir), "--dry-run", "--part-mib", "0.02",
                           "--wheels", str(wheel), "--classes", "10", "--jobs", "1"])
    assert plan["parts"] >= 2 and plan["train_photos"] == 40 and plan["dev_photos"] == 20
    parts = sorted(p for p in lease_dir.iterdir() if p.is_dir())
    assert len(parts) == plan["parts"] and all(
        sum(f.stat().st_size for f in p.iterdir() if f.name != "part.json") <= 0.02 * 2**20 for p in parts)
    with pytest.raises(SystemExit, match="parts"):  # run refuses a partly staged lease, before any work
        gpu_lease.stage(gpu_lease.argparse.Namespace(part=str(parts[0]), into=str(machine)))
        gpu_lease.main(["run", "--lease", str(machine), "--out", str(back), "--dry-run"])
    for p in parts[1:]:
        gpu_lease.main(["stage", str(p), "--into", str(machine)])
    assert (machine / "site" / "lease_probe" / "__init__.py").is_file()  # installed by pip from the carried wheel
    assert len(list((machine / "data" / "train").glob("*.webp"))) == 40

    results = gpu_lease.main(["run", "--lease", str(machine), "--out", str(back), "--dry-run", "--time-limit", "120"])
    assert {k: v["rc"] for k, v in results["train"].items()} == {"all": 0, "ow": 0}, (back / "logs.txt").read_text()
    assert results["eval_runs"]["evaluate"]["rc"] == 0, (back / "logs.txt").read_text()
    assert results["train"]["ow"]["classes"] == 8 and results["train"]["all"]["classes"] == 10
    assert results["dev"]["ow_dev"]["ood"]["n_unknown"] == 4  # dev photos of held-out classes 4 and 9
    assert results["dev"]["all_dev"]["n_queries"] == 20 and results["latency"]["predict_batch1_ms"] > 0
    returned = sorted(f.name for f in back.iterdir())
    assert len(returned) <= 8 and all(f.stat().st_size < 16 * 2**20 for f in back.iterdir())
    assert {"results.json", "logs.txt", "all.zip.000", "ow.zip.000"} <= set(returned)

    loaded = gpu_lease.main(["unpack", "--from", str(back), "--dest", str(here)])
    assert loaded["all"]["gallery"] == 40 and loaded["ow"]["classes"] == 8
    assert json.loads((here / "results.json").read_text())["dry_run"] is True
