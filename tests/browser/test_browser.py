"""End-to-end in a real browser: open the app, upload a photo, read the prediction, take a screenshot.

Runs only where Debian's chromium (/usr/bin/chromium, or $VERICAR_CHROMIUM) and the Python
`playwright` package are installed; playwright's own browsers are never downloaded. The app
serves the tiny test model and keeps everything under pytest's tmp_path, so a test run writes
nothing in the repository or the user's cache. The screenshot goes to tmp_path unless
$VERICAR_SCREENSHOT names a file; $VERICAR_BROWSER_MODEL serves another model spec. The README's
screenshot of the real model is made with:

    VERICAR_BROWSER_MODEL=default VERICAR_SCREENSHOT=docs/screenshot.png python -m pytest tests/browser -q
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from test_app import BASE, _launch, make_artifact, vehicle_photo

CHROMIUM = os.environ.get("VERICAR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the `playwright` Python package is not installed "
                       "(pip install playwright; never `playwright install`)"),
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no chromium at {CHROMIUM} "
                       "(apt-get install chromium, or set VERICAR_CHROMIUM)"),
]


def test_upload_identify_screenshot(tmp_path, monkeypatch):
    tiny = make_artifact(tmp_path / "model")
    # Importing app builds its module-level demo from these: the tiny model, data under tmp_path
    # (never the real default model, never ~/.cache).
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{tiny}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "import-data"))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app_module = importlib.import_module("app")

    spec = os.environ.get("VERICAR_BROWSER_MODEL")
    screenshot = Path(os.environ.get("VERICAR_SCREENSHOT") or tmp_path / "screenshot.png")
    if spec and not spec.startswith("local-dir:"):
        demo = app_module.create_app(spec, tmp_path / "data")
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app_module.launch_options())
        client = Client(demo.local_url, verbose=False)
    else:
        artifact = Path(spec[len("local-dir:"):]) if spec else tiny
        demo, client = _launch(app_module, artifact, tmp_path / "data")
    photo = tmp_path / "car.png"
    vehicle_photo(0, 1).save(photo)  # one of the tiny model's "Audi A4 Sedan 2012" photos
    try:
        want = client.predict(handle_file(str(photo)), api_name="/identify")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(demo.local_url, wait_until="networkidle")
                page.locator("#vericar-photo input[type=file]").set_input_files(str(photo))
                page.locator("#vericar-identify").click()
                result = page.locator("#vericar-result")
                names = "|".join(re.escape(n) for n in ([want["label"]] if want["label"] else BASE))
                expect(result).to_contain_text(re.compile(f"{names}|Unknown vehicle"), timeout=60_000)
                shown = result.inner_text()
                # The page says what the API says for the same photo.
                if want["unknown"]:
                    assert "Unknown vehicle" in shown
                else:
                    assert want["label"] in shown
                # The Grad-CAM++ overlay comes from a chained event: wait for its image.
                expect(page.locator("#vericar-overlay img")).to_be_visible(timeout=60_000)
                page.wait_for_timeout(300)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    assert screenshot.stat().st_size > 10_000


def test_boxes_on_every_vehicle_screenshot(tmp_path, monkeypatch):
    """A street with three real cars: the page shows the photo with a box on each and a line per other
    vehicle. $VERICAR_SCENE_SCREENSHOT keeps the screenshot (the README's docs/screenshot-scene.png:
    VERICAR_BROWSER_MODEL=default VERICAR_SCENE_SCREENSHOT=docs/screenshot-scene.png)."""
    from test_detect import SSD, _real_photos, scene

    tiny = make_artifact(tmp_path / "model")
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{tiny}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "import-data"))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app_module = importlib.import_module("app")
    spec = os.environ.get("VERICAR_BROWSER_MODEL") or f"local-dir:{tiny}"
    screenshot = Path(os.environ.get("VERICAR_SCENE_SCREENSHOT") or tmp_path / "scene.png")
    frame, _ = scene(_real_photos(3), [(30, 330, 280, 160), (350, 270, 380, 230), (760, 350, 220, 130)],
                     size=(1000, 640))
    photo = tmp_path / "street.jpg"
    frame.save(photo, quality=92)
    demo = app_module.create_app(spec, tmp_path / "data", detector=SSD)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app_module.launch_options())
    try:
        want = Client(demo.local_url, verbose=False).predict(handle_file(str(photo)), api_name="/identify")
        assert len(want["vehicles"]) == 3
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.goto(demo.local_url, wait_until="networkidle")
                page.locator("#vericar-photo input[type=file]").set_input_files(str(photo))
                page.locator("#vericar-identify").click()
                result = page.locator("#vericar-result")
                expect(result).to_contain_text("Other vehicles in the photo", timeout=120_000)
                assert result.inner_text().count("unknown-vehicle score") >= 2  # one line per other vehicle
                expect(page.locator("#vericar-boxes img")).to_be_visible(timeout=60_000)
                expect(page.locator("#vericar-overlay img")).to_be_visible(timeout=120_000)
                page.wait_for_timeout(300)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    assert screenshot.stat().st_size > 10_000
