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


def PhotoInput(**kwargs: Any) -> gr.Image:  # noqa: N802 - used like a component class
    """A ``gr.Image`` (type "filepath") whose uploads are checked by vericar before anything opens them.

    A plain gr.Image instance (the page knows its widget; a subclass would be a custom component
    the browser cannot load) with its ``preprocess`` replaced on the instance.
    """
    kwargs.update(type="filepath", image_mode=None)
    image = gr.Image(**kwargs)
    plain = image.preprocess

    def preprocess(payload: Any) -> str | None:
        if payload is None:
            return None
        if getattr(payload, "path", None) is None:  # a data: URL: gr.Image writes it to a file first
            return check_upload(plain(payload))
        return check_upload(payload.path, getattr(payload, "orig_name", None))

    image.preprocess = preprocess
    return image
