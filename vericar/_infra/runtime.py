"""Private process tuning for CPU inference and training: keep glibc from returning memory to the OS.

glibc's malloc serves every block over its mmap threshold (128 KiB to 32 MiB) with a fresh
``mmap`` and gives it back on ``free``. A CNN allocates and frees activations of tens of MB on
every batch, so each batch page-faults all of that memory in again: on the 2-core machine this
project measures on, a Lite2 forward pass spent more time in the kernel than in PyTorch
(1.14 s a batch of 32 at 224 px → 0.52 s tuned; a training step 4.4 s → 2.9 s; see
``benchmarks/malloc_tuning.py``). Keeping freed memory in the process (what tcmalloc and
jemalloc do by design) removes that cost; the price is that the process keeps its peak size.
"""
from __future__ import annotations

import ctypes
import os

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_tuned: bool | None = None

OPT_OUT_ENV = "VERICAR_NO_MALLOC_TUNING"


def tune_malloc() -> bool:
    """Make glibc keep freed memory for reuse (idempotent); returns whether it was applied.

    Does nothing (returns False) off glibc, or when ``$VERICAR_NO_MALLOC_TUNING`` is set, or
    when tcmalloc / jemalloc / mimalloc is preloaded (``LD_PRELOAD``). Process-wide: entry points
    (train.py, ``python -m vericar.evaluate``, ``python app.py``) call it, the library does not.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get(OPT_OUT_ENV) or any(a in preload for a in ("tcmalloc", "jemalloc", "mimalloc")):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        libc = ctypes.CDLL("libc.so.6")
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, Windows, musl)
        return False
    results = [
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_MAX, 0),  # large blocks come from the heap, which is reused, not from mmap
            (_M_TRIM_THRESHOLD, 2**31 - 1),  # never shrink the heap after a batch frees its activations
            (_M_TOP_PAD, 256 * 2**20),  # grow it in big steps
            (_M_ARENA_MAX, 1),  # other threads' arenas are mmap-backed heaps: new threads share the main one
        )
    ]
    _tuned = all(results)
    return _tuned
