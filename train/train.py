"""Train a vericar embedding model with accelerate.

    accelerate launch train/train.py --config train/configs/offline-cpu.yaml --data ../shared/data/stanford_cars/train.csv --output-dir OUT
    python train/train.py ...            # the same, one process; from any folder (path/to/repo/train/train.py)
    accelerate launch --multi_gpu --num_processes 4 train/train.py --config train/configs/offline-gpu.yaml ...
    python -m train.train ...            # the module form, from the repository root, works too

Writes OUT/ as a vericar artifact (config.json, model.safetensors, gallery, README.md model card,
training_curve.png, metrics.csv, train_config.yaml) that ``vericar.load("local-dir:OUT")`` and the
app use; ``--push-to-hub ORG/NAME`` uploads it (main process only). SIGTERM, SIGINT or
``--time-limit SECONDS`` stop training at the next step; the artifact is written all the same.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

if __name__ == "__main__" and not __package__:  # run as a file (accelerate launch train/train.py): Python put
    import os as _os, sys as _sys  # train/ first on the path, where `train` is train.py; the repository instead
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [_os.path.dirname(_here)] + [p for p in _sys.path if _os.path.abspath(p or ".") != _here]

from train.artifact import write_artifact
from train.config import parse_args
from train.errors import cli
from train.loop import end_epoch, fit_to_time_limit, train_epoch
from train.steps import build_model, load_data, planned_epochs, prepare_training, resume, start
from vericar._infra.runtime import tune_malloc


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, then write the artifact; returns its validation metrics, history and wall seconds."""
    t_start = time.time()
    cfg = parse_args(argv)
    tune_malloc()  # before the first big allocation: ~1.5x faster CPU steps (vericar/_infra/runtime.py)
    run = start(cfg, t_start)  # accelerator, seed, output folder, SIGTERM / SIGINT / --time-limit
    try:
        load_data(run)  # holdout, stratified validation slice, photos decoded once into RAM (uint8)
        build_model(run)  # backbone + head, frozen stages or the cached trunk (CPU path), losses
        prepare_training(run)  # m-per-class loader, AdamW, warm-up + cosine; accelerator.prepare
        resume(run)  # --resume: accelerate's state + ours (epoch, best weights, history)
        stopped = run.stopper.reason if run.stopper.should_stop(run.accelerator) else None  # every process agrees
        epoch = first = run.state["epoch"]
        while epoch < planned_epochs(run) and not stopped:  # --fit-to-time-limit may lower the plan
            t_epoch = time.monotonic()
            row, stopped = train_epoch(run, epoch)  # ends at the next step on a stop
            if end_epoch(run, epoch, row, stopped):  # validate, best weights, checkpoint
                stopped = stopped or "early stop"
                break
            if cfg.fit_to_time_limit and epoch < first + 2:  # the 1st epoch pays for warm-ups: look twice
                fit_to_time_limit(run, epoch, time.monotonic() - t_epoch)
            epoch += 1
        result = write_artifact(run, argv, stopped)  # best weights → gallery, calibration, card; push
    finally:
        run.stopper.restore()
    run.accelerator.end_training()
    return result


if __name__ == "__main__":
    cli(main)
