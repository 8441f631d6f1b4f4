"""What the app's events do: the API endpoints (JSON) and the page's views (Markdown, images).

``app.py`` wires these to Gradio components; each one runs inside ``RequestFiles.request`` so its
uploads are held only while used and the files it writes for its answer go away after it (see
vericar.ui.tempfiles). Library errors become gr.Error (webui.user_errors).
"""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from vericar.core.recognizer import Recognizer
from vericar.ui.api_inputs import MAX_K
from vericar.ui.gallery_images import HubImages, LocalImages
from vericar.ui.labels import md_text
from vericar.ui.present import finite, placeholder, result_markdown
from vericar.ui.scene_view import draw_vehicles, identify_answer, no_vehicle_markdown, others_markdown
from vericar.ui.tempfiles import RequestFiles
from vericar.ui.visitors import LocalVehicles, SessionVehicles
from vericar.ui.webui import open_upload, user_errors
from vericar.vision.scene import no_vehicle

__all__ = ["MAX_K", "MCP_SHARED", "Handlers", "from_mcp", "session_of"]
# Public mode: why an MCP agent cannot add or remove vehicles, and what to use instead.
MCP_SHARED = ("Adding and removing vehicles is turned off for MCP agents on this public demo: every agent's MCP "
              "calls reach the app through one shared connection (one session), so a vehicle one agent added "
              "would be seen and removable by all the others. Use gradio_client instead, where each Client is "
              "its own session (Client(URL).predict([handle_file('car.jpg'), ...], 'Make Model Type Year', "
              "api_name='/enroll')), or run the app yourself (python app.py), where the vehicles you add are "
              "kept. identify, similar and explain work for MCP agents here.")


def session_of(request: gr.Request | None) -> str | None:
    """The visitor's Gradio session (one per page load / gradio_client.Client)."""
    return getattr(request, "session_hash", None)


def from_mcp(request: gr.Request | None) -> bool:
    """The request came through Gradio's MCP server (gradio/mcp.py sends every tool call through one
    cached gradio_client.Client with this header; a client that sets it itself only limits itself)."""
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("x-gradio-user", "")).strip().lower() == "mcp"


