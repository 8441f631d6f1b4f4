"""Crash-safe checkpoint folders: each epoch saves into ``next/``, then it is swapped in as ``last/``."""
from __future__ import annotations

import shutil
from pathlib import Path

MARKER = "trainer_state.yaml"  # written last into a checkpoint folder: its presence means complete


def swap_in(new: Path, last: Path) -> None:
    """Make the complete checkpoint ``new`` the ``last`` one with two renames.

    ``last`` is first renamed to ``prev``; a crash between the renames leaves ``prev`` (whole),
    which ``latest_checkpoint`` falls back to. ``prev`` is deleted only once ``last`` is in place.
    """
    prev = last.with_name("prev")
    if last.exists():
        shutil.rmtree(prev, ignore_errors=True)
        if prev.exists():
            raise OSError(f"could not remove the old checkpoint {prev}; delete it by hand and resume with --resume auto.")
        last.rename(prev)
    # else a crash left prev as the only whole checkpoint: keep it until last is in place
    new.rename(last)
    shutil.rmtree(prev, ignore_errors=True)


def latest_checkpoint(last: Path) -> Path:
    """``last`` if it is complete, else ``prev`` when a crash interrupted the swap (else ``last``)."""
    prev = last.with_name("prev")
    if not (last / MARKER).is_file() and (prev / MARKER).is_file():
        return prev
    return last
