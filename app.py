"""vericar demo: identify a vehicle, add new ones without retraining, read the model card.

    python app.py [--model SPEC] [--data-dir DIR] [--gallery-images DIR]   # or: gradio app.py / a Space

Model: ``--model`` or $VERICAR_MODEL ("default", "local-dir:PATH", "hf-hub:ORG/NAME"); vehicle
detector: ``--detector`` or $VERICAR_DETECTOR (default: the model's; see vericar/detect.py).
Enrolled vehicles live under $VERICAR_DATA_DIR (default ~/.cache/vericar). GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT are honoured by ``launch()``. API (gradio_client): /identify, /similar,
/explain, /enroll, /remove. $VERICAR_CONCURRENCY (default 2) model calls run at once across all of
them; uploads above $VERICAR_MAX_UPLOAD (default 25mb) are refused. $VERICAR_PUBLIC=1 (the default on
a Space) keeps each visitor's vehicles in their session (vericar.visitors); $VERICAR_MCP=1 also
serves Gradio's MCP server.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from PIL import Image

from vericar import hub
from vericar._runtime import tune_malloc
from vericar.enrolled import default_data_dir
from vericar.errors import VericarError
from vericar.gallery_images import image_source, page_examples
from vericar.labels import md_text
from vericar.present import finite, model_card, placeholder, result_markdown
from vericar.recognizer import Recognizer
from vericar.scene import no_vehicle
from vericar.scene_view import draw_vehicles, identify_answer, no_vehicle_markdown, others_markdown
from vericar.visitors import make_vehicles
from vericar.webui import DELETE_CACHE, PhotoInput, open_upload, user_message

log = logging.getLogger("vericar.app")
MAX_K = 50
MAX_UPLOAD = "25mb"  # per file; a phone photo is a few MB, and enrolment takes at most 32 of them


def _user_errors(fn: Callable) -> Callable:
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


def _sid(request: gr.Request | None) -> str | None:
    """The visitor's Gradio session (one per page load / gradio_client.Client)."""
    return getattr(request, "session_hash", None)


