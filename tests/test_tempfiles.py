"""A request's temporary files do not outlive it: vericar.ui.tempfiles alone, then through the real app.

The app tests count every file under an isolated Gradio cache ($GRADIO_TEMP_DIR) before and after
full identify -> similar -> explain -> enroll -> remove cycles driven by gradio_client, including two
visitors using the same photo (Gradio names uploads by content, so they share one server path).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from test_app import BASE, _launch, _photos, app_module, artifact, vehicle_photo  # noqa: F401 (fixtures)
from vericar.ui.tempfiles import RequestFiles


def _upload(cache: Path, files: RequestFiles, name: str = "car.png", data: bytes = b"photo") -> str:
    """What Gradio's /upload does: <cache>/<content hash>/<name>, then tells the upload set."""
    path = cache / "0123abcd" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    files.uploaded([str(path)])
    return str(path)


def _wait(cond, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# ----------------------------------------------------------------------------- the lease rules alone
def test_api_request_deletes_its_upload_and_its_outputs_after_delivery(tmp_path):
    files = RequestFiles(tmp_path, delivery_s=0.3)
    up = _upload(tmp_path, files)
    with files.request("s1", [up]) as out:
        written = Path(out.image(Image.new("RGB", (8, 8)), "overlay", "png"))
        assert Path(up).exists() and written.exists()
    assert not Path(up).exists()  # nothing holds it and no other upload of it is pending
    assert written.exists()  # the answer names it: it stays while the client fetches it ...
    assert _wait(lambda: not written.parent.exists())  # ... and no longer
    assert files.counts() == {"held": 0, "pending": 0, "kept": 0, "due": 0}


def test_a_shared_upload_stays_until_every_visitor_is_done(tmp_path):
    files = RequestFiles(tmp_path, delivery_s=0.1)
    up = _upload(tmp_path, files)
    assert _upload(tmp_path, files) == up  # visitor B uploads the same photo: the same path
    with files.request("a", [up]):
        pass
    assert Path(up).exists()  # B's upload is still pending
    with files.request("b", [up]):
        assert Path(up).exists()
    assert not Path(up).exists()


def test_a_page_keeps_its_photo_and_result_until_replaced_or_closed(tmp_path):
    files = RequestFiles(tmp_path, delivery_s=0.1)
    first = _upload(tmp_path, files, "first.png", b"1")
    for step in ("found", "overlay"):  # the Identify chain: both events send the same upload
        with files.request("page", [first], hold_as="photo", keep_as=step) as out:
            out.image(Image.new("RGB", (8, 8)), step)
    kept = sorted((tmp_path / "vericar").iterdir())
    assert Path(first).exists() and len(kept) == 2
    time.sleep(0.3)
    assert all(k.exists() for k in kept)  # shown on the page: past the delivery time, still there
    with files.request("page", [first], hold_as="photo", keep_as="found"):  # Identify clicked again
        pass
    assert Path(first).exists()
    second = _upload(tmp_path, files, "second.png", b"2")
    with files.request("page", [second], hold_as="photo", keep_as="found"):  # another photo
        pass
    assert not Path(first).exists() and Path(second).exists()
    files.end_session("page")  # the page is closed
    assert not Path(second).exists()
    assert _wait(lambda: not any((tmp_path / "vericar").iterdir()))
    assert files.counts() == {"held": 0, "pending": 0, "kept": 0, "due": 0}


def test_a_request_still_running_when_its_page_closes_keeps_nothing(tmp_path):
    # The Identify chain's explain step can still run when the visitor closes the page: its photo and
    # result must go when it ends, not wait for a page that will never show or replace them.
    files = RequestFiles(tmp_path, delivery_s=10)
    up = _upload(tmp_path, files)
    with files.request("page", [up], hold_as="photo", keep_as="found"):
        pass
    with files.request("page", [up], hold_as="photo", keep_as="overlay") as out:
        written = Path(out.image(Image.new("RGB", (8, 8)), "after"))
        files.end_session("page")  # closed mid-request
        assert Path(up).exists()  # ... the running request still has it
    assert not Path(up).exists() and not written.parent.exists()
    assert files.counts() == {"held": 0, "pending": 0, "kept": 0, "due": 0}


def test_a_failed_request_leaves_nothing_and_unknown_files_are_never_deleted(tmp_path):
    files = RequestFiles(tmp_path, delivery_s=10)
    example = tmp_path / "fedcba98" / "example.png"  # an example Gradio cached: not an upload
    example.parent.mkdir()
    example.write_bytes(b"x")
    with pytest.raises(ValueError):
        with files.request("s", [str(example)], keep_as="found") as out:
            out.image(Image.new("RGB", (8, 8)))
            raise ValueError("bad photo")
    assert example.exists() and not any((tmp_path / "vericar").iterdir())


def test_unused_uploads_expire(tmp_path):
    files = RequestFiles(tmp_path, delivery_s=0.1, pending_s=0.2)
    up = _upload(tmp_path, files)  # refused before any request ran, or a page that never submitted
    time.sleep(0.3)
    with files.request("other", []):  # any request (or the reaper) drops expired uploads
        pass
    assert not Path(up).exists()


# ------------------------------------------------------------------------------- through the app
def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def isolated(app_module, artifact, tmp_path, monkeypatch):  # noqa: F811
    """The app with its own Gradio cache; answers' files are kept 3 s for the client to fetch."""
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    app, _ = _launch(app_module, artifact, tmp_path / "data", delivery_s=3.0)
    yield app, cache
    app.demo.close()


def _cycle(url: str, dl: Path, photo: str, new: list[str], label: str) -> dict:
    """identify -> similar -> explain -> enroll -> identify -> remove, as one visitor (one Client)."""
    c = Client(url, verbose=False, download_files=str(dl))
    out = {"identify": c.predict(handle_file(photo), api_name="/identify")}
    out["similar"] = c.predict(handle_file(photo), 3, api_name="/similar")
    with Image.open(c.predict(handle_file(photo), api_name="/explain")) as im:
        out["overlay"] = im.size
    out["enroll"] = c.predict([handle_file(p) for p in new], label, api_name="/enroll")
    out["mine"] = c.predict(handle_file(new[0]), api_name="/identify")["neighbours"][0]["label"]
    out["remove"] = c.predict(label, api_name="/remove")
    return out


def test_full_cycles_leave_no_file_behind(isolated, tmp_path):
    app, cache = isolated
    before = _files(cache)
    photo = tmp_path / "known.png"
    vehicle_photo(0, 1).save(photo)  # visitors A and B send this same file: one shared server path
    news = [_photos(tmp_path, 900 + i, 2, "new") for i in range(2)]  # each visitor's own new vehicle
    with ThreadPoolExecutor(2) as pool:  # two visitors at once, three cycles each
        outs = list(pool.map(lambda i: _cycle(app.demo.local_url, tmp_path / f"dl{i}", str(photo), news[i % 2],
                                              f"Tempmake Car{i} Sedan 2020"), range(6)))
    for o in outs:
        assert o["identify"]["neighbours"][0]["label"] == BASE[0] and len(o["similar"]) == 3
        assert min(o["overlay"]) >= 16 and o["enroll"]["added"] == 2 and o["remove"]["removed"] == 2
    assert _wait(lambda: _files(cache) == before), sorted(_files(cache) - before)
    assert app.files.counts() == {"held": 0, "pending": 0, "kept": 0, "due": 0}


def test_a_visitors_pending_upload_survives_another_visitors_cycle(isolated, tmp_path):
    """B has uploaded the photo (the page shows it) but not yet pressed a button; A uses the same
    photo for a whole cycle. B's request afterwards still finds its upload; then it goes."""
    app, cache = isolated
    url = app.demo.local_url.rstrip("/")
    before = _files(cache)
    photo = tmp_path / "known.png"
    vehicle_photo(0, 1).save(photo)
    with open(photo, "rb") as f:
        shared = httpx.post(f"{url}/gradio_api/upload", files={"files": ("known.png", f)}, timeout=30).json()[0]
    out = _cycle(url, tmp_path / "dl", str(photo), _photos(tmp_path, 950, 2, "new"), "Tempmake Other Sedan 2020")
    assert out["remove"]["removed"] == 2
    assert Path(shared).exists()  # A's requests are done, B's upload of the same file is not used yet
    event = httpx.post(f"{url}/gradio_api/call/identify", timeout=30,
                       json={"data": [{"path": shared, "meta": {"_type": "gradio.FileData"}}]}).json()["event_id"]
    reply = httpx.get(f"{url}/gradio_api/call/identify/{event}", timeout=60).text
    assert "event: complete" in reply, reply
    answer = json.loads(reply.split("event: complete\ndata:", 1)[1].strip())[0]
    assert answer["neighbours"][0]["label"] == BASE[0]
    assert _wait(lambda: _files(cache) == before), sorted(_files(cache) - before)
