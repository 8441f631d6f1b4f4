"""Gradio pieces of the app that are more than wiring: checked photo uploads and readable errors.

Gradio's own image preprocessing opens an upload with PIL before the app sees it, so a non-image,
an empty file or a decompression bomb failed there with a bare red "Error" badge. ``PhotoInput``
is a ``gr.Image`` (same browser widget) whose server side checks the upload with vericar's
``open_image`` first and answers with the same message the API gives; ``user_message`` keeps
server paths (``/tmp/gradio/<hash>/...``) out of every message a visitor reads.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from .errors import VericarError
from .images import open_image

#: Where Gradio keeps uploads and outputs ($GRADIO_TEMP_DIR, else <tmp>/gradio).
GRADIO_CACHE = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
# A server path inside Gradio's cache (or any absolute temp path): replaced by its file name.
_SERVER_PATH = re.compile(r"(?:%s|/tmp|/var/tmp)/[^\s'\"),;]*" % re.escape(GRADIO_CACHE.rstrip("/")))
#: How long Gradio keeps a file it cached (uploads, overlays), and how often it sweeps: (every, age) s.
DELETE_CACHE = (600, 900)


def user_message(text: str) -> str:
    """``text`` with every server path replaced by the file's own name."""
    return _SERVER_PATH.sub(lambda m: Path(m.group(0).rstrip(".:")).name or "the upload", str(text))


def open_upload(path: Any, name: str | None = None) -> Any:
    """The photo at ``path`` as a PIL image; else gr.Error naming the file (never the server path).

    The file is read as bytes, so ``open_image``'s message describes the data, not where it was kept.
    """
    if not path:
        raise gr.Error("No photo was given; upload a JPEG/PNG/WebP photo of a vehicle and try again.",
                       print_exception=False)
    try:
        return open_image(Path(path).read_bytes())
    except (VericarError, OSError) as e:
        shown = name or Path(str(path)).name
        raise gr.Error(user_message(f"{shown}: {e}").replace("The image data", "The upload"),
                       print_exception=False) from e


def check_upload(path: Any, name: str | None = None) -> str:
    """``path`` when it holds a usable photo (see ``open_upload``)."""
    open_upload(path, name)
    return str(path)

from gradio.events import Dependency

class PhotoInput(gr.Image):
    """``gr.Image`` (type "filepath") whose uploads are checked by vericar before anything opens them."""

    is_template = True  # the browser shows the plain gr.Image widget...

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Image.get_component_class_id()  # ...which the page looks up by gr.Image's class id

    def __init__(self, **kwargs: Any) -> None:
        kwargs.update(type="filepath", image_mode=None)
        super().__init__(**kwargs)

    def preprocess(self, payload: Any) -> str | None:
        """The uploaded file's path, after ``check_upload``; data: URLs go through gr.Image first."""
        if payload is None:
            return None
        if getattr(payload, "path", None) is None:
            return check_upload(super().preprocess(payload))
        return check_upload(payload.path, getattr(payload, "orig_name", None))
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component