def build_demo(rec: Recognizer, data_dir: str | os.PathLike | None = None, *, spec: str = "default",
               concurrency: int | None = None, gallery_images: str | None = None) -> gr.Blocks:
    """The Gradio app over one shared recognizer; enrolled vehicles persist under ``data_dir``
    (local mode), or belong to each visitor's session ($VERICAR_PUBLIC=1, see vericar.visitors)."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    vehicles = make_vehicles(rec, data_dir)
    store = vehicles.store

    def _rec(request: gr.Request | None) -> Recognizer:  # the shared recognizer, or this visitor's view of it
        return vehicles.recognizer(_sid(request))

    if concurrency is None:
        concurrency = int(os.environ.get("VERICAR_CONCURRENCY", "2"))
    # Every event that runs the model shares one concurrency group, so at most `concurrency` model
    # calls run at once in all (a per-event limit would let identify + explain + similar + ... each
    # take that many, thrashing a small CPU); the rest wait in the queue.
    model_q: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": concurrency}
    # Photos for the similar-vehicle tiles and real examples: --gallery-images DIR, or the Hub dataset on a Space.
    source = image_source(gallery_images if gallery_images is not None else os.environ.get("VERICAR_GALLERY_IMAGES"))
    examples, examples_label, examples_note = page_examples(source, data_dir / "examples")

    @_user_errors
    def identify(image: str, request: gr.Request) -> dict[str, Any]:
        """Identify the main vehicle of a photo (label, make, model, type, year, confidences, unknown
        flag, neighbours, box) and list every vehicle in ``vehicles``, largest first."""
        preds = _rec(request).predict_all(open_upload(image))
        return identify_answer(preds, preds[0] if preds else no_vehicle())

    @_user_errors
    def similar(image: str, k: float, request: gr.Request) -> list[dict[str, Any]]:
        """The k most similar gallery photos, best first."""
        if k is None or not 1 <= int(k) <= MAX_K:
            raise gr.Error(f"k must be between 1 and {MAX_K}, got {k}.")
        return [{"label": n.label, "score": finite(n.score)} for n in _rec(request).similar(open_upload(image), int(k))]

    @_user_errors
    def explain(image: str, request: gr.Request) -> Image.Image:
        """Grad-CAM++ overlay: where the photo looks like the predicted vehicle."""
        return _rec(request).explain(open_upload(image)).overlay

    @_user_errors
    def ui_explain(image: str, found_vehicle: bool, request: gr.Request) -> tuple[Image.Image, Image.Image] | None:
        if not found_vehicle:  # "no vehicle found": nothing to explain, and no model call for it
            return None
        ex = _rec(request).explain(open_upload(image))  # finds the main vehicle once: its crop comes back
        return ex.photo, ex.overlay  # before / after, for the slider

    @_user_errors
    def enroll(images: list[str] | None, label: str, request: gr.Request) -> dict[str, Any]:
        """Add photos of a new vehicle under ``label`` (no retraining; public mode: for this session only)."""
        return vehicles.enroll(_sid(request), list(images or []), label)

    @_user_errors
    def remove(label: str, request: gr.Request) -> dict[str, Any]:
        """Remove a vehicle that was added with /enroll (public mode: one this session added)."""
        return vehicles.remove(_sid(request), label)

    @_user_errors
    def ui_identify(image: str, request: gr.Request) -> tuple[str, dict[str, float] | None, list, Image.Image, bool]:
        r, photo = _rec(request), open_upload(image)
        preds = r.predict_all(photo)
        if not preds:
            return no_vehicle_markdown(), None, [], photo, False
        pred = preds[0]
        conf = {f"{lvl}: {getattr(pred, lvl) or pred.label}": c for lvl, c in pred.confidence.items()
                if pred.is_known(lvl)} or None  # an unknown vehicle: only its confident levels
        tiles = []
        for n in pred.neighbours:
            thumb = (source.tile(n.ref, n.label) if source and n.ref else None) or r.thumbnail(n.index, n.label)
            tiles.append((thumb if thumb is not None else placeholder(n.label, n.score), f"{n.label} · {n.score:.2f}"))
        return (result_markdown(pred, rec.ood.threshold) + others_markdown(preds), conf, tiles,
                draw_vehicles(photo, preds), True)

    def listing_text(request: gr.Request | None = None) -> str:
        return ("\n".join(f"- **{md_text(lab)}** ({n} photos)" for lab, n in vehicles.summary(_sid(request)))
                or "_No vehicles added yet._")

    def enrolled_view(request: gr.Request) -> tuple[str, Any]:
        # An update, not a component: called only from events (inside Blocks it would render a new one).
        return listing_text(request), gr.update(choices=[lab for lab, _ in vehicles.summary(_sid(request))],
                                                value=None)

    @_user_errors
    def ui_enroll(photos: list[str] | None, free: str, make: str, model: str, vtype: str, year: str,
                  request: gr.Request) -> tuple:
        label = (free or "").strip()
        if not label:
            if not any((make, model, vtype, year)):
                raise gr.Error("Give the vehicle a name: fill make, model, type and year, or a free label.")
            from vericar.taxonomy import vehicle_label

            label = vehicle_label(make, model, vtype, year)
        out = vehicles.enroll(_sid(request), list(photos or []), label)
        return (f"Added **{md_text(out['label'])}** from {out['added']} photos; it is recognised from the next "
                "photo on.", *enrolled_view(request))

    @_user_errors
    def ui_remove(label: str | None, request: gr.Request) -> tuple:
        if not label:
            raise gr.Error("Pick an added vehicle to remove.")
        out = vehicles.remove(_sid(request), label)
        return f"Removed **{md_text(out['label'])}** ({out['removed']} photos).", *enrolled_view(request)

    card_md, curve = model_card(rec, spec)
    with gr.Blocks(title="vericar: vehicle recognition", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# vericar\nOpen-world vehicle recognition: make, model, type and year; unknown "
                    "vehicles are flagged, and new ones can be added without retraining.")
        with gr.Tab("Identify"):
            with gr.Row():
                with gr.Column():
                    image = PhotoInput(label="Vehicle photo", sources=["upload", "webcam", "clipboard"],
                                       elem_id="vericar-photo")
                    go = gr.Button("Identify", variant="primary", elem_id="vericar-identify")
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label=examples_label)
                    if examples_note:
                        gr.Markdown(examples_note, elem_id="vericar-examples-note")
                with gr.Column():
                    found = gr.Image(label="Vehicles found", type="pil", interactive=False, elem_id="vericar-boxes")
                    result = gr.Markdown(elem_id="vericar-result")
                    levels = gr.Label(label="Confidence per level", elem_id="vericar-levels", show_heading=False)
                    overlay = gr.ImageSlider(label="Grad-CAM++: the photo / what the match rests on", type="pil",
                                             interactive=False, elem_id="vericar-overlay")
            neighbours = gr.Gallery(label="Most similar known vehicles", columns=6, height=220, object_fit="contain",
                                    fit_columns=False, interactive=False, elem_id="vericar-neighbours")
            found_vehicle = gr.State(False)
            go.click(ui_identify, [image], [result, levels, neighbours, found, found_vehicle], api_visibility="private",
                     **model_q).success(ui_explain, [image, found_vehicle], [overlay], api_visibility="private",
                                        **model_q)
        with gr.Tab("Add a vehicle"):
            gr.Markdown("Add a vehicle the model does not know: a few photos and its name. It is recognised on "
                        "the very next request and kept across restarts; no retraining." if not vehicles.public else
                        "Add a vehicle the model does not know: a few photos and its name. It is recognised in your "
                        "next requests, no retraining. On this public demo the vehicles you add are yours alone "
                        "(other visitors never see them, at most 5) and are forgotten when you close the page.")
            with gr.Row():
                with gr.Column():
                    photos = gr.File(label="Photos (2-10 work best)", file_count="multiple", file_types=["image"],
                                     type="filepath", elem_id="vericar-photos")
                    with gr.Row():
                        make, model = gr.Textbox(label="Make"), gr.Textbox(label="Model")
                        vtype, year = gr.Textbox(label="Type (e.g. Sedan, SUV)"), gr.Textbox(label="Year")
                    free = gr.Textbox(label="…or a free label (overrides the fields)", elem_id="vericar-free")
                    add = gr.Button("Add vehicle", variant="primary", elem_id="vericar-add")
                with gr.Column():
                    status = gr.Markdown(elem_id="vericar-status")
                    listing = gr.Markdown(listing_text(), elem_id="vericar-listing")
                    pick = gr.Dropdown(label="Added vehicles", choices=[lab for lab, _ in vehicles.summary(None)])
                    drop = gr.Button("Remove", variant="stop")
            add.click(ui_enroll, [photos, free, make, model, vtype, year], [status, listing, pick],
                      api_visibility="private", **model_q)
            drop.click(ui_remove, [pick], [status, listing, pick], api_visibility="private", **model_q)
        with gr.Tab("Model card"):
            gr.Markdown(card_md, elem_id="vericar-card")
            if curve:
                gr.Image(curve, label="Training curve", interactive=False, elem_id="vericar-curve")
        # API endpoints: hidden components, explicit names (gradio_client: api_name="/identify", ...).
        with gr.Row(visible=False):
            a_img = gr.File(label="image", type="filepath")
            a_imgs = gr.File(label="images", type="filepath", file_count="multiple")
            a_k = gr.Number(label="k", value=5, precision=0)
            a_label = gr.Textbox(label="label")
            a_json = gr.JSON(label="result")
            a_overlay = gr.Image(label="overlay", type="pil", format="png")
            trigger = gr.Button()
        trigger.click(identify, [a_img], [a_json], api_name="identify", **model_q)
        trigger.click(similar, [a_img, a_k], [a_json], api_name="similar", **model_q)
        trigger.click(explain, [a_img], [a_overlay], api_name="explain", **model_q)
        trigger.click(enroll, [a_imgs, a_label], [a_json], api_name="enroll", **model_q)
        trigger.click(remove, [a_label], [a_json], api_name="remove", **model_q)
        if vehicles.public:  # the shared gallery changes only with the admin token; a closed page frees its vehicles
            a_token = gr.Textbox(label="token", visible=False)
            trigger.click(_user_errors(lambda tok, ims, lab: vehicles.admin_enroll(tok, list(ims or []), lab)),
                          [a_token, a_imgs, a_label], [a_json], api_name="admin_enroll", **model_q)
            trigger.click(_user_errors(vehicles.admin_remove), [a_token, a_label], [a_json],
                          api_name="admin_remove", **model_q)

            def session_ended(request: gr.Request) -> None:
                vehicles.end(_sid(request))

            demo.unload(session_ended)
        demo.load(enrolled_view, None, [listing, pick], api_visibility="private")  # fresh list per page load
    # Events outside the "model" group (the page-load listing) get the same per-event limit.
    demo.queue(default_concurrency_limit=concurrency, max_size=int(os.environ.get("VERICAR_QUEUE_SIZE", "256")))
    demo.vericar_store = store  # for tests and callers that want the enrolled-vehicle store
    demo.vericar_vehicles = vehicles
    return demo


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch()``: the upload cap ($VERICAR_MAX_UPLOAD, default MAX_UPLOAD),
    and Gradio's MCP server when $VERICAR_MCP=1.

    They can only be given to launch(): Blocks.launch() overwrites any max_file_size set on the
    Blocks beforehand, so build_demo() cannot carry them.
    """
    opts: dict[str, Any] = {"max_file_size": os.environ.get("VERICAR_MAX_UPLOAD") or MAX_UPLOAD}
    if os.environ.get("VERICAR_MCP", "").strip().lower() in {"1", "true", "yes"}:
        opts["mcp_server"] = True  # LLM agents call /identify, /similar, ... as MCP tools (needs gradio[mcp])
    return opts


