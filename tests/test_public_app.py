"""Public mode through the real app and gradio_client: each Client is one visitor."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from test_app import NEW, _launch, _photos, make_artifact, vehicle_photo, app_module  # noqa: F401

OTHER = "Othermake Wagon Wagon 2023"
TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact"))


@pytest.fixture(scope="module")
def public(app_module, artifact, tmp_path_factory):  # noqa: F811
    mp = pytest.MonkeyPatch()
    mp.setenv("VERICAR_PUBLIC", "1")
    mp.setenv("VERICAR_ADMIN_TOKEN", TOKEN)
    mp.setenv("VERICAR_WRITE_RATE", "8/60")
    app, client = _launch(app_module, artifact, tmp_path_factory.mktemp("data"))
    mp.undo()
    yield app, client
    app.demo.close()


def call(client: Client, *args, api_name: str) -> tuple[object, str]:
    """(result, "") or (None, error text): every reply's text is checked by the tests."""
    try:
        return client.predict(*args, api_name=api_name), ""
    except Exception as e:  # gradio_client raises AppError with the gr.Error message
        return None, str(e)


def test_two_visitors_cannot_see_or_remove_each_other(public, tmp_path):
    app, _ = public
    a, b = Client(app.demo.local_url, verbose=False), Client(app.demo.local_url, verbose=False)
    pa, pb = _photos(tmp_path, 501, 3, "a"), _photos(tmp_path, 502, 3, "b")
    out, err = call(a, [handle_file(p) for p in pa], NEW, api_name="/enroll")
    assert not err and out["enrolled"] == [NEW]
    out, err = call(b, [handle_file(p) for p in pb], OTHER, api_name="/enroll")
    assert not err and out["enrolled"] == [OTHER]  # A's vehicle is not listed to B
    mine = a.predict(handle_file(pa[1]), api_name="/identify")
    assert mine["label"] == NEW and mine["neighbours"][0]["label"] == NEW
    theirs = b.predict(handle_file(pa[1]), api_name="/identify")
    sim = b.predict(handle_file(pa[1]), 10, api_name="/similar")
    assert NEW not in json.dumps([theirs, sim]) and theirs["label"] != NEW
    out, err = call(b, NEW, api_name="/remove")
    assert out is None and "only vehicles added in this session" in err and OTHER in err
    out, err = call(a, OTHER, api_name="/remove")
    assert out is None and NEW in err and OTHER in err  # A asked for OTHER by name; only A's own are listed
    assert "yours: " + NEW in err
    assert a.predict(handle_file(pa[1]), api_name="/identify")["label"] == NEW  # still there for A
    vehicles = app.vehicles
    assert vehicles.public and len(vehicles.rec.gallery) == 24  # the shared gallery never changed
    assert not (Path(app.store.dir) / "gallery.json").exists()
    assert a.predict(NEW, api_name="/remove")["removed"] == 3
    assert b.predict(handle_file(pb[0]), api_name="/identify")["label"] == OTHER


def test_cap_and_rate_limit(public, tmp_path):
    app, _ = public
    c = Client(app.demo.local_url, verbose=False)
    p = _photos(tmp_path, 601, 1, "c")
    for i in range(5):
        out, err = call(c, [handle_file(p[0])], f"Capmake Car{i} Sedan 2020", api_name="/enroll")
        assert not err, err
    out, err = call(c, [handle_file(p[0])], "Capmake Car5 Sedan 2020", api_name="/enroll")
    assert out is None and "You have added 5 vehicles" in err
    out, err = call(c, "Capmake Car0 Sedan 2020", api_name="/remove")
    assert not err  # 7 writes of 8 per minute
    for _ in range(2):
        out, err = call(c, "Capmake Car1 Sedan 2020", api_name="/remove")
    assert out is None and "Too many additions and removals" in err


def test_shared_gallery_needs_the_admin_token(public, tmp_path):
    app, _ = public
    a, b = Client(app.demo.local_url, verbose=False), Client(app.demo.local_url, verbose=False)
    p = _photos(tmp_path, 701, 2, "s")
    for token in ("", "wrong", TOKEN[:-1]):
        out, err = call(a, token, [handle_file(x) for x in p], "Shared Car Sedan 2022", api_name="/admin_enroll")
        assert out is None and "Wrong admin token" in err
    out, err = call(a, TOKEN, [handle_file(x) for x in p], "Shared Car Sedan 2022", api_name="/admin_enroll")
    assert not err and out["added"] == 2
    assert b.predict(handle_file(p[0]), api_name="/identify")["neighbours"][0]["label"] == "Shared Car Sedan 2022"
    out, err = call(b, "Shared Car Sedan 2022", api_name="/remove")
    assert out is None  # a visitor cannot remove a shared vehicle
    assert call(a, TOKEN, "Shared Car Sedan 2022", api_name="/admin_remove")[0]["removed"] == 2


@pytest.mark.parametrize("label, match", [
    ("Аudi A4 Sedan 2012", "looks the same"), ("Au\u200bdi Z Sedan 2012", "U+200B"),
    ("Evil \u202eCar", "U+202E"),
])
def test_hostile_labels_refused(public, photo_path, label, match):
    app, _ = public
    out, err = call(Client(app.demo.local_url, verbose=False), [handle_file(photo_path)], label, api_name="/enroll")
    assert out is None and match in err


def test_html_and_markdown_labels_are_text(public, photo_path):
    app, _ = public
    c = Client(app.demo.local_url, verbose=False)
    for label in ('<img src="http://host/pixel.png" width=400>', "[click me](http://evil.example)"):
        out, err = call(c, [handle_file(photo_path)], label, api_name="/enroll")
        assert not err and out["label"] == label  # stored as typed; shown escaped (test_labels, browser test)
        out, err = call(c, [handle_file(photo_path)], label, api_name="/enroll")
        assert "<img" not in err and "&lt;img" in err or "[click me]" in err  # errors echo it HTML-escaped


@pytest.fixture
def photo_path(tmp_path) -> str:
    p = tmp_path / "car.jpg"
    vehicle_photo(3, 0, size=(120, 80)).save(p)
    return str(p)


def bad_uploads(tmp: Path) -> dict[str, Path]:
    """Non-image, empty, truncated, decompression bomb and too-small files."""
    files = {"notes.jpg": b"this is not a picture", "empty.png": b""}
    buf = io.BytesIO()
    vehicle_photo(1, 0, size=(200, 120)).save(buf, "JPEG")
    files["half.jpg"] = buf.getvalue()[: len(buf.getvalue()) // 3]
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, "PNG")  # 100 MP of zeros: a few KB
    files["bomb.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    files["tiny.png"] = buf.getvalue()
    out = {}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
        out[name] = tmp / name
    return out


def test_bad_uploads_name_the_file_not_the_server_path(public, tmp_path, photo_path):
    app, client = public
    for name, path in bad_uploads(tmp_path).items():
        for args, api in (((handle_file(str(path)),), "/identify"), ((handle_file(str(path)), 3), "/similar"),
                          (([handle_file(photo_path), handle_file(str(path))], "Bad Upload Car 2020"), "/enroll")):
            out, err = call(client, *args, api_name=api)
            assert out is None and name in err and "/tmp" not in err and "gradio/" not in err, (api, err)
    assert client.predict(handle_file(photo_path), api_name="/identify")["neighbours"]
