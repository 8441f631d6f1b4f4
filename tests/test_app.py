"""The Gradio app, launched in-process on a free port over a tiny model, driven with gradio_client."""
from __future__ import annotations

import importlib
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from conftest import make_car_image
from vericar.artifacts import hub
from vericar.core.recognizer import Recognizer
from vericar.models.model import create_model, embed_images
from vericar.models.transforms import eval_transform
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # app.py lives at the repo root
BASE = ["Audi A4 Sedan 2012", "BMW X5 SUV 2007", "Ford F-150 Regular Cab 2012", "Honda Odyssey Minivan 2012"]
NEW = "Testmake Roadster Convertible 2024"


def vehicle_photo(seed: int, shot: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Photo ``shot`` of synthetic vehicle ``seed``: the same drawing, slightly relit, noisy and shifted."""
    rng = np.random.default_rng([seed, shot])
    a = np.asarray(make_car_image(seed, size), dtype=np.float32) * rng.uniform(0.96, 1.04)
    a = np.roll(a + rng.normal(0, 3, a.shape), tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_artifact(out: Path) -> Path:
    """Save a tiny recognizer: 4 known vehicles x 6 photos, KNN+ (k=5) calibrated on held-out photos.

    A random tiny net maps every photo to nearly one direction (cosines ~0.9999), so its head is set
    to the centred principal directions of the gallery's features, a stand-in for training that
    makes distances mean something: photos of one vehicle are close, other vehicles far. With k=5
    and only 3 photos per enrolled vehicle, an enrolled photo is known only because the recognizer
    caps k at the nearest class's photo count (test_enroll_identify_remove checks that).
    """
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()
    imgs = [vehicle_photo(c, i) for c in range(len(BASE)) for i in range(6)]
    tf = eval_transform(model.pretrained_cfg)
    with torch.no_grad():
        feats = model.features(torch.stack([tf(im) for im in imgs]))
        centred = feats - feats.mean(0)
        head = torch.linalg.svd(centred, full_matrices=False).Vh[:16]
        model.head.weight.copy_(head)
        model.head.bias.copy_(-head @ feats.mean(0))
    labels = [lab for lab in BASE for _ in range(6)]
    emb = embed_images(model, imgs)
    thumbs = [im if i % 2 == 0 else None for i, im in enumerate(imgs)]  # odd ones get placeholder tiles
    gallery = Gallery.from_arrays(emb, labels, refs=[f"synthetic/{i}.png" for i in range(len(imgs))], thumbnails=thumbs)
    ood = KNNOOD(k=5)
    held_out = embed_images(model, [vehicle_photo(c, 100 + i) for c in range(len(BASE)) for i in range(4)])
    ood.calibrate(gallery.search(held_out, ood.k)[0])
    meta = {"metrics": {"dev": {"top1": 0.5}}, "command": "python train/train.py --config offline-cpu"}
    hub.save_pretrained(Recognizer(model, gallery, ood, k=3, meta=meta), out)
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact"))


@pytest.fixture(scope="module")
def app_module(artifact, tmp_path_factory):
    """`import app` with VERICAR_MODEL pointing at the tiny model (module-level `demo` is built)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VERICAR_MODEL", f"local-dir:{artifact}")
    mp.setenv("VERICAR_DATA_DIR", str(tmp_path_factory.mktemp("import-data")))
    sys.modules.pop("app", None)
    mod = importlib.import_module("app")
    yield mod
    mp.undo()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(app_module, artifact: Path, data_dir: Path, rec: Recognizer | None = None, **settings):
    """build_app over ``rec`` (default: a fresh load of ``artifact``), settings from the environment and
    ``settings``, launched as `python app.py` does. Returns (the app, a gradio_client.Client)."""
    rec = rec or hub.load(f"local-dir:{artifact}")
    app = app_module.build_app(rec, app_module.AppSettings.from_env(model=f"local-dir:{artifact}",
                                                                    data_dir=data_dir, **settings))
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    return app, Client(app.demo.local_url, verbose=False)


@pytest.fixture(scope="module")
def served(app_module, artifact, tmp_path_factory):
    app, client = _launch(app_module, artifact, tmp_path_factory.mktemp("data"))
    yield app, client
    app.demo.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("photos") / "known.png"
    vehicle_photo(0, 1).save(path)  # one of "Audi A4 Sedan 2012"'s gallery photos
    return str(path)


def _photos(tmp: Path, seed: int, n: int, stem: str) -> list[str]:
    """``n`` JPEG photos of synthetic vehicle ``seed``."""
    paths = []
    for shot in range(n):
        p = tmp / f"{stem}{seed}-{shot}.jpg"
        vehicle_photo(seed, shot, size=(120, 80)).save(p, quality=95)
        paths.append(str(p))
    return paths


def test_module_level_demo(app_module):
    assert isinstance(app_module.demo, gr.Blocks)
    names = {d["api_name"] for d in app_module.demo.config["dependencies"] if d.get("api_visibility") == "public"}
    assert {"identify", "similar", "explain", "enroll", "remove"} <= names
    # A list of files is described without $refs: Gradio's MCP bridge moves $defs away from them (test_mcp).
    images = app_module.demo.get_api_info()["named_endpoints"]["/enroll"]["parameters"][0]
    assert images["parameter_name"] == "images" and "$ref" not in json.dumps(images["type"])


def test_identify(served, photo):
    _, client = served
    out = client.predict(handle_file(photo), api_name="/identify")
    # A random tiny model: the k=3 vote may go either way, but the photo itself is the nearest entry.
    assert out["label"] in BASE and out["label"].startswith(out["make"]) and out["label"].endswith(out["year"])
    assert set(out["confidence"]) == {"model", "make", "type", "year"}
    assert all(0.0 <= v <= 1.0 for v in out["confidence"].values())
    scores = [n["score"] for n in out["neighbours"]]
    assert out["neighbours"][0]["label"] == "Audi A4 Sedan 2012" and scores == sorted(scores, reverse=True)
    assert set(out["neighbours"][0]) == {"label", "score"}  # no server-side refs leak out
    assert out["unknown"] is False and isinstance(out["ood_score"], float)
    json.dumps(out, allow_nan=False)


def test_unknown_gets_no_name(served, photo):
    app, client = served
    rec = app.store.rec
    known = client.predict(handle_file(photo), api_name="/identify")
    assert known["unknown"] is False and known["label"] == BASE[0]
    threshold = rec.ood.threshold
    rec.ood.threshold = -1.0  # every score is above it: everything is unknown
    try:
        out = client.predict(handle_file(photo), api_name="/identify")
    finally:
        rec.ood.threshold = threshold
    assert out["unknown"] is True and out["ood_score"] == pytest.approx(known["ood_score"], abs=1e-6)
    assert [out[k] for k in ("label", "make", "model", "type", "year")] == [None] * 5
    assert out["confidence"] == {k: 0.0 for k in known["confidence"]}
    assert out["neighbours"] == known["neighbours"]  # the nearest guesses stay visible


def test_identify_gives_a_partial_answer(served, photo):
    """The model-level check fires but the make is confident: /identify names the make only."""
    from vericar.search.calibration import Calibration

    app, client = served
    rec = app.store.rec
    threshold, calibration = rec.ood.threshold, rec.calibration
    rec.ood.threshold = -1.0  # every score is above it: the model level is unknown
    # make: named when its confidence clears 0.5; type: no threshold, so never named for an unknown model
    rec.calibration = Calibration({lvl: 0.05 for lvl in ("model", "make", "type", "year")}, {"make": 0.5})
    try:
        out = client.predict(handle_file(photo), api_name="/identify")
    finally:
        rec.ood.threshold, rec.calibration = threshold, calibration
    assert out["unknown"] is True and (out["label"], out["model"], out["year"], out["type"]) == (None,) * 4
    assert out["make"] == "Audi" and 0.5 <= out["confidence"]["make"] <= 1.0
    assert out["confidence"] == {"model": 0.0, "make": out["confidence"]["make"], "type": 0.0, "year": 0.0}
    assert out["unknown_levels"] == ["model", "type", "year"]
    # The wording says how sure, and only what is known: a partial answer, then a known and an unknown one.
    sure = f"{out['confidence']['make']:.0%}"
    assert out["summary"] == f"probably an Audi (make {sure}); type and model not in the gallery"
    assert out["vehicles"][0]["summary"] == out["summary"]
    json.dumps(out, allow_nan=False)
    known = client.predict(handle_file(photo), api_name="/identify")
    assert known["unknown"] is False and known["summary"] == known["label"] == "Audi A4 Sedan 2012"
    rec.ood.threshold, rec.calibration = -1.0, Calibration()  # no partial-answer thresholds: nothing is named
    try:
        unknown = client.predict(handle_file(photo), api_name="/identify")
    finally:
        rec.ood.threshold, rec.calibration = threshold, calibration
    assert unknown["summary"] == "unknown vehicle: neither its model nor its make is in the gallery"


def test_similar_and_explain(served, photo):
    _, client = served
    sim = client.predict(handle_file(photo), 4, api_name="/similar")
    assert len(sim) == 4 and sim[0]["label"] == "Audi A4 Sedan 2012" and sim[0]["score"] > 0.99
    assert [s["score"] for s in sim] == sorted((s["score"] for s in sim), reverse=True)
    overlay = client.predict(handle_file(photo), api_name="/explain")
    with Image.open(overlay) as im:
        assert im.size[0] >= 16 and im.size[1] >= 16


def test_enroll_identify_remove(served, tmp_path):
    app, client = served
    rec = app.store.rec
    paths = _photos(tmp_path, 501, 3, "new")
    status = client.predict([handle_file(p) for p in paths], NEW, api_name="/enroll")
    assert status["label"] == NEW and status["added"] == 3 and NEW in status["enrolled"]
    out = client.predict(handle_file(paths[1]), api_name="/identify")
    assert out["neighbours"][0]["label"] == NEW and out["neighbours"][0]["score"] > 0.99
    # Known and named, although KNN+ looks at the 5th neighbour and NEW has 3 photos: without the
    # recognizer's k cap its score would be that of another vehicle's photo (checked here), i.e. unknown.
    uncapped = rec.ood.score(rec.gallery.search(rec.embed([paths[1]]), rec.ood.k)[0])[0]
    assert uncapped > rec.ood.threshold >= out["ood_score"]
    assert out["unknown"] is False and out["label"] == NEW
    with pytest.raises(Exception, match="already added"):
        client.predict([handle_file(paths[0])], NEW, api_name="/enroll")
    with pytest.raises(Exception, match="model's own vehicles"):
        client.predict(BASE[0], api_name="/remove")
    gone = client.predict(NEW, api_name="/remove")
    assert gone["removed"] == 3 and NEW not in gone["enrolled"]
    after = client.predict(handle_file(paths[1]), api_name="/identify")
    assert NEW not in {n["label"] for n in after["neighbours"]}
    assert not (Path(app.store.dir) / "gallery.json").read_text().count(NEW)


def test_bad_input_then_still_serving(served, photo, tmp_path):
    _, client = served
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    with pytest.raises(Exception, match="(?i)image|photo"):
        client.predict(handle_file(str(text)), api_name="/identify")
    corrupt = tmp_path / "half.jpg"
    data = Path(_photos(tmp_path, 7, 1, "c")[0]).read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])
    with pytest.raises(Exception, match="(?i)corrupt or truncated"):
        client.predict(handle_file(str(corrupt)), api_name="/identify")
    with pytest.raises(Exception, match="(?i)no photos"):
        client.predict([], "Some Car", api_name="/enroll")
    with pytest.raises(Exception, match="(?i)label is empty"):
        client.predict([handle_file(photo)], "   ", api_name="/enroll")
    with pytest.raises(Exception, match="already a vehicle the model knows"):
        client.predict([handle_file(photo)], BASE[1].upper(), api_name="/enroll")
    with pytest.raises(Exception, match="(?i)notes.jpg"):  # nothing half-added by a bad photo among good ones
        client.predict([handle_file(photo), handle_file(str(text))], "Half Added Car", api_name="/enroll")
    assert client.predict(handle_file(photo), api_name="/identify")["neighbours"][0]["label"] == BASE[0]


