"""Two training processes on the CPU (gloo): the metrics
are gathered across them, only the main process writes the artifact and pushes it, the artifact
loads and holds every photo once, and --resume continues the 2-process run.

``accelerate launch --cpu --num_processes 2`` starts ONE process (its simple launcher; accelerate
1.15): two CPU processes take ``--multi_gpu --num_processes 2`` (torch.distributed.run), and
train.py's Accelerator(cpu=True) on a machine without a GPU then joins them with gloo (MULTI_CPU).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from test_train import NAMES, _args, _photo, tiny_csv  # noqa: F401  (tiny_csv is a fixture)

ROOT = Path(__file__).resolve().parents[1]

# Each process runs this: huggingface_hub.HfApi replaced by a recorder (the Hub is not reachable
# here), then train.py's main. The record says which process pushed what.
LAUNCHER = '''
import json, os, sys
sys.path.insert(0, {root!r})
import huggingface_hub

class RecordingApi:
    def __init__(self, token=None):
        pass
    def _log(self, call, **kw):
        with open(os.environ["PUSH_LOG"], "a") as f:
            f.write(json.dumps({{"call": call, "rank": os.environ.get("RANK"), **kw}}) + "\\n")
    def create_repo(self, repo_id, **kw):
        self._log("create_repo", repo_id=repo_id)
    def upload_folder(self, repo_id, folder_path, **kw):
        self._log("upload_folder", repo_id=repo_id, files=sorted(os.listdir(folder_path)))
        return "https://example.invalid/commit/1"

huggingface_hub.HfApi = RecordingApi
from train.train import main
main()
'''


def _launch(script: Path, args: list[str], env: dict) -> str:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(script), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return p.stdout + p.stderr


def test_two_cpu_processes_train_push_once_load_and_resume(tiny_csv, tmp_path):
    import vericar
    from vericar.evaluation.data import load_csv
    from vericar.evaluate import embed_samples

    script, log, out = tmp_path / "launch_train.py", tmp_path / "push.jsonl", tmp_path / "out"
    script.write_text(LAUNCHER.format(root=str(ROOT)))
    env = {**os.environ, "PUSH_LOG": str(log), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    text = _launch(script, _args(tiny_csv, out, "--epochs", "1", "--push-to-hub", "me/tiny"), env)
    pushes = [json.loads(line) for line in log.read_text().splitlines()]
    assert [p["call"] for p in pushes] == ["create_repo", "upload_folder"] and {p["rank"] for p in pushes} == {"0"}
    assert "config.json" in pushes[1]["files"] and "model.safetensors" in pushes[1]["files"]
    assert text.count("wrote ") == 1  # accelerator.print: the main process only

    rec = vericar.load(f"local-dir:{out}")
    assert rec.meta["processes"] == 2
    samples = load_csv(tiny_csv)
    # Gathered across the processes: every photo once, in order (gather_for_metrics drops the padding
    # an uneven split adds), and each embedding is what vericar.evaluate computes for that photo.
    assert len(rec.gallery) == len(samples) == 24 and len(set(rec.gallery.refs)) == 24
    by_ref = {s.ref: s for s in samples}
    again = embed_samples(rec.model, [by_ref[r] for r in rec.gallery.refs], progress=False, num_workers=0)
    np.testing.assert_allclose(rec.gallery.embeddings, again, atol=5e-4)  # channels-last vs not: ~1e-4
    v = rec.meta["metrics"]["validation"]
    assert v["n_queries"] == 4 and 0.0 <= v["top1"]["model"] <= 1.0  # 1 validation photo per class, none lost or doubled
    assert rec.predict(_photo(0, 2)).label in NAMES

    text = _launch(script, _args(tiny_csv, out, "--epochs", "2", "--resume", "auto"), env)
    assert "resumed from" in text
    rec = vericar.load(f"local-dir:{out}")
    assert rec.meta["epochs_done"] == 2 and len(rec.gallery) == 24
    hist = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert hist == ["1", "2"]


def test_file_form_two_processes_from_another_folder(tiny_csv, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 /path/to/repo/train/train.py ...`, typed as users type it,
    from a folder that is not the repository: trains on two gloo processes and writes an artifact that loads;
    `python /path/to/repo/train/calibrate.py` refits it from there too."""
    import vericar

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": ""}
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", "0", str(ROOT / "train" / "train.py"),
           *_args(tiny_csv, out, "--epochs", "1")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=elsewhere, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    rec = vericar.load(f"local-dir:{out}")
    assert rec.meta["processes"] == 2 and len(rec.gallery) == 24
    assert rec.meta["command"].startswith("python train/train.py")
    assert rec.predict(_photo(1, 3)).label in NAMES

    p = subprocess.run([sys.executable, str(ROOT / "train" / "calibrate.py"), "--artifact", str(out), "--clean-views"],
                       capture_output=True, text=True, env=env, cwd=elsewhere, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    assert vericar.load(f"local-dir:{out}").meta["command"].splitlines()[-1].startswith("python train/calibrate.py")
