"""The Gradio app: its tabs, its API, and how it is built from a recognizer and settings.

``app.py`` (``python app.py``, ``gradio app.py``, a Space) and ``vericar serve`` are thin entry points over
this module: ``create_app(...)`` loads the model and builds a ``VericarApp``; ``main(argv)`` parses the
command line and serves it; ``load_demo()`` gives the page an importer (a Space) serves.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
from gradio.utils import get_upload_folder

from vericar._infra.runtime import tune_malloc
from vericar.artifacts import hub
from vericar.attributes.plate_privacy import plate_stage
from vericar.attributes.plates import PLATE_MODES
from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer
from vericar.ui.enrolled import EnrolledStore, default_data_dir
from vericar.ui.gallery_images import image_source, page_examples
from vericar.ui.handlers import Handlers
from vericar.ui.insights import insights_tab
from vericar.ui.present import model_card
from vericar.ui.tempfiles import RequestFiles
from vericar.ui.api_inputs import CountInput, FileInput, limit_file_inputs
from vericar.ui.compare import compare_api, compare_tab
from vericar.ui.visitors import SessionVehicles, make_vehicles
from vericar.ui.webui import DELETE_CACHE, AppSettings, PhotoInput, VericarApp, launch_options, user_errors

__all__ = ["AppSettings", "VericarApp", "build_app", "create_app", "error_demo", "from_command_line", "launch_options",
           "load_demo", "main"]
log = logging.getLogger("vericar.app")
ERROR_TITLE = "vericar: model not loaded"
PUBLIC_NOTE = ("Add a vehicle the model does not know: a few photos and its name. It is recognised in your next "
               "requests, no retraining. On this public demo the vehicles you add are yours alone (other "
               "visitors never see them, at most 5) and are forgotten when you close the page.")
LOCAL_NOTE = ("Add a vehicle the model does not know: a few photos and its name. It is recognised on the very "
              "next request and kept across restarts; no retraining.")


def _identify_tab(h: Handlers, examples: tuple[list[str], str, str], model_q: dict[str, Any]) -> None:
    """Photo in; the answer, boxes, confidences, similar vehicles and the Grad-CAM++ slider out."""
    paths, examples_label, examples_note = examples
    with gr.Row():
        with gr.Column():
            image = PhotoInput(label="Vehicle photo", sources=["upload", "webcam", "clipboard"], elem_id="vericar-photo")
            go = gr.Button("Identify", variant="primary", elem_id="vericar-identify")
            gr.Examples(examples=[[p] for p in paths], inputs=[image], label=examples_label)
            if examples_note:
                gr.Markdown(examples_note, elem_id="vericar-examples-note")
        with gr.Column():
            found = gr.Image(label="Vehicles found", type="filepath", interactive=False, elem_id="vericar-boxes")
            result = gr.Markdown(elem_id="vericar-result")
            levels = gr.Label(label="Confidence per level", elem_id="vericar-levels", show_heading=False)
            overlay = gr.ImageSlider(label="Grad-CAM++: the photo / what the match rests on", type="filepath",
                                     interactive=False, elem_id="vericar-overlay")
    neighbours = gr.Gallery(label="Most similar known vehicles", columns=6, height=220, object_fit="contain",
                            fit_columns=False, interactive=False, elem_id="vericar-neighbours")
    found_vehicle = gr.State(False)
    go.click(h.ui_identify, [image], [result, levels, neighbours, found, found_vehicle], api_visibility="private",
             **model_q).success(h.ui_explain, [image, found_vehicle], [overlay], api_visibility="private", **model_q)


def _add_tab(h: Handlers, public: bool, model_q: dict[str, Any]) -> tuple[gr.Markdown, gr.Dropdown]:
    """Photos and a name in; the list of added vehicles, with a remove button. Returns (listing, menu)."""
    gr.Markdown(PUBLIC_NOTE if public else LOCAL_NOTE)
    with gr.Row():
        with gr.Column():
            photos = FileInput(label="Photos (2-10 work best)", file_count="multiple", file_types=["image"],
                               elem_id="vericar-photos")
            with gr.Row():
                make, model = gr.Textbox(label="Make"), gr.Textbox(label="Model")
                vtype, year = gr.Textbox(label="Type (e.g. Sedan, SUV)"), gr.Textbox(label="Year")
            free = gr.Textbox(label="…or a free label (overrides the fields)", elem_id="vericar-free")
            add = gr.Button("Add vehicle", variant="primary", elem_id="vericar-add")
        with gr.Column():
            status = gr.Markdown(elem_id="vericar-status")
            listing = gr.Markdown(h.listing_text(), elem_id="vericar-listing")
            pick = gr.Dropdown(label="Added vehicles", choices=[lab for lab, _ in h.vehicles.summary(None)])
            drop = gr.Button("Remove", variant="stop")
    add.click(h.ui_enroll, [photos, free, make, model, vtype, year], [status, listing, pick],
              api_visibility="private", **model_q)
    drop.click(h.ui_remove, [pick], [status, listing, pick], api_visibility="private", **model_q)
    return listing, pick


def _api(h: Handlers, model_q: dict[str, Any]) -> None:
    """API endpoints: hidden components, explicit names (gradio_client: api_name="/identify", ...).

    A payload of the wrong shape (one file for a list, text for a file, k="abc") is answered with
    what to send (vericar.ui.api_inputs), not Gradio's opaque "upstream app has raised an exception".
    """
    with gr.Row(visible=False):
        a_img = FileInput(label="image")
        a_imgs = FileInput(label="images", file_count="multiple")
        a_k = CountInput(label="k", value=5)
        a_label = gr.Textbox(label="label")
        a_json = gr.JSON(label="result")
        a_overlay = gr.Image(label="overlay", type="filepath", format="png")
        trigger = gr.Button()
    trigger.click(h.identify, [a_img], [a_json], api_name="identify", **model_q)
    trigger.click(h.similar, [a_img, a_k], [a_json], api_name="similar", **model_q)
    trigger.click(h.explain, [a_img], [a_overlay], api_name="explain", **model_q)
    trigger.click(h.enroll, [a_imgs, a_label], [a_json], api_name="enroll", **model_q)
    trigger.click(h.remove, [a_label], [a_json], api_name="remove", **model_q)
    compare_api(h, trigger, model_q)
    vehicles = h.vehicles
    if isinstance(vehicles, SessionVehicles):  # the shared gallery changes only with the admin token
        a_token = gr.Textbox(label="token", visible=False)

        def admin_enroll(token: str, images: list[str] | None, label: str) -> dict[str, Any]:
            """Add a vehicle to the shared gallery every visitor sees (needs $VERICAR_ADMIN_TOKEN)."""
            vehicles.check_admin(token)  # before any work on the photos (blurring their plates costs time)
            return vehicles.admin_enroll(token, h.enrol_photos(images, vehicles.store.rec), label)

        def admin_remove(token: str, label: str) -> dict[str, Any]:
            """Remove a vehicle from the shared gallery every visitor sees (needs $VERICAR_ADMIN_TOKEN)."""
            return vehicles.admin_remove(token, label)

        # Callable by gradio_client (api_name="/admin_enroll"), but neither in the API page nor an MCP tool:
        # they are the operator's, and an agent has no use for a tool that always answers "wrong token".
        for fn, inputs in ((admin_enroll, [a_token, a_imgs, a_label]), (admin_remove, [a_token, a_label])):
            trigger.click(user_errors(fn), inputs, [a_json], api_name=fn.__name__, api_visibility="undocumented",
                          **model_q)


def build_app(rec: Recognizer, settings: AppSettings, store: EnrolledStore | None = None) -> VericarApp:
    """The Gradio app over one loaded recognizer, configured by ``settings``; over ``store`` (an open
    EnrolledStore of ``rec``) if given, else a new store in the data dir (one per model folder at a time)."""
    data_dir = Path(settings.data_dir) if settings.data_dir else default_data_dir()
    vehicles = make_vehicles(rec, data_dir, public=settings.public, admin_token=settings.admin_token,
                             write_rate=settings.write_rate, read_rate=settings.read_rate, store=store)
    files = RequestFiles(get_upload_folder(), delivery_s=settings.delivery_s)
    # Photos for the similar-vehicle tiles and real examples: --gallery-images DIR, or the Hub dataset on a Space.
    source = image_source(settings.gallery_images, rec.meta)
    h = Handlers(vehicles, files, source, hide_plates=plate_stage(rec, settings.plates_mode))
    # Every event that runs the model shares one concurrency group, so at most `concurrency` model
    # calls run at once in all (a per-event limit would let identify + explain + similar + ... each
    # take that many, thrashing a small CPU); the rest wait in the queue.
    model_q: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": settings.concurrency}
    card_md, curve = model_card(rec, settings.model)
    with gr.Blocks(title="vericar: vehicle recognition", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# vericar\nOpen-world vehicle recognition: make, model, type and year; unknown "
                    "vehicles are flagged, and new ones can be added without retraining.")
        with gr.Tab("Identify"):
            _identify_tab(h, page_examples(source, data_dir / "examples"), model_q)
        with gr.Tab("Compare"):
            compare_tab(h, model_q)
        with gr.Tab("Add a vehicle"):
            listing, pick = _add_tab(h, vehicles.public, model_q)
        with gr.Tab("Model card"):
            gr.Markdown(card_md, elem_id="vericar-card")
            if curve:
                gr.Image(curve, label="Training curve", interactive=False, elem_id="vericar-curve")
        insights_tab(h)  # per-class figures of the model's dev run (vericar/ui/insights.py)
        _api(h, model_q)
        demo.load(h.enrolled_view, None, [listing, pick], api_visibility="private")  # fresh list per page load
        demo.unload(h.session_ended)  # a closed page: its files go (and, public, its vehicles)
    files.watch_uploads(demo)
    limit_file_inputs(demo)  # no request makes Gradio fetch more than one URL per photo input
    # Events outside the "model" group (the page-load listing) get the same per-event limit.
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    return VericarApp(demo, vehicles, files, settings)


def error_demo(message: str) -> gr.Blocks:
    """A page that explains why the app could not start (its model or its data folder), instead of a crash at import."""
    with gr.Blocks(title=ERROR_TITLE) as demo:
        gr.Markdown(f"# vericar could not start\n\n{message}\n\nIf it is the model that cannot load, set "
                    f"`VERICAR_MODEL` (or pass `--model`) to {hub.SPEC_HELP}, then restart.")
    return demo


def create_app(model: str | None = None, data_dir: str | os.PathLike | None = None,
               gallery_images: str | None = None, detector: str | None = None, **settings: Any) -> VericarApp:
    """Load the model once and build the app around it. Arguments that are not None win over the
    environment (AppSettings.from_env); the vehicle detector is the model's own unless one is named."""
    s = AppSettings.from_env(model=model, data_dir=data_dir, gallery_images=gallery_images, detector=detector,
                             **settings)
    rec = hub.load(s.model, **({"detector": s.detector} if s.detector else {}))
    return build_app(rec, s)