@pytest.mark.parametrize("args, api, says", [  # args: what to send, given the photo as handle_file(...)
    (lambda f: ([f],), "/identify", "`image` must be one file: handle_file('car.jpg')"),
    (lambda f: ("car.jpg",), "/identify", "got the text 'car.jpg' (a path is uploaded only when wrapped in "
                                          "handle_file)"),
    (lambda f: (f, NEW), "/enroll", "`images` must be a list of files: [handle_file('car.jpg'), ...]"),
    (lambda f: ([f, "/etc/passwd"], NEW), "/enroll", "got a list of 2 items, item 2 being the text '/etc/passwd'"),
    (lambda f: (["http://192.0.2.1/car.jpg"] * 33, NEW), "/enroll",  # refused before any URL is fetched
     "33 photos is more than the 32 accepted at once"),
    (lambda f: ([handle_file("http://192.0.2.1/car.jpg")], NEW), "/enroll",  # Gradio would fetch it: refused first
     "an http(s) URL in a list is not fetched"),
    (lambda f: ([f, f],), "/identify", "2 files were sent where one photo is accepted"),
    (lambda f: (handle_file("http://192.0.2.1/a.jpg"),), "/remove",  # a file as the label: never fetched
     "This input takes text or a number, not files; got 1 file."),
    (lambda f: (f, handle_file("http://192.0.2.1/a.jpg")), "/similar", "not files"),
    (lambda f: (f, "abc"), "/similar", "k must be a whole number between 1 and 50 (e.g. 5); got abc."),
    (lambda f: (f, 2.5), "/similar", "k must be a whole number between 1 and 50"),
    (lambda f: (f, 51), "/similar", "k must be a whole number between 1 and 50"),
])
def test_wrong_payload_shapes_say_what_to_send(served, photo, args, api, says):
    """Gradio's payload validation fails before the app runs: its answer names what to send, not "upstream"."""
    _, client = served
    with pytest.raises(Exception) as e:
        client.predict(*args(handle_file(photo)), api_name=api)
    assert says in str(e.value) and "upstream" not in str(e.value) and "/tmp" not in str(e.value)
    assert len(client.predict(handle_file(photo), 4.0, api_name="/similar")) == 4  # a whole float is a whole number


