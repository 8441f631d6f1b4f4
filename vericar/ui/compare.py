"""The Compare tab and the /compare endpoint (and MCP tool): do two photos show the same vehicle model?

``compare_dict`` is the JSON answer: ``same_model`` (True / False / None when the evidence is too
weak either way), ``probability`` (that both show one model), ``same_make``, ``same_type`` with
their own probabilities, the ``threshold`` and bands, and ``a`` / ``b``: each photo's main vehicle as
/identify describes it (``prediction_dict``) with its ``box``. The tab shows both photos side by
side with their boxes, the verdict, each vehicle's name and the Grad-CAM++ of each.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from vericar.core.compare import Comparison
from vericar.ui.labels import md_text
from vericar.ui.present import prediction_dict
from vericar.ui.scene_view import draw_vehicles, short_label
from vericar.ui.webui import PhotoInput, open_upload, user_errors

MISSING = ("Photo {name} is missing: compare needs two photos, one of each vehicle. Upload a JPEG/PNG/WebP "
           "photo as {name} and try again.")


def compare_dict(c: Comparison) -> dict[str, Any]:
    """The /compare answer (JSON-ready)."""
    side = {}
    for name, pred in (("a", c.a), ("b", c.b)):
        side[name] = {**prediction_dict(pred), "box": pred.box}
    return {"same_model": c.same_model, "probability": c.probability, "same_make": c.same_make,
            "make_probability": c.probabilities["make"], "same_type": c.same_type,
            "type_probability": c.probabilities["type"], "threshold": c.threshold,
            "no_verdict_band": {lvl: list(b) for lvl, b in c.bands.items()}, "cosine": c.cosine, **side}


def verdict_markdown(c: Comparison) -> str:
    """The tab's verdict: same model or not (or not sure), the probability, make and type, both names."""
    head = {True: "Same model", False: "Different models", None: "Not sure"}[c.same_model]
    words = {True: "same", False: "different", None: "not sure"}
    lo, hi = c.bands["model"]
    band = f" (no verdict between {lo:.0%} and {hi:.0%})" if hi > lo else ""
    names = "\n".join(f"- **{n}**: {md_text(short_label(p))}" for n, p in (("A", c.a), ("B", c.b)))
    return (f"### {head}\nProbability that both photos show the same model: **{c.probability:.0%}**{band}.\n\n"
            f"Make: {words[c.same_make]} ({c.probabilities['make']:.0%}) · body type: {words[c.same_type]} "
            f"({c.probabilities['type']:.0%})\n\n{names}")


class CompareHandlers:
    """/compare and the tab's events over the app's ``Handlers`` (its vehicles, files and sessions)."""

    def __init__(self, h: Any) -> None:
        self.h = h

    def _compare(self, image_a: str | None, image_b: str | None, request: gr.Request) -> tuple[Comparison, Any, Any]:
        for name, img in (("A", image_a), ("B", image_b)):
            if not img:
                raise gr.Error(MISSING.format(name=name), print_exception=False)
        a, b = open_upload(image_a), open_upload(image_b)
        return self.h._rec(request).compare(a, b), a, b

    def compare(self, image_a: str, image_b: str, request: gr.Request) -> dict[str, Any]:
        """Do two photos show the same vehicle model? Returns same_model (true / false / null when the evidence
        is too weak), its probability, same_make and same_type with theirs, the threshold, and a / b: each
        photo's main vehicle as /identify describes it, with its box."""
        from vericar.ui.handlers import session_of

        with self.h.files.request(session_of(request), [p for p in (image_a, image_b) if p]):
            return compare_dict(self._compare(image_a, image_b, request)[0])

    def ui_compare(self, image_a: str, image_b: str, request: gr.Request) -> tuple:
        """The verdict, both photos with their boxes, and the Grad-CAM++ of each vehicle."""
        from vericar.ui.handlers import session_of

        with self.h.files.request(session_of(request), [p for p in (image_a, image_b) if p],
                                  hold_as="compare-photos", keep_as="compare") as out:
            c, a, b = self._compare(image_a, image_b, request)
            rec = self.h._rec(request)
            shown = [out.image(draw_vehicles(p, [pred]), f"found-{n}") for n, p, pred in (("a", a, c.a), ("b", b, c.b))]
            heat = [out.image(rec.explain(p).overlay, f"cam-{n}", "png") for n, p in (("a", a), ("b", b))]
            return verdict_markdown(c), *shown, *heat


def compare_tab(h: Any, model_q: dict[str, Any]) -> None:
    """Two photos in; the verdict, both photos with their boxes and each one's Grad-CAM++ out."""
    ch = CompareHandlers(h)
    with gr.Row():
        photo_a = PhotoInput(label="Photo A", sources=["upload", "clipboard"], elem_id="vericar-compare-a")
        photo_b = PhotoInput(label="Photo B", sources=["upload", "clipboard"], elem_id="vericar-compare-b")
    go = gr.Button("Compare", variant="primary", elem_id="vericar-compare")
    verdict = gr.Markdown(elem_id="vericar-compare-result")
    with gr.Row():
        found_a = gr.Image(label="A: vehicle compared", type="filepath", interactive=False, elem_id="vericar-compare-found-a")
        found_b = gr.Image(label="B: vehicle compared", type="filepath", interactive=False, elem_id="vericar-compare-found-b")
    with gr.Row():
        cam_a = gr.Image(label="A: Grad-CAM++", type="filepath", interactive=False, elem_id="vericar-compare-cam-a")
        cam_b = gr.Image(label="B: Grad-CAM++", type="filepath", interactive=False, elem_id="vericar-compare-cam-b")
    go.click(user_errors(ch.ui_compare), [photo_a, photo_b], [verdict, found_a, found_b, cam_a, cam_b],
             api_visibility="private", **model_q)


def compare_api(h: Any, trigger: gr.Button, model_q: dict[str, Any]) -> None:
    """/compare (api_name "compare"; an MCP tool when the MCP server is on): two photos in, JSON out."""
    from vericar.ui.api_inputs import FileInput

    with gr.Row(visible=False):
        image_a, image_b = FileInput(label="image_a"), FileInput(label="image_b")
        answer = gr.JSON(label="comparison")
    trigger.click(user_errors(CompareHandlers(h).compare), [image_a, image_b], [answer], api_name="compare", **model_q)
