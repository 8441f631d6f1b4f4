"""A stopped run still ships: SIGTERM to a training process, or --time-limit, leaves a loadable artifact."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_train import NAMES, _args, _photo, tiny_csv  # noqa: F401  (tiny_csv is a fixture)
from train.train import main

ROOT = Path(__file__).resolve().parents[1]
FOREVER = ("--epochs", "100000", "--patience", "100000")  # only a stop ends these runs


def test_time_limit_stops_training_and_writes_the_artifact(tiny_csv, tmp_path):
    import vericar

    out = tmp_path / "tl"
    before = signal.getsignal(signal.SIGTERM)  # another library (Ray) may have set one earlier in this process
    t0 = time.time()
    r = main(_args(tiny_csv, out, *FOREVER, "--time-limit", "4"))
    assert r["stopped"].startswith("time limit") and time.time() - t0 < 60
    assert len(r["history"]) >= 1 and "val_top1_model" in r["history"][-1]  # the last, partial epoch is validated
    rec = vericar.load(f"local-dir:{out}")
    assert len(rec.gallery) == 24 and rec.ood.threshold is not None
    assert rec.meta["stopped"].startswith("time limit") and "stopped (time limit" in (out / "README.md").read_text()
    assert (out / "checkpoints" / "last" / "trainer_state.yaml").is_file()
    assert signal.getsignal(signal.SIGTERM) is before  # main() put the handler back


def test_sigterm_stops_training_at_the_next_step_and_the_artifact_loads(tiny_csv, tmp_path):
    import vericar

    out = tmp_path / "sig"
    cmd = [sys.executable, "-u", "-m", "train.train", *_args(tiny_csv, out, *FOREVER)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines = []
    try:
        for line in proc.stdout:  # wait until it has trained and validated one epoch
            lines.append(line)
            if line.startswith("epoch 2:"):
                break
        else:
            raise AssertionError("training ended before the signal:\n" + "".join(lines))
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 0, log
    assert "stopped: SIGTERM" in log and "wrote" in log
    rec = vericar.load(f"local-dir:{out}")
    assert rec.meta["stopped"] == "SIGTERM" and rec.meta["epochs_done"] >= 2
    assert len(rec.gallery) == 24 and rec.predict(_photo(1, 1)).label in NAMES
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["meta"]["train_config"]["epochs"] == 100000
    # the checkpoint it left resumes (here: one more epoch, then the artifact again)
    epochs = rec.meta["epochs_done"]
    r = main(_args(tiny_csv, out, "--epochs", str(epochs + 1), "--resume", "auto"))
    assert [h["epoch"] for h in r["history"]][-1] == epochs + 1 and r["stopped"] is None


def test_fit_to_time_limit_shortens_the_plan_and_its_schedule(tiny_csv, tmp_path):
    """With --fit-to-time-limit the run plans the epochs that fit (not 100,000) and anneals the
    learning rate over them, instead of being cut off at a high one."""
    import vericar

    out = tmp_path / "fit"
    r = main(_args(tiny_csv, out, *FOREVER, "--time-limit", "10", "--fit-to-time-limit", "true"))
    rec = vericar.load(f"local-dir:{out}")
    planned = rec.meta["epochs_planned"]
    assert 2 <= planned < 1000 and rec.meta["epochs_done"] <= planned
    lrs = [h["lr"] for h in r["history"]]
    assert lrs[-1] < lrs[0]
    if r["stopped"] is None:  # finished the plan before the limit: annealed to ~0
        assert rec.meta["epochs_done"] == planned and lrs[-1] < 0.05 * max(lrs)