class Handlers:
    """The app's event functions over one set of vehicles (local or public mode) and its temp files."""

    def __init__(self, vehicles: LocalVehicles | SessionVehicles, files: RequestFiles,
                 source: LocalImages | HubImages | None = None,
                 hide_plates: Callable[[Recognizer, Any], Any] | None = None) -> None:
        self.vehicles, self.files, self.source = vehicles, files, source
        # --plates blur: (recognizer, photo) -> the photo with its plates hidden, applied to every
        # photo as it comes in, so nothing shown or stored is made from a visible plate.
        self.hide_plates = hide_plates

    def _rec(self, request: gr.Request | None) -> Recognizer:
        """The shared recognizer, or this visitor's view of it (public mode)."""
        return self.vehicles.recognizer(session_of(request))

    def _photo(self, image: Any, rec: Recognizer, name: str | None = None) -> Any:
        """The upload as a PIL image (``open_upload``), its plates hidden when the app blurs them."""
        photo = open_upload(image, name)
        return self.hide_plates(rec, photo) if self.hide_plates else photo

    def enrol_photos(self, images: list[str] | None, rec: Recognizer) -> list[Any]:
        """The photos to add: their paths, or (blurring) the opened photos with their plates hidden."""
        images = list(images or [])
        if not self.hide_plates:
            return images
        try:
            return [self._photo(p, rec) for p in images]
        except gr.Error as e:  # as the store says it: the whole enrolment is refused
            raise gr.Error(f"{e.message} Nothing was added; replace that photo and try again.",
                           print_exception=False) from e

    # ------------------------------------------------------------------ API
    @user_errors
    def identify(self, image: str, request: gr.Request) -> dict[str, Any]:
        """Identify the main vehicle of a photo (label, make, model, type, year, confidences, unknown
        flag, neighbours, box) and list every vehicle in ``vehicles``, largest first."""
        with self.files.request(session_of(request), [image]):
            r = self._rec(request)
            preds = r.predict_all(self._photo(image, r))
        return identify_answer(preds, preds[0] if preds else no_vehicle())

    @user_errors
    def similar(self, image: str, k: float, request: gr.Request) -> list[dict[str, Any]]:
        """The k most similar gallery photos, best first."""
        if k is None or not 1 <= int(k) <= MAX_K:  # the API's k input already checked it (api_inputs.CountInput)
            raise gr.Error(f"k must be a whole number between 1 and {MAX_K} (e.g. 5); got {k}.")
        with self.files.request(session_of(request), [image]):
            r = self._rec(request)
            found = r.similar(self._photo(image, r), int(k))
        return [{"label": n.label, "score": finite(n.score)} for n in found]

    @user_errors
    def explain(self, image: str, request: gr.Request) -> str:
        """Grad-CAM++ overlay: where the photo looks like the predicted vehicle."""
        with self.files.request(session_of(request), [image]) as out:
            r = self._rec(request)
            return out.image(r.explain(self._photo(image, r)).overlay, "overlay", "png")

    def _no_shared_changes(self, request: gr.Request | None) -> None:
        """Public mode: MCP agents share one session (see MCP_SHARED), so they may not add or remove."""
        if self.vehicles.public and from_mcp(request):
            raise gr.Error(MCP_SHARED, print_exception=False)

    @user_errors
    def enroll(self, images: list[str] | None, label: str, request: gr.Request) -> dict[str, Any]:
        """Add photos of a new vehicle under ``label`` (no retraining; public mode: for this session only)."""
        self._no_shared_changes(request)
        with self.files.request(session_of(request), images or []):
            return self.vehicles.enroll(session_of(request), self.enrol_photos(images, self._rec(request)), label)

    @user_errors
    def remove(self, label: str, request: gr.Request) -> dict[str, Any]:
        """Remove a vehicle that was added with /enroll (public mode: one this session added)."""
        self._no_shared_changes(request)
        return self.vehicles.remove(session_of(request), label)

    # ----------------------------------------------------------------- page
    @user_errors
    def ui_identify(self, image: str, request: gr.Request) -> tuple[str, dict[str, float] | None, list, str, bool]:
        """Result text, confidence per level, similar-vehicle tiles, the photo with its boxes, found-or-not."""
        sid = session_of(request)
        with self.files.request(sid, [image], hold_as="photo", keep_as="found") as out:
            r = self._rec(request)
            photo = self._photo(image, r)
            preds = r.predict_all(photo)
            if not preds:
                return no_vehicle_markdown(), None, [], out.image(photo, "photo"), False
            pred = preds[0]
            conf = {f"{lvl}: {getattr(pred, lvl) or pred.label}": c for lvl, c in pred.confidence.items()
                    if pred.is_known(lvl)} or None  # an unknown vehicle: only its confident levels
            tiles = []
            for i, n in enumerate(pred.neighbours):
                thumb = (self.source.tile(n.ref, n.label) if self.source and n.ref else None) or r.thumbnail(
                    n.index, n.label)
                tile = thumb if thumb is not None else placeholder(n.label, n.score)
                tiles.append((out.image(tile, f"tile{i}"), f"{n.label} · {n.score:.2f}"))
            return (result_markdown(pred, self.vehicles.store.rec.ood.threshold) + others_markdown(preds), conf, tiles,
                    out.image(draw_vehicles(photo, preds), "found"), True)

    @user_errors
    def ui_explain(self, image: str, found_vehicle: bool, request: gr.Request) -> tuple[str, str] | None:
        """Before / after for the Grad-CAM++ slider (nothing when no vehicle was found)."""
        with self.files.request(session_of(request), [image], hold_as="photo", keep_as="overlay") as out:
            if not found_vehicle:  # "no vehicle found": nothing to explain, and no model call for it
                return None
            r = self._rec(request)
            ex = r.explain(self._photo(image, r))  # finds the main vehicle once: the crop it explained comes back with it
            return out.image(ex.photo, "before"), out.image(ex.overlay, "after")

    def listing_text(self, request: gr.Request | None = None) -> str:
        """This visitor's added vehicles (public mode) or everyone's (local), as Markdown."""
        return ("\n".join(f"- **{md_text(lab)}** ({n} photos)" for lab, n in self.vehicles.summary(session_of(request)))
                or "_No vehicles added yet._")

    def enrolled_view(self, request: gr.Request) -> tuple[str, Any]:
        """The listing and the remove menu's choices (an update: called from events only)."""
        choices = [lab for lab, _ in self.vehicles.summary(session_of(request))]
        return self.listing_text(request), gr.update(choices=choices, value=None)

    @user_errors
    def ui_enroll(self, photos: list[str] | None, free: str, make: str, model: str, vtype: str, year: str,
                  request: gr.Request) -> tuple:
        """Add a vehicle from the form: a free label, else make / model / type / year."""
        label = (free or "").strip()
        if not label:
            if not any((make, model, vtype, year)):
                raise gr.Error("Give the vehicle a name: fill make, model, type and year, or a free label.")
            from vericar.search.taxonomy import vehicle_label

            label = vehicle_label(make, model, vtype, year)
        with self.files.request(session_of(request), photos or [], hold_as="photos"):
            out = self.vehicles.enroll(session_of(request), self.enrol_photos(photos, self._rec(request)), label)
        return (f"Added **{md_text(out['label'])}** from {out['added']} photos; it is recognised from the next "
                "photo on.", *self.enrolled_view(request))

    @user_errors
    def ui_remove(self, label: str | None, request: gr.Request) -> tuple:
        """Remove the picked added vehicle."""
        if not label:
            raise gr.Error("Pick an added vehicle to remove.")
        out = self.vehicles.remove(session_of(request), label)
        return f"Removed **{md_text(out['label'])}** ({out['removed']} photos).", *self.enrolled_view(request)

    def session_ended(self, request: gr.Request) -> None:
        """The page was closed: free its files (and, in public mode, its vehicles)."""
        self.files.end_session(session_of(request))
        self.vehicles.end(session_of(request))
