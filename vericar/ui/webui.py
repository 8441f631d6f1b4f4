"""Gradio pieces of the app that are more than wiring: its settings, checked photo uploads, readable errors.

Gradio's own image preprocessing opens an upload with PIL before the app sees it, so a non-image,
an empty file or a decompression bomb failed there with a bare red "Error" badge. ``PhotoInput``
is a ``gr.Image`` (same browser widget) whose server side checks the upload with vericar's
``open_image`` first and answers with the same message the API gives; ``user_message`` keeps
server paths (``/tmp/gradio/<hash>/...``) out of every message a visitor reads.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import gradio as gr

from vericar.attributes.plates import PLATE_MODES
from vericar.core.errors import SpecError, VericarError
from vericar.ui.enrolled import EnrolledStore
from vericar.ui.tempfiles import RequestFiles
from vericar.ui.visitors import LocalVehicles, SessionVehicles, parse_rate, public_mode
from vericar.vision.images import open_image

#: Where Gradio keeps uploads and outputs ($GRADIO_TEMP_DIR, else <tmp>/gradio).
GRADIO_CACHE = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
# A server path inside Gradio's cache (or any absolute temp path): replaced by its file name.
_SERVER_PATH = re.compile(r"(?:%s|/tmp|/var/tmp)/[^\s'\"),;]*" % re.escape(GRADIO_CACHE.rstrip("/")))
#: How long Gradio keeps a file it cached (uploads, overlays), and how often it sweeps: (every, age) s.
DELETE_CACHE = (600, 900)
MAX_UPLOAD = "25mb"  # per file; a phone photo is a few MB, and enrolment takes at most 32 of them


@dataclasses.dataclass(frozen=True)
class AppSettings:
    """Everything the app is configured with; ``from_env`` reads the $VERICAR_* variables."""

    model: str = "default"  # a model spec: "default", "local-dir:PATH", "hf-hub:ORG/NAME"
    detector: str | None = None  # None: the model's own vehicle detector
    data_dir: str | None = None  # None: vericar.ui.enrolled.default_data_dir()
    gallery_images: str | None = None  # a dataset copy or hf-dataset:ORG/NAME: similar vehicles as photos
    public: bool = False  # each visitor's vehicles belong to their session (vericar.ui.visitors)
    admin_token: str | None = None  # public mode: changes to the shared gallery need it
    write_rate: tuple[int, float] = (10, 60.0)  # public mode: additions + removals per session per seconds
    read_rate: tuple[int, float] = (60, 60.0)  # public mode: requests per session per seconds
    mcp: bool = False  # also serve Gradio's MCP server
    concurrency: int = 2  # model calls at once, across all events
    queue_size: int = 256
    max_upload: str = MAX_UPLOAD
    delivery_s: float = 30.0  # how long an answer's files stay for the client to fetch them
    # Licence plates: "read" (text in every answer), "blur" (hidden in every image shown or stored,
    # no text) or "off" (not looked for). None: "blur" in public mode, "read" locally (docs/plates.md).
    plates: str | None = None

    def __post_init__(self) -> None:
        if self.plates is not None and self.plates not in PLATE_MODES:
            raise SpecError(f"plates must be one of {', '.join(PLATE_MODES)} (--plates / $VERICAR_PLATES), got "
                            f"{self.plates!r}; e.g. --plates blur to hide plates in every image.")

    @property
    def plates_mode(self) -> str:
        """The plate setting in force: the one given, else "blur" on a public demo and "read" locally."""
        return self.plates or ("blur" if self.public else "read")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> "AppSettings":
        """Settings from ``env`` (default os.environ); keyword arguments that are not None win."""
        env = os.environ if env is None else env
        read = {
            "model": env.get("VERICAR_MODEL") or None, "detector": env.get("VERICAR_DETECTOR") or None,
            "data_dir": env.get("VERICAR_DATA_DIR") or None,
            "gallery_images": env.get("VERICAR_GALLERY_IMAGES") or None,
            "public": public_mode(env),
            "admin_token": env.get("VERICAR_ADMIN_TOKEN") or None,
            "write_rate": parse_rate(env.get("VERICAR_WRITE_RATE"), cls.write_rate),
            "read_rate": parse_rate(env.get("VERICAR_READ_RATE"), cls.read_rate),
            "mcp": (env.get("VERICAR_MCP") or "").strip().lower() in {"1", "true", "yes"},
            "concurrency": int(env.get("VERICAR_CONCURRENCY") or cls.concurrency),
            "queue_size": int(env.get("VERICAR_QUEUE_SIZE") or cls.queue_size),
            "max_upload": env.get("VERICAR_MAX_UPLOAD") or None,
            "delivery_s": float(env.get("VERICAR_DELIVERY_S") or cls.delivery_s),
            "plates": (env.get("VERICAR_PLATES") or "").strip().lower() or None,
        }
        merged = {k: v for k, v in read.items() if v is not None}
        merged.update((k, v) for k, v in given.items() if v is not None)
        if "data_dir" in merged:
            merged["data_dir"] = str(merged["data_dir"])
        return cls(**merged)


@dataclasses.dataclass
class VericarApp:
    """The built app: the Blocks to serve and the state its events share (for callers and tests)."""

    demo: gr.Blocks
    vehicles: LocalVehicles | SessionVehicles
    files: RequestFiles
    settings: AppSettings

    @property
    def store(self) -> EnrolledStore:
        """The persistent store of enrolled vehicles (the shared one in public mode)."""
        return self.vehicles.store

    def launch(self, **kwargs: Any) -> Any:
        """``demo.launch`` with this app's launch options (``kwargs`` win)."""
        return self.demo.launch(**{**launch_options(self.settings), **kwargs})

    def close(self) -> None:
        """Stop serving and free the data folder (its store's lock) for another app in this process."""
        self.demo.close()
        self.store.close()


def launch_options(settings: AppSettings | None = None) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch()``: the upload cap, and Gradio's MCP server when asked for.

    They can only be given to launch(): Blocks.launch() overwrites any max_file_size set on the
    Blocks beforehand. ``settings`` default: AppSettings.from_env().
    """
    settings = settings or AppSettings.from_env()
    opts: dict[str, Any] = {"max_file_size": settings.max_upload}
    if settings.mcp:
        opts["mcp_server"] = True  # LLM agents call /identify, /similar, ... as MCP tools (needs gradio[mcp])
    return opts


def user_errors(fn: Callable) -> Callable:
    """Turn library errors (they say what to do) into gr.Error so the user sees them; server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (VericarError, ValueError) as e:  # ValueError: taxonomy.vehicle_label's form checks
            raise gr.Error(user_message(str(e)), print_exception=False) from e

    return wrapper


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
