"""The API's inputs: a payload of the wrong shape gets a message that says what to send.

Gradio validates what a client sent with the component's pydantic ``data_model`` before any of the
app's code runs (gradio/blocks.py preprocess_data), and a ValidationError there reached the client
as "The upstream Gradio app has raised an exception but has not enabled verbose error reporting".
Each input here is a plain gr.File / gr.Number instance (a subclass would be a custom component the
browser cannot load) with, set on the instance:

- ``data_model``: Gradio's own model, whose ``model_validate`` turns a ValidationError into gr.Error;
- ``api_info`` of a list of files: the schema with its ``$ref``s inlined. Gradio's MCP bridge
  (gradio/mcp.py simplify_filedata_schema) turns a single file's schema into "a URL" but left the
  list's ``items`` as ``{"$ref": "#/$defs/FileData"}`` with no ``$defs`` where the ref points, so
  the MCP server, which checks each call against the schema, failed every /enroll call;
- ``data:`` URLs as a list's items: the bridge turns a URL into a file for a single file only (it
  looks for the schema's ["images", "items"] among the call's ["images", 0], ...), so a list of
  files reaches the app as a list of strings. A base64 ``data:`` URL carries the photo itself and is
  decoded (then handled as an upload: removed after the request). An http(s) URL in a list is
  refused, never fetched, in either shape (a string, or a file object whose path is the URL, which
  Gradio itself would fetch): one small request must not make the server download up to 32 files
  before any rate limit or check has run;
- a cap on the file objects in a payload, checked before Gradio moves or fetches any of them
  (``guard_file_counts``): one for a single file (Gradio fetches a file given by http(s) URL, as it
  does in any app: MCP tools pass photos so), ``MAX_ENROL_PHOTOS`` for a list.
"""
from __future__ import annotations

import copy
import math
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import gradio as gr
from gradio import processing_utils
from gradio.context import LocalContext
from gradio.data_classes import FileData, ListFiles
from gradio.utils import NamedString
from gradio_client import utils as client_utils
from pydantic import BaseModel, ValidationError

from vericar.ui.enrolled import MAX_ENROL_PHOTOS
from vericar.ui.labels import html_text
from vericar.ui.webui import user_message