def load_demo() -> gr.Blocks:
    """The app configured by the environment, or a page saying why it could not start."""
    try:
        return create_app().demo
    except VericarError as e:
        log.error("vericar app: %s", e)
        return error_demo(str(e))


def from_command_line(argv: Sequence[str] | None = None, prog: str | None = None) -> VericarApp:
    """``python app.py [options]`` / ``vericar serve [options]``: parse them (each wins over its $VERICAR_* variable) and load the
    model; a model that cannot load raises ``VericarError`` (``__main__`` turns it into an exit)."""
    ap = argparse.ArgumentParser(prog=prog, description="vericar Gradio app")
    ap.add_argument("--model", default=None, help=f"model spec (default $VERICAR_MODEL or 'default'); {hub.SPEC_HELP}")
    ap.add_argument("--data-dir", default=None, help="where added vehicles are kept (default $VERICAR_DATA_DIR)")
    ap.add_argument("--gallery-images", default=None, help="a local copy of the gallery's dataset (e.g. "
                    "../shared/data/stanford_cars) or hf-dataset:ORG/NAME: similar vehicles then show photos "
                    "(default $VERICAR_GALLERY_IMAGES)")
    ap.add_argument("--detector", default=None, help="vehicle detector (default $VERICAR_DETECTOR or the model's): "
                    "'opencv-ssd:mobilenet_v2_coco', 'hf-hub:ORG/NAME' or 'none'")
    ap.add_argument("--plates", default=None, choices=PLATE_MODES, help="licence plates: read them into the answers, "
                    "blur them in every image shown or stored (no text), or off (default $VERICAR_PLATES, else "
                    "blur on a public demo and read locally; docs/plates.md)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    tune_malloc()  # a server keeps its peak memory anyway; this makes each request's batch cheaper
    return create_app(args.model, args.data_dir, args.gallery_images, args.detector, plates=args.plates)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Serve the app the command line asks for; a model or data folder that cannot be used exits with why."""
    try:
        served = from_command_line(argv, prog)
    except VericarError as e:
        raise SystemExit(f"error: {e}") from None
    served.launch()  # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by gradio itself