def test_sixteen_concurrent_identify(served, photo):
    _, client = served
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda _: client.predict(handle_file(photo), api_name="/identify"), range(16)))
    assert len({o["label"] for o in outs}) == 1 and all(o["neighbours"][0]["label"] == BASE[0] for o in outs)


def test_upload_cap(served, app_module, photo, tmp_path):
    """main()'s launch options refuse a file over the cap before any of it is decoded; each way in
    says so in its own words (README, public-Space section; the page's: tests/browser)."""
    import httpx
    from gradio.utils import _parse_file_size

    app, client = served
    big = tmp_path / "huge.png"
    cap = _parse_file_size(app_module.launch_options()["max_file_size"])
    big.write_bytes(Path(photo).read_bytes() + b"\0" * cap)
    with pytest.raises(ValueError, match=f"File .*huge.png exceeds the maximum file size of {cap} bytes"):
        client.predict(handle_file(str(big)), api_name="/identify")  # gradio_client checks before uploading
    with big.open("rb") as f:  # a raw HTTP upload
        r = httpx.post(app.demo.local_url.rstrip("/") + "/gradio_api/upload", files=[("files", ("huge.png", f))],
                       timeout=60)
    assert r.status_code == 413 and f"File size exceeded maximum allowed size of {cap} bytes." in r.text
    assert client.predict(handle_file(photo), api_name="/identify")["label"] == BASE[0]


