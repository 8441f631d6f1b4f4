"""``--plates read|blur|off`` through the real app (Gradio server, gradio_client) and the real plate stage.

The recognizer is the tiny model of test_app.py; the photo is a real car photo from
../shared/data/stanford_cars with a plate drawn into it (test_plates.with_plate).
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from test_app import _launch, app_module, artifact  # noqa: F401  (fixtures)
from test_plates import needs_photos, with_plate
from vericar.attributes.plate_privacy import blur_plates
from vericar.attributes.plates import MIN_CONFIDENCE, PlateReader
from vericar.core.errors import SpecError
from vericar.ui.webui import AppSettings

pytestmark = needs_photos
NEW = "Plated Testcar Sedan 2012"


@pytest.fixture(scope="module")
def plated(tmp_path_factory):
    """(path of the photo with a drawn plate, the photo, the drawn plate's box)."""
    im, box = with_plate()
    path = tmp_path_factory.mktemp("plated") / "plated.png"
    im.save(path)
    return str(path), im, box


def spread(im: Image.Image, box, scale: float = 1.0) -> float:
    """How much the pixels inside ``box`` (scaled, shrunk by 2 px) vary: ~0 once a plate is hidden."""
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    a = np.asarray(im.convert("RGB"), dtype=np.float32)[y1 + 2:y2 - 2, x1 + 2:x2 - 2]
    return float(a.reshape(-1, 3).std(axis=0).max())


def fn(app, name: str):
    return next(f.fn for f in app.demo.fns.values() if f.name == name)


def test_settings():
    assert AppSettings().plates_mode == "read" and AppSettings(public=True).plates_mode == "blur"
    assert AppSettings.from_env({"VERICAR_PLATES": " Off "}).plates_mode == "off"
    assert AppSettings.from_env({"VERICAR_PLATES": "blur"}, plates="read").plates_mode == "read"
    with pytest.raises(SpecError, match="read, blur, off"):
        AppSettings.from_env({"VERICAR_PLATES": "hide"})


def test_read_gives_the_plate_in_identify(app_module, artifact, plated, tmp_path):  # noqa: F811
    app, client = _launch(app_module, artifact, tmp_path / "data", plates="read")
    try:
        out = client.predict(handle_file(plated[0]), api_name="/identify")
    finally:
        app.close()
    plate = out["plate"]
    assert set(plate) == {"text", "box", "confidence"} and plate["text"] == "KX61BCD"
    assert MIN_CONFIDENCE <= plate["confidence"] <= 1 and out["vehicles"][0]["plate"] == plate
    x1, y1, x2, y2 = plate["box"]  # photo pixels, around the drawn plate
    box = plated[2]
    assert x1 <= box[0] + 3 and y1 <= box[1] + 3 and x2 >= box[2] - 3 and y2 >= box[3] - 3


def test_blur_leaves_no_plate_pixels(app_module, artifact, plated, tmp_path):  # noqa: F811
    """Nothing the app returns or stores holds the plate: the answer has no text, and the boxes image,
    the Grad-CAM++ slider's photo, the /explain overlay and the enrolled photo's tile show one colour
    where the plate was."""
    path, original, box = plated
    assert spread(original, box) > 40  # the drawn plate: black text on white
    app, client = _launch(app_module, artifact, tmp_path / "data", plates="blur",
                          delivery_s=600.0)  # a loaded CPU may fetch /explain's file late
    try:
        out = client.predict(handle_file(path), api_name="/identify")
        assert out["plate"] is None and all(v["plate"] is None for v in out["vehicles"])
        *_, found, ok = fn(app, "ui_identify")(path, None)
        before, _ = fn(app, "ui_explain")(path, True, None)
        overlay = client.predict(handle_file(path), api_name="/explain")
        client.predict([handle_file(path)], NEW, api_name="/enroll")
        g = app.store.gallery
        tile = g.thumbnail(g.labels.index(NEW))
        rec = app.store.rec
        hidden = blur_plates(PlateReader(), rec.detector, original)
        assert spread(hidden, box) < 1
        with Image.open(found) as f, Image.open(before) as b, Image.open(overlay) as o:
            assert ok and spread(f, box) < 3 and spread(b, box) < 3
            # The overlay is the heatmap over the blurred photo, not over the plate.
            o = np.asarray(o.convert("RGB"))
            assert np.array_equal(o, np.asarray(rec.explain(hidden).overlay))
            assert not np.array_equal(o, np.asarray(rec.explain(original).overlay))
        assert spread(tile, box, tile.width / original.width) < 8  # the stored tile (96 px, JPEG)
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")  # opened (to blur it) before the store sees it: the same refusal
        with pytest.raises(gr.Error, match="notes.jpg.*Nothing was added"):
            fn(app, "enroll")([path, str(bad)], "Another Testcar Sedan 2012", None)
        assert "Another Testcar Sedan 2012" not in app.store.gallery.labels
    finally:
        app.close()


def test_off_skips_the_stage(app_module, artifact, plated, tmp_path):  # noqa: F811
    app, client = _launch(app_module, artifact, tmp_path / "data", plates="off")
    try:
        assert app.store.rec.attributes.plates is None
        out = client.predict(handle_file(plated[0]), api_name="/identify")
    finally:
        app.close()
    assert out["plate"] is None
