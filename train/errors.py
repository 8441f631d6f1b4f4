"""The training side's error, and the one place where a command line turns errors into an exit.

Importable code raises; only ``cli`` (called under ``if __name__ == "__main__"``) ends the process,
with the message alone (no traceback) and exit status 1.
"""
from __future__ import annotations

from typing import Any, Callable

from vericar.core.errors import VericarError


class TrainError(VericarError):
    """A training setting, checkpoint or artifact cannot be used; the message says what to do."""


def cli(main: Callable[[], Any]) -> Any:
    """Run a command's ``main``; a ``TrainError`` exits with its message, another ``VericarError``
    with ``error: `` before it (as the commands have always printed them)."""
    try:
        return main()
    except TrainError as e:
        raise SystemExit(str(e)) from None
    except VericarError as e:
        raise SystemExit(f"error: {e}") from None