MODEL_EVENTS = {"identify", "similar", "explain", "enroll", "remove", "ui_identify", "ui_explain", "ui_enroll",
                "ui_remove"}


def test_model_calls_share_one_concurrency_limit(app_module, artifact, tmp_path, photo):
    """identify, similar and explain at once, with concurrency=1: never two model calls together."""
    rec = hub.load(f"local-dir:{artifact}")
    state = {"now": 0, "most": 0}
    lock, local = threading.Lock(), threading.local()

    def counted(fn):
        def wrapper(*args, **kwargs):
            if getattr(local, "inside", False):  # explain() calls predict(): one model call
                return fn(*args, **kwargs)
            local.inside = True
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            try:
                time.sleep(0.05)  # widen the window in which an overlap would show
                return fn(*args, **kwargs)
            finally:
                with lock:
                    state["now"] -= 1
                local.inside = False
        return wrapper

    for name in ("predict", "similar", "explain", "enroll", "remove"):
        setattr(rec, name, counted(getattr(rec, name)))
    app, client = _launch(app_module, artifact, tmp_path / "data", rec=rec, concurrency=1)
    try:
        groups = {(f.name, f.concurrency_id, f.concurrency_limit) for f in app.demo.fns.values()
                  if f.name in MODEL_EVENTS}
        assert {g[0] for g in groups} == MODEL_EVENTS and {g[1:] for g in groups} == {("model", 1)}
        calls = [("/identify", (handle_file(photo),)), ("/similar", (handle_file(photo), 3)),
                 ("/explain", (handle_file(photo),))] * 3
        with ThreadPoolExecutor(len(calls)) as pool:
            outs = list(pool.map(lambda c: client.predict(*c[1], api_name=c[0]), calls))
    finally:
        app.demo.close()
    assert len(outs) == 9 and outs[0]["label"] == BASE[0] and state["most"] == 1


