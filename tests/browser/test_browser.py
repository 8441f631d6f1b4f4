"""End-to-end in a real browser: open the app, upload a photo, read the prediction, save a screenshot.

Runs only where Debian's chromium (/usr/bin/chromium, or $VERICAR_CHROMIUM) and the Python
`playwright` package are installed; playwright's own browsers are never downloaded. The app
serves the tiny test model unless $VERICAR_BROWSER_MODEL names another spec (e.g. "default",
for a README screenshot of the real model). Writes docs/screenshot.png.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from gradio_client import handle_file

from conftest import make_car_image
from test_app import BASE, _launch, make_artifact

CHROMIUM = os.environ.get("VERICAR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"

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


def test_upload_identify_screenshot(tmp_path):
    import app as app_module  # noqa: PLC0415 - after the skips: importing builds the module-level demo

    spec = os.environ.get("VERICAR_BROWSER_MODEL")
    artifact = Path(spec[len("local-dir:"):]) if spec and spec.startswith("local-dir:") else None
    if spec and artifact is None:
        demo = app_module.create_app(spec, tmp_path / "data")
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        from gradio_client import Client

        client = Client(demo.local_url, verbose=False)
    else:
        demo, client = _launch(app_module, artifact or make_artifact(tmp_path / "model"), tmp_path / "data")
    photo = tmp_path / "car.png"
    make_car_image(1, size=(320, 200)).save(photo)
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
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    assert SCREENSHOT.stat().st_size > 10_000