def error_demo(message: str) -> gr.Blocks:
    """A page that explains why the model could not be loaded (instead of a crash at import)."""
    with gr.Blocks(title="vericar: model not loaded") as demo:
        gr.Markdown(f"# vericar could not start\n\n{message}\n\nSet `VERICAR_MODEL` (or pass `--model`) to "
                    f"{hub.SPEC_HELP}, then restart.")
    return demo


def create_app(spec: str | None = None, data_dir: str | os.PathLike | None = None,
               gallery_images: str | None = None, detector: str | None = None) -> gr.Blocks:
    """Load the model named by ``spec`` / $VERICAR_MODEL once and build the app around it; the
    vehicle detector is the model's own unless ``detector`` / $VERICAR_DETECTOR names another."""
    spec = spec or os.environ.get("VERICAR_MODEL", "default")
    detector = detector or os.environ.get("VERICAR_DETECTOR") or None
    rec = hub.load(spec, **({"detector": detector} if detector else {}))
    return build_demo(rec, data_dir or os.environ.get("VERICAR_DATA_DIR") or None, spec=spec,
                      gallery_images=gallery_images)


def main(argv: list[str] | None = None) -> None:
    """``python app.py``: parse options, load the model, serve."""
    ap = argparse.ArgumentParser(description="vericar Gradio app")
    ap.add_argument("--model", default=None, help=f"model spec (default $VERICAR_MODEL or 'default'); {hub.SPEC_HELP}")
    ap.add_argument("--data-dir", default=None, help="where added vehicles are kept (default $VERICAR_DATA_DIR)")
    ap.add_argument("--gallery-images", default=None, help="a local copy of the gallery's dataset (e.g. "
                    "../shared/data/stanford_cars) or hf-dataset:ORG/NAME: similar vehicles then show photos "
                    "(default $VERICAR_GALLERY_IMAGES)")
    ap.add_argument("--detector", default=None, help="vehicle detector (default $VERICAR_DETECTOR or the model's): "
                    "'opencv-ssd:mobilenet_v2_coco', 'hf-hub:ORG/NAME' or 'none'")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    tune_malloc()  # a server keeps its peak memory anyway; this makes each request's batch cheaper
    global demo
    try:
        demo = create_app(args.model, args.data_dir, args.gallery_images, args.detector)
    except VericarError as e:
        sys.exit(f"error: {e}")
    demo.launch(**launch_options())  # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by gradio itself


if __name__ == "__main__":
    main()
else:
    # `gradio app.py` and importers find `demo` here; a model that cannot load gives a page saying why.
    if os.environ.get("SYSTEM") == "spaces" or "gradio" in Path((getattr(sys, "argv", None) or [""])[0]).name:
        tune_malloc()  # served as a Space or by the gradio CLI: this process is the server
    try:
        demo = create_app()
    except VericarError as e:
        log.error("vericar app: %s", e)
        demo = error_demo(str(e))