def test_enrolled_survive_restart(app_module, artifact, tmp_path):
    data = tmp_path / "data"
    paths = _photos(tmp_path, 601, 2, "keep")
    app, client = _launch(app_module, artifact, data)
    try:
        client.predict([handle_file(p) for p in paths], NEW, api_name="/enroll")
    finally:
        app.demo.close()
        app.store.close()  # the data dir is held until the store closes (or its process ends)
    app, client = _launch(app_module, artifact, data)  # a fresh model load over the same data dir
    try:
        out = client.predict(handle_file(paths[0]), api_name="/identify")
        assert out["neighbours"][0]["label"] == NEW
        assert app.store.summary() == [(NEW, 2)]
    finally:
        app.demo.close()
        app.store.close()


def test_model_card_and_examples(artifact, tmp_path):
    from vericar.ui import present

    rec = hub.load(f"local-dir:{artifact}")
    md, curve = present.model_card(rec, f"local-dir:{artifact}")
    assert "top1" in md and "train/train.py --config offline-cpu" in md and curve is None
    paths = present.make_examples(tmp_path / "ex")
    assert len(paths) == 3 and all(Image.open(p).size == (320, 200) for p in paths)
    tile = present.placeholder("A very long vehicle label that needs wrapping 2012", 0.5)
    assert tile.size == present.TILE


def test_missing_model_gives_clear_error_page(app_module, tmp_path):
    with pytest.raises(Exception, match="config.json"):
        app_module.create_app(f"local-dir:{tmp_path}", tmp_path)
    page = app_module.error_demo("the model folder has no config.json")
    text = " ".join(b.value for b in page.blocks.values() if isinstance(b, gr.Markdown))
    assert "could not start" in text and "the model folder has no config.json" in text and "VERICAR_MODEL" in text


def test_unknown_notice_names_no_vehicle():
    from vericar.ui.present import result_markdown
    from vericar.core.recognizer import Prediction

    pred = Prediction(label="Audi A4 Sedan 2012", make="Audi", model="A4", type="Sedan", year="2012",
                      confidence={"model": 0.4}, unknown=True, ood_score=0.731)
    md = result_markdown(pred, 0.25)
    assert "Unknown vehicle" in md and "0.731" in md and "0.250" in md and "Audi" not in md
    pred.unknown_levels = ["model", "type", "year"]  # the make is confident on its own
    pred.confidence = {"model": 0.4, "make": 0.7}
    md = result_markdown(pred, 0.25)
    assert md.startswith("### Probably an Audi (make 70%); type and model not in the gallery")
    assert "A4" not in md and "Sedan" not in md
    pred.unknown_levels = ["model", "make", "year"]  # only the type
    pred.confidence = {"model": 0.4, "make": 0.3, "type": 0.96}
    md = result_markdown(pred, 0.25)
    assert md.startswith("### A Sedan (96%); make and model not in the gallery") and "Audi" not in md
    pred.ood_score = 0.2  # flagged by the make-confidence floor, not by its score: said so
    assert "disagree on its make" in result_markdown(pred, 0.25)
    pred.unknown, pred.unknown_levels = False, []
    assert "Audi A4 Sedan 2012" in result_markdown(pred, 0.25)