MAX_K = 50
_DATA_URL = "data:"
_HTTP = ("http://", "https://")


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``{"$ref": "#/$defs/X"}`` replaced by a copy of X (and no ``$defs`` left)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [resolve(x, seen) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs and ref not in seen:
            rest = {k: v for k, v in node.items() if k != "$ref"}  # a ref's siblings win over the definition
            return resolve({**copy.deepcopy(defs[ref[8:]]), **rest}, seen + (ref,))
        return {k: resolve(v, seen) for k, v in node.items() if k != "$defs"}

    return resolve(schema)


def _received(obj: Any) -> str:
    """What a client sent, in a few words (text shortened, HTML-escaped: the page renders errors as HTML)."""
    if isinstance(obj, list):
        items = f"a list of {len(obj)} item{'s' * (len(obj) != 1)}"
        for i, x in enumerate(obj):  # name the first item that is not a file (a nested list: the count only)
            if not isinstance(x, list) and not client_utils.is_file_obj_with_meta(_as_file(x)):
                return f"{items}, item {i + 1} being {_received(x)}"
        return items
    if isinstance(obj, dict):
        return "one file" if client_utils.is_file_obj_with_meta(obj) else "an object that is not a file"
    if isinstance(obj, str):
        short = obj if len(obj) <= 60 else obj[:57] + "..."
        return f"the text '{html_text(short)}' (a path is uploaded only when wrapped in handle_file)"
    return f"a {type(obj).__name__}"


def _as_file(item: Any) -> Any:
    """A data: URL as a file payload (decoded in ``preprocess``); anything else as it is."""
    if isinstance(item, str) and item.startswith(_DATA_URL):
        return {"path": item, "orig_name": None, "meta": {"_type": "gradio.FileData"}}
    return item


def _checked(model: type[BaseModel], expected: str, urls: bool) -> type[BaseModel]:
    """``model`` whose validation failure is gr.Error("<expected>; got <what was sent>.")."""

    class Checked(model):  # type: ignore[valid-type, misc]
        @classmethod
        def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
            sent = obj
            if urls and isinstance(obj, list):
                if len(obj) > MAX_ENROL_PHOTOS:  # before any data: URL in it is decoded
                    raise gr.Error(_too_many(len(obj), MAX_ENROL_PHOTOS), print_exception=False)
                obj = [_as_file(x) for x in obj]
            try:
                return super().model_validate(obj, *args, **kwargs)
            except ValidationError as e:
                raise gr.Error(f"{expected}; got {_received(sent)}.", print_exception=False) from e

    return Checked


def decode(url: str, cache_dir: str) -> str:
    """The photo in a base64 data: ``url``, saved in Gradio's cache as an upload (removed after the
    request that uses it, vericar.ui.tempfiles); gr.Error saying why not."""
    blocks = LocalContext.blocks.get(None)
    cap = getattr(blocks, "max_file_size", None) or math.inf
    if len(url) * 3 // 4 > cap:
        raise gr.Error(f"a data: URL holds more than the {cap} bytes one upload may have; send a smaller photo.",
                       print_exception=False)
    try:
        path = processing_utils.save_base64_to_cache(url, cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure to decode is the client's to fix, said as such
        why = html_text(user_message(str(e)))
        raise gr.Error(f"Could not decode a data: URL ({why}); send data:image/jpeg;base64,<the photo's bytes in "
                       "base64>.", print_exception=False) from e
    uploads = getattr(blocks, "upload_file_set", None)
    if uploads is not None:
        uploads.update([path])  # reported as an upload: deleted once no request uses it
    return path


def _no_fetch(component: gr.File) -> None:
    """``component`` refuses a file object whose path is an http(s) URL instead of fetching it."""
    plain = component.async_move_resource_to_block_cache

    async def move(url_or_file_path: Any) -> Any:
        if isinstance(url_or_file_path, str) and url_or_file_path.startswith(_HTTP):
            raise gr.Error("A list of photos takes uploaded files (handle_file('car.jpg') with gradio_client) or "
                           "base64 data: URLs (MCP clients); an http(s) URL in a list is not fetched.",
                           print_exception=False)
        return await plain(url_or_file_path)

    component.async_move_resource_to_block_cache = move  # type: ignore[method-assign]


def _too_many(n: int, limit: int) -> str:
    """Why a payload of ``n`` file objects is refused by an input that takes ``limit``."""
    if limit == 0:
        return f"This input takes text or a number, not files; got {n} file{'s' * (n != 1)}."
    if limit == 1:
        return f"{n} files were sent where one photo is accepted; send one photo per request."
    return f"{n} photos is more than the {limit} accepted at once; pick the best few."


def guard_file_counts() -> None:
    """Check each limited input's count of file objects before Gradio moves (or fetches) any of them.

    Gradio moves every file object it finds in any input's payload into its cache (a text box's
    too), fetching those given by URL, before the component's model rejects a payload of the wrong
    shape: 1,000 file objects sent for one photo, or as a label, would be 1,000 fetches. Installed
    once, process-wide; blocks without ``vericar_max_files`` (see ``limit_file_inputs``) are untouched.
    """
    plain = processing_utils.async_move_files_to_cache
    if getattr(plain, "vericar_guard", False):
        return

    async def move(data: Any, block: Any, *args: Any, **kwargs: Any) -> Any:
        limit = getattr(block, "vericar_max_files", None)
        if limit is not None and not kwargs.get("postprocess") and not (args and args[0]):
            found: list[Any] = []
            client_utils.traverse(data, found.append, client_utils.is_file_obj_with_meta)
            if len(found) > limit:
                raise gr.Error(_too_many(len(found), limit), print_exception=False)
        return await plain(data, block, *args, **kwargs)

    move.vericar_guard = True  # type: ignore[attr-defined]
    processing_utils.async_move_files_to_cache = move


def limit_file_inputs(demo: gr.Blocks) -> None:
    """Give every input of ``demo``'s events a file limit (and install the guard): its own if set
    (``FileInput``: 1 or ``MAX_ENROL_PHOTOS``), one for an image, none for anything else, so no
    request to this app, API or page event, makes Gradio fetch more than one URL per photo input."""
    for fn in demo.fns.values():
        for block in fn.inputs:
            if getattr(block, "vericar_max_files", None) is None:
                block.vericar_max_files = 1 if isinstance(block, gr.Image) else 0
    guard_file_counts()


def FileInput(**kwargs: Any) -> gr.File:  # noqa: N802 - used like a component class
    """A ``gr.File`` (type "filepath") that passes on the upload's path and nothing else.

    Gradio 6.31's gr.File(type="filepath") makes an empty NamedTemporaryFile in its cache for every
    file it preprocesses and never removes it (no temp-file set holds it, so not even
    ``delete_cache`` does): one leaked file per photo per request. Its type check is kept. A payload
    of the wrong shape gets a message naming what to send (see the module docstring).
    """
    kwargs.update(type="filepath")
    component = gr.File(**kwargs)
    plain, name = component._process_single_file, kwargs.get("label") or "file"
    many = component.file_count != "single"
    # Gradio's schema, kept as the API's (the model below would rename it); a list's with its refs inlined.
    schema = inline_refs(component.api_info()) if many else component.api_info()
    component.api_info = lambda: copy.deepcopy(schema)  # type: ignore[method-assign]
    if many:
        expected = (f"`{name}` must be a list of files: [handle_file('car.jpg'), ...] with gradio_client, or a "
                    "list of the photos as base64 data: URLs from an MCP client")
    else:
        expected = (f"`{name}` must be one file: handle_file('car.jpg') with gradio_client, or the photo's "
                    "http(s) URL from an MCP client")
    component.data_model = _checked(ListFiles if many else FileData, expected, urls=many)
    component.vericar_max_files = MAX_ENROL_PHOTOS if many else 1  # read by guard_file_counts
    if many:
        _no_fetch(component)

    def process(payload: Any) -> Any:
        if payload.path.startswith(_DATA_URL):  # a data: URL sent as a list item (_as_file): decoded here
            payload = payload.model_copy(update={"path": decode(payload.path, component.GRADIO_CACHE)})
        if component.file_types and not client_utils.is_valid_file(payload.path, component.file_types):
            return plain(payload)  # Gradio's own "Invalid file type" error
        return NamedString(payload.path)

    component._process_single_file = process
    return component


def CountInput(**kwargs: Any) -> gr.Number:  # noqa: N802 - used like a component class
    """A ``gr.Number`` for k: a whole number from 1 to ``MAX_K``; anything else is gr.Error saying so.

    gr.Number's own preprocess compares and rounds whatever came, so "abc" raised a TypeError that
    the client saw as the opaque "upstream Gradio app has raised an exception".
    """
    kwargs.update(precision=0)
    number = gr.Number(**kwargs)
    name = kwargs.get("label") or "k"

    def preprocess(payload: Any) -> int | None:
        if payload is None:
            return None
        try:
            value = Decimal(str(payload)) if not isinstance(payload, bool) else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value != value.to_integral_value() or not 1 <= value <= MAX_K:
            shown = html_text(str(payload)[:40])
            raise gr.Error(f"{name} must be a whole number between 1 and {MAX_K} (e.g. 5); got {shown}.",
                           print_exception=False)
        return int(value)

    number.preprocess = preprocess  # type: ignore[method-assign]
    return number
