"""The Gradio app, launched in-process on a free port over a tiny model, driven with gradio_client."""
from __future__ import annotations

import importlib
import json
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from conftest import make_car_image
from vericar import hub
from vericar.gallery import Gallery
from vericar.model import create_model, embed_images
from vericar.ood import KNNOOD
from vericar.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # app.py lives at the repo root
BASE = ["Audi A4 Sedan 2012", "BMW X5 SUV 2007", "Ford F-150 Regular Cab 2012", "Honda Odyssey Minivan 2012"]
NEW = "Testmake Roadster Convertible 2024"


def make_artifact(out: Path) -> Path:
    """Save a tiny recognizer: 4 known vehicles x 3 photos, KNN+ calibrated, some thumbnails missing."""
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()
    imgs = [make_car_image(10 * c + i) for c in range(len(BASE)) for i in range(3)]
    labels = [lab for lab in BASE for _ in range(3)]
    emb = embed_images(model, imgs)
    thumbs = [im if i % 2 == 0 else None for i, im in enumerate(imgs)]  # odd ones get placeholder tiles
    gallery = Gallery.from_arrays(emb, labels, refs=[f"synthetic/{i}.png" for i in range(len(imgs))], thumbnails=thumbs)
    ood = KNNOOD(k=2)
    ood.calibrate(gallery.search(emb, 3)[0], exclude_self=True)
    meta = {"metrics": {"dev": {"top1": 0.5}}, "command": "python train/train.py --config offline-cpu"}
    Recognizer(model, gallery, ood, k=3, meta=meta).save_pretrained(out)
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


def _launch(app_module, artifact: Path, data_dir: Path):
    demo = app_module.build_demo(hub.load(f"local-dir:{artifact}"), data_dir, spec=f"local-dir:{artifact}")
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    return demo, Client(demo.local_url, verbose=False)


@pytest.fixture(scope="module")
def served(app_module, artifact, tmp_path_factory):
    demo, client = _launch(app_module, artifact, tmp_path_factory.mktemp("data"))
    yield demo, client
    demo.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("photos") / "known.png"
    make_car_image(1).save(path)  # one of "Audi A4 Sedan 2012"'s gallery photos
    return str(path)


def _photos(tmp: Path, seeds: list[int], stem: str) -> list[str]:
    paths = []
    for s in seeds:
        p = tmp / f"{stem}{s}.jpg"
        make_car_image(s, size=(120, 80)).save(p, quality=95)
        paths.append(str(p))
    return paths


def test_module_level_demo(app_module):
    assert isinstance(app_module.demo, gr.Blocks)
    names = {d["api_name"] for d in app_module.demo.config["dependencies"] if d.get("api_visibility") == "public"}
    assert {"identify", "similar", "explain", "enroll", "remove"} <= names


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


def test_similar_and_explain(served, photo):
    _, client = served
    sim = client.predict(handle_file(photo), 4, api_name="/similar")
    assert len(sim) == 4 and sim[0]["label"] == "Audi A4 Sedan 2012" and sim[0]["score"] > 0.99
    assert [s["score"] for s in sim] == sorted((s["score"] for s in sim), reverse=True)
    overlay = client.predict(handle_file(photo), api_name="/explain")
    with Image.open(overlay) as im:
        assert im.size[0] >= 16 and im.size[1] >= 16


def test_enroll_identify_remove(served, tmp_path):
    demo, client = served
    paths = _photos(tmp_path, [501, 502, 503], "new")
    status = client.predict([handle_file(p) for p in paths], NEW, api_name="/enroll")
    assert status["label"] == NEW and status["added"] == 3 and NEW in status["enrolled"]
    out = client.predict(handle_file(paths[1]), api_name="/identify")
    assert out["neighbours"][0]["label"] == NEW and out["neighbours"][0]["score"] > 0.99
    with pytest.raises(Exception, match="already added"):
        client.predict([handle_file(paths[0])], NEW, api_name="/enroll")
    with pytest.raises(Exception, match="model's own vehicles"):
        client.predict(BASE[0], api_name="/remove")
    gone = client.predict(NEW, api_name="/remove")
    assert gone["removed"] == 3 and NEW not in gone["enrolled"]
    after = client.predict(handle_file(paths[1]), api_name="/identify")
    assert NEW not in {n["label"] for n in after["neighbours"]}
    assert not (Path(demo.vericar_store.dir) / "gallery.json").read_text().count(NEW)


def test_bad_input_then_still_serving(served, photo, tmp_path):
    _, client = served
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    with pytest.raises(Exception, match="(?i)image|photo"):
        client.predict(handle_file(str(text)), api_name="/identify")
    corrupt = tmp_path / "half.jpg"
    data = Path(_photos(tmp_path, [7], "c")[0]).read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])
    with pytest.raises(Exception):
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


def test_sixteen_concurrent_identify(served, photo):
    _, client = served
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda _: client.predict(handle_file(photo), api_name="/identify"), range(16)))
    assert len({o["label"] for o in outs}) == 1 and all(o["neighbours"][0]["label"] == BASE[0] for o in outs)


def test_enrolled_survive_restart(app_module, artifact, tmp_path):
    data = tmp_path / "data"
    paths = _photos(tmp_path, [601, 602], "keep")
    demo, client = _launch(app_module, artifact, data)
    try:
        client.predict([handle_file(p) for p in paths], NEW, api_name="/enroll")
    finally:
        demo.close()
    demo, client = _launch(app_module, artifact, data)  # a fresh model load over the same data dir
    try:
        out = client.predict(handle_file(paths[0]), api_name="/identify")
        assert out["neighbours"][0]["label"] == NEW
        assert demo.vericar_store.summary() == [(NEW, 2)]
    finally:
        demo.close()


def test_model_card_and_examples(app_module, artifact, tmp_path):
    rec = hub.load(f"local-dir:{artifact}")
    md, curve = app_module._model_card(rec, f"local-dir:{artifact}")
    assert "top1" in md and "train/train.py --config offline-cpu" in md and curve is None
    paths = app_module.make_examples(tmp_path / "ex")
    assert len(paths) == 3 and all(Image.open(p).size == (320, 200) for p in paths)
    tile = app_module._placeholder("A very long vehicle label that needs wrapping 2012", 0.5)
    assert tile.size == app_module.TILE


def test_missing_model_gives_clear_error_page(app_module, tmp_path):
    with pytest.raises(Exception, match="config.json"):
        app_module.create_app(f"local-dir:{tmp_path}", tmp_path)
    assert isinstance(app_module.error_demo("no model"), gr.Blocks)


def test_unknown_notice_names_no_vehicle(app_module):
    from vericar.recognizer import Prediction

    pred = Prediction(label="Audi A4 Sedan 2012", make="Audi", model="A4", type="Sedan", year="2012",
                      confidence={"model": 0.4}, unknown=True, ood_score=0.731)
    md = app_module._result_markdown(pred, 0.25)
    assert "Unknown vehicle" in md and "0.731" in md and "0.250" in md and "Audi" not in md
    pred.unknown = False
    assert "Audi A4 Sedan 2012" in app_module._result_markdown(pred, 0.25)
