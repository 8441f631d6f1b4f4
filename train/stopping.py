"""Stopping a run cleanly: SIGTERM / SIGINT or a wall-clock limit end training at the next step.

A scheduler's time limit, ``kill``, Ctrl-C or ``--time-limit SECONDS`` then still leaves a whole
artifact (the best weights so far + gallery + calibration + card) and a checkpoint to resume from.
A second signal of the same kind is not caught: it stops the process the usual way.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def ignore_sigint(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group; only the main process
    must act on it (a worker killed by it would break the batch the main process is waiting for)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopSignal:
    """Set by SIGTERM / SIGINT or by passing ``time_limit`` seconds; read once per training step."""

    def __init__(self, time_limit: float | None = None) -> None:
        self.deadline = time.monotonic() + time_limit if time_limit else None
        self.time_limit = time_limit
        self.reason: str | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> "StopSignal":
        """Catch SIGTERM and SIGINT (main thread only: elsewhere Python cannot, so they stay as they are)."""
        try:
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. called from a worker thread)
            self._old.clear()
        return self

    def restore(self) -> None:
        """Put the previous handlers back (main() may run again in the same process, e.g. in tests)."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.reason == signal.Signals(signum).name:  # the second one: stop now, the usual way
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        self.reason = signal.Signals(signum).name

    def local(self) -> bool:
        """True once this process got a signal or passed the deadline."""
        if self.reason is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = f"time limit ({self.time_limit:g} s)"
        return self.reason is not None

    def should_stop(self, accelerator: Any) -> bool:
        """Whether to stop after this step; with several processes every one decides the same (a
        collective), so none waits forever in the next all-reduce for one that left."""
        stop = self.local()
        if accelerator.num_processes > 1:
            flag = torch.tensor([1.0 if stop else 0.0], device=accelerator.device)
            stop = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
            if stop and self.reason is None:
                self.reason = "another process stopped"
        return stop

    @property
    def by_signal(self) -> bool:
        return self.reason is not None and self.reason.startswith("SIG")
