"""The app over whole photos: the real SSD detector, the real Gradio server, gradio_client.

The recognizer is the tiny random model of test_app.py (its names mean little), but the boxes come
from the real detector on real photos from ../shared/data/stanford_cars pasted into a drawn street.
"""
from __future__ import annotations

import json

import pytest
from gradio_client import handle_file
from PIL import Image

from test_app import _launch, app_module, artifact  # noqa: F401  (fixtures)
from test_detect import SSD, _real_photos, scene, street
from vericar.artifacts import hub
from vericar.ui.scene_view import VEHICLE_KEYS, draw_vehicles, identify_answer, no_vehicle_markdown, others_markdown
from vericar.vision.detect import Box, iou

NEW = "Realmake Photo Sedan 2013"


@pytest.fixture(scope="module")
def served(app_module, artifact, tmp_path_factory):  # noqa: F811
    rec = hub.load(f"local-dir:{artifact}", detector=SSD)
    app, client = _launch(app_module, artifact, tmp_path_factory.mktemp("data"), rec=rec)
    yield app, client
    app.demo.close()


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """A two-car frame (big car right, small car left), a one-car frame, a street without cars."""
    tmp = tmp_path_factory.mktemp("frames")
    photos = _real_photos(3)
    two, truth = scene(photos[:2], [(540, 300, 330, 190), (40, 330, 250, 150)])
    one, one_truth = scene(photos[2:], [(100, 280, 360, 220)])
    paths = {"two": tmp / "two.jpg", "one": tmp / "one.png", "none": tmp / "none.png"}
    two.save(paths["two"], quality=92)
    one.save(paths["one"])
    street().save(paths["none"])
    return {k: str(v) for k, v in paths.items()}, truth, one_truth


def test_identify_lists_every_vehicle(served, frames):
    _, client = served
    paths, truth, _ = frames
    out = client.predict(handle_file(paths["two"]), api_name="/identify")
    json.dumps(out, allow_nan=False)
    assert {"label", "make", "model", "type", "year", "confidence", "unknown", "ood_score", "neighbours",
            "box", "vehicles"} <= set(out)
    assert len(out["vehicles"]) == 2
    assert all(set(v) == {"box", *VEHICLE_KEYS} for v in out["vehicles"])
    boxes = [Box(*v["box"]) for v in out["vehicles"]]
    assert boxes[0].area > boxes[1].area  # largest first
    assert iou(boxes[0], truth[0]) >= 0.5 and iou(boxes[1], truth[1]) >= 0.5
    main = out["vehicles"][0]  # the top-level keys describe the main vehicle
    assert out["box"] == main["box"] and all(out[k] == main[k] for k in VEHICLE_KEYS)


def test_no_vehicle_is_an_answer_not_an_error(served, frames):
    app, client = served
    rec = app.store.rec
    threshold, rec.ood.threshold = rec.ood.threshold, -1.0  # the street does not look like a known vehicle
    try:
        out = client.predict(handle_file(frames[0]["none"]), api_name="/identify")
    finally:
        rec.ood.threshold = threshold
    assert out["vehicles"] == [] and out["box"] is None and out["message"] == "no vehicle found"
    assert out["label"] is None and out["unknown"] is True and out["vehicle_found"] is False


def test_similar_explain_and_enroll_from_whole_photos(served, frames):
    app, client = served
    paths, _, one_truth = frames
    sim = client.predict(handle_file(paths["two"]), 3, api_name="/similar")
    assert len(sim) == 3
    overlay = client.predict(handle_file(paths["two"]), api_name="/explain")
    with Image.open(overlay) as im:  # the main vehicle's crop, not the whole frame
        assert im.size[0] < 600
    status = client.predict([handle_file(paths["one"])], NEW, api_name="/enroll")
    assert status["added"] == 1
    out = client.predict(handle_file(paths["one"]), api_name="/identify")
    assert out["neighbours"][0]["label"] == NEW and out["neighbours"][0]["score"] > 0.99
    assert iou(Box(*out["box"]), one_truth[0]) >= 0.5
    client.predict(NEW, api_name="/remove")


def test_scene_view_parts(served, frames):
    rec = served[0].store.rec
    photo = Image.open(frames[0]["two"]).convert("RGB")
    preds = rec.predict_all(photo)
    drawn = draw_vehicles(photo, preds)
    assert drawn.size == photo.size and drawn.tobytes() != photo.tobytes()
    x1, y1, _, _ = preds[0].box
    assert drawn.getpixel((x1 + 1, (y1 + preds[0].box[3]) // 2)) != photo.getpixel((x1 + 1, (y1 + preds[0].box[3]) // 2))
    assert "Other vehicles in the photo** (1)" in others_markdown(preds) and others_markdown(preds[:1]) == ""
    assert identify_answer([], rec.predict(street()))["vehicles"] == []
    assert "No vehicle found" in no_vehicle_markdown()


def test_explain_slider_finds_the_vehicle_once(served, frames):
    """The Identify tab's Grad-CAM++ slider (before / after) runs the detector once, not once for
    the heatmap and again for the 'before' picture; both sides show the main vehicle's crop."""
    app, _ = served
    rec = app.store.rec
    fn = next(f.fn for f in app.demo.fns.values() if f.name == "ui_explain")
    calls, detect = [], rec.detector.detect
    rec.detector.detect = lambda *a, **kw: calls.append(1) or detect(*a, **kw)
    try:
        before, after = (Image.open(p) for p in fn(frames[0]["two"], True, None))
    finally:
        del rec.detector.detect  # back to the class's method
    assert len(calls) == 1
    assert before.size == after.size and before.size[0] < 600  # the crop, not the 900 px frame
    assert before.tobytes() != after.tobytes()
