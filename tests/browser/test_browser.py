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


def _overlay_then_screenshot(page, path: Path, timeout: int) -> None:
    """The Grad-CAM++ slider (before, after) comes from a chained event: wait for it, then shoot."""
    expect(page.locator("#vericar-overlay img").last).to_be_visible(timeout=timeout)
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def _serve(tiny: Path, tmp_path: Path, monkeypatch):
    """The app over $VERICAR_BROWSER_MODEL if set (e.g. "default" for the docs' screenshots), else over
    ``tiny``; data under tmp_path. Returns (the app, a gradio_client.Client)."""
    # Importing app builds its module-level demo from these: the tiny model, data under tmp_path
    # (never the real default model, never ~/.cache).
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{tiny}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "import-data"))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app_module = importlib.import_module("app")
    spec = os.environ.get("VERICAR_BROWSER_MODEL")
    if spec and not spec.startswith("local-dir:"):
        app = app_module.create_app(spec, tmp_path / "data")
        app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        return app, Client(app.demo.local_url, verbose=False)
    return _launch(app_module, Path(spec[len("local-dir:"):]) if spec else tiny, tmp_path / "data")


def test_upload_identify_screenshot(tmp_path, monkeypatch):
    tiny = make_artifact(tmp_path / "model")
    screenshot = Path(os.environ.get("VERICAR_SCREENSHOT") or tmp_path / "screenshot.png")
    app, client = _serve(tiny, tmp_path, monkeypatch)
    photo = tmp_path / "car.png"
    vehicle_photo(0, 1).save(photo)  # one of the tiny model's "Audi A4 Sedan 2012" photos
    try:
        want = client.predict(handle_file(str(photo)), api_name="/identify")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(app.demo.local_url, wait_until="load")
                page.locator("#vericar-photo input[type=file]").set_input_files(str(photo))
                page.locator("#vericar-identify").click()
                result = page.locator("#vericar-result")
                names = "|".join(re.escape(n) for n in ([want["label"]] if want["label"] else BASE))
                expect(result).to_contain_text(re.compile(f"{names}|Unknown vehicle|model not in the gallery"),
                                               timeout=60_000)
                shown = result.inner_text()
                # The page says what the API says for the same photo.
                if want["unknown"] and (want["make"] or want["type"]):  # a partial answer
                    assert "model not in the gallery" in shown and (want["make"] or want["type"]) in shown
                elif want["unknown"]:
                    assert "Unknown vehicle" in shown
                else:
                    assert want["label"] in shown
                _overlay_then_screenshot(page, screenshot, timeout=60_000)
            finally:
                browser.close()
    finally:
        app.demo.close()
    assert screenshot.stat().st_size > 10_000


HOSTILE = '<img src="http://127.0.0.1:9/pixel.png" width=400> [click](http://127.0.0.1:9/x)'


def _public_app(tmp_path, monkeypatch):
    """The app in public mode over the tiny model (its module imported as above)."""
    tiny = make_artifact(tmp_path / "model")
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{tiny}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "import-data"))
    monkeypatch.setenv("VERICAR_PUBLIC", "1")
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app_module = importlib.import_module("app")
    return _launch(app_module, tiny, tmp_path / "data")


def _toast(page) -> str:
    """The text of the error toast(s) on the page, waiting for one to appear."""
    toast = page.get_by_test_id("toast-text").first
    expect(toast).to_be_visible(timeout=60_000)
    return " ".join(page.get_by_test_id("toast-text").all_inner_texts())


def test_public_visitors_isolated_labels_are_text_errors_readable(tmp_path, monkeypatch):
    app, client = _public_app(tmp_path, monkeypatch)
    photos = []
    for shot in range(2):
        p = tmp_path / f"new{shot}.png"
        vehicle_photo(77, shot).save(p)
        photos.append(str(p))
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is not a picture")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                a = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
                b = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
                fetched = []
                a.on("request", lambda r: fetched.append(r.url) if "pixel.png" in r.url else None)
                for page in (a, b):  # (public mode keeps a heartbeat open for the unload event: no "networkidle")
                    page.goto(app.demo.local_url, wait_until="load")
                    expect(page.locator("#vericar-photo input[type=file]")).to_have_count(1, timeout=60_000)
                # A non-image in the Identify tab: vericar's message, naming the file, not the server path.
                b.locator("#vericar-photo input[type=file]").set_input_files(str(notes))
                b.locator("#vericar-identify").click()
                shown = _toast(b)
                assert "notes.jpg: The upload is not an image" in shown and "/tmp" not in shown
                # A file over the upload cap: refused by the page itself, in Gradio's words (README).
                big = tmp_path / "big.png"
                big.write_bytes(b"\x89PNG" + b"\0" * (25 * 2**20))
                b.locator("#vericar-photo input[type=file]").set_input_files(str(big))
                too_big = 'File(s) exceed the maximum allowed size of 25.0 Mb: "big.png"'
                expect(b.get_by_test_id("toast-text").filter(has_text=too_big).first).to_be_visible(timeout=60_000)
                # Visitor A adds a vehicle with a hostile name: it is shown as text, no <img> made of it.
                a.get_by_role("tab", name="Add a vehicle").click()
                a.locator("#vericar-photos input[type=file]").set_input_files(photos)
                a.locator("#vericar-free textarea, #vericar-free input").first.fill(HOSTILE)
                a.locator("#vericar-add").click()
                expect(a.locator("#vericar-status")).to_contain_text("Added", timeout=60_000)
                expect(a.locator("#vericar-listing")).to_contain_text(HOSTILE)
                assert a.locator("img[src*='pixel.png']").count() == 0 and not fetched
                assert a.locator("#vericar-listing a, #vericar-status a").count() == 0  # no link either
                # Visitor B, another browser context, sees none of A's vehicles.
                b.reload(wait_until="load")
                b.get_by_role("tab", name="Add a vehicle").click()
                expect(b.locator("#vericar-listing")).to_contain_text("No vehicles added yet")
                assert "pixel" not in b.content()
                # A's photo identified by A names A's vehicle (escaped); by B it does not.
                for page in (a, b):
                    page.get_by_role("tab", name="Identify").click()
                    page.locator("#vericar-photo input[type=file]").set_input_files(photos[0])
                    page.locator("#vericar-identify").click()
                    expect(page.locator("#vericar-result")).to_contain_text(re.compile("Unknown|score"), timeout=60_000)
                assert "pixel.png" in a.locator("#vericar-result").inner_text()
                assert "pixel.png" not in b.locator("#vericar-result").inner_text()
                assert a.locator("img[src*='pixel.png']").count() == 0 and not fetched
                assert a.locator("a[href*='127.0.0.1:9']").count() == 0  # the Markdown link stayed text everywhere
                # A closes the page: the session ends and its vehicles are freed.
                assert app.vehicles.sessions() == 1
                a.close()
                for _ in range(120):
                    if app.vehicles.sessions() == 0:
                        break
                    b.wait_for_timeout(500)
                assert app.vehicles.sessions() == 0
            finally:
                browser.close()
    finally:
        app.demo.close()


CARS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "stanford_cars"


@pytest.mark.skipif(not (CARS / "dev.csv").is_file(), reason=f"no Stanford Cars copy at {CARS}")
def test_photo_tiles_and_model_card_screenshots(tmp_path, monkeypatch):
    """The shipped model with --gallery-images: similar vehicles are photos; the model card's curve loads.

    Screenshots go to tmp_path, or to $VERICAR_DOCS_DIR (docs/identify.png, docs/model_card.png):
        VERICAR_DOCS_DIR=docs python -m pytest tests/browser -q -k screenshots
    """
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{make_artifact(tmp_path / 'model')}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "import-data"))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app_module = importlib.import_module("app")
    app = app_module.create_app("default", tmp_path / "data", gallery_images=str(CARS))
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    out = Path(os.environ.get("VERICAR_DOCS_DIR") or tmp_path)
    photo = CARS / "dev" / "00009.jpg"  # a BMW X5 SUV 2007 of the test split
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(app.demo.local_url, wait_until="load")
                expect(page.get_by_text("Examples (Stanford Cars test photos)")).to_be_visible(timeout=60_000)
                page.locator("#vericar-photo input[type=file]").set_input_files(str(photo))
                page.locator("#vericar-identify").click()
                expect(page.locator("#vericar-result")).to_contain_text("threshold", timeout=60_000)
                tiles = page.locator("#vericar-neighbours img")
                expect(tiles.first).to_be_visible(timeout=60_000)
                expect(page.locator("#vericar-overlay img").last).to_be_visible(timeout=60_000)
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "identify.png"), full_page=True)
                page.get_by_role("tab", name="Model card").click()
                curve = page.locator("#vericar-curve img")
                curve.scroll_into_view_if_needed(timeout=60_000)  # Gradio loads images lazily
                expect(curve).to_be_visible(timeout=60_000)
                assert curve.evaluate("img => img.complete && img.naturalWidth > 0")
                card = page.locator("#vericar-card").inner_text()
                assert "/work" not in card and "None" not in card and "../shared" not in card
                page.screenshot(path=str(out / "model_card.png"), full_page=True)
            finally:
                browser.close()
    finally:
        app.demo.close()
    assert (out / "identify.png").stat().st_size > 50_000


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
    app = app_module.create_app(spec, tmp_path / "data", detector=SSD)
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        want = Client(app.demo.local_url, verbose=False).predict(handle_file(str(photo)), api_name="/identify")
        assert len(want["vehicles"]) == 3
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.goto(app.demo.local_url, wait_until="load")
                page.locator("#vericar-photo input[type=file]").set_input_files(str(photo))
                page.locator("#vericar-identify").click()
                result = page.locator("#vericar-result")
                expect(result).to_contain_text("Other vehicles in the photo", timeout=120_000)
                assert result.inner_text().count("unknown-vehicle score") >= 2  # one line per other vehicle
                expect(page.locator("#vericar-boxes img")).to_be_visible(timeout=60_000)
                _overlay_then_screenshot(page, screenshot, timeout=120_000)
            finally:
                browser.close()
    finally:
        app.demo.close()
    assert screenshot.stat().st_size > 10_000


def _cache_files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


def test_page_files_stay_while_shown_and_go_with_the_page(tmp_path, monkeypatch):
    """Two pages with the same photo (one server file: Gradio names uploads by content). A's
    results stay fetchable while A shows them, past the API's delivery time; A's leaving does not
    remove B's pending upload; when both pages are closed, the Gradio cache holds what it held."""
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    tiny = make_artifact(tmp_path / "model")
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{tiny}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "import-data"))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app, _ = _launch(importlib.import_module("app"), tiny, tmp_path / "data", delivery_s=1.0)
    before = _cache_files(cache)
    photo, new = tmp_path / "car.png", [tmp_path / "new0.png", tmp_path / "new1.png"]
    vehicle_photo(0, 1).save(photo)
    for i, p in enumerate(new):
        vehicle_photo(78, i).save(p)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                a, b = (browser.new_context(viewport={"width": 1280, "height": 1000}).new_page() for _ in "ab")
                for page in (a, b):
                    page.goto(app.demo.local_url, wait_until="load")
                    expect(page.locator("#vericar-photo input[type=file]")).to_have_count(1, timeout=60_000)
                b.locator("#vericar-photo input[type=file]").set_input_files(str(photo))  # uploaded, not sent
                expect(b.locator("#vericar-photo img")).to_be_visible(timeout=60_000)
                a.locator("#vericar-photo input[type=file]").set_input_files(str(photo))
                a.locator("#vericar-identify").click()
                expect(a.locator("#vericar-result")).to_contain_text(BASE[0], timeout=60_000)
                expect(a.locator("#vericar-overlay img").last).to_be_visible(timeout=60_000)
                a.get_by_role("tab", name="Add a vehicle").click()
                a.locator("#vericar-photos input[type=file]").set_input_files([str(x) for x in new])
                a.locator("#vericar-free textarea, #vericar-free input").first.fill("Pagemake Car Sedan 2020")
                a.locator("#vericar-add").click()
                expect(a.locator("#vericar-status")).to_contain_text("Added", timeout=60_000)
                a.get_by_role("tab", name="Identify").click()
                a.wait_for_timeout(2500)  # past the 1 s an API answer's files are kept
                shown = [s for s in a.locator("#vericar-boxes img, #vericar-overlay img, #vericar-neighbours img")
                         .evaluate_all("els => els.map(e => e.src)") if "/file=" in s]
                assert len(shown) >= 3
                assert all(a.request.get(s).status == 200 for s in shown), shown  # still there while shown
                a.close()  # A leaves: its results, photo and enrolment photos go ...
                assert _wait_for(lambda: app.files.counts()["kept"] == 0)
                b.locator("#vericar-identify").click()  # ... but not B's upload of the same photo
                expect(b.locator("#vericar-result")).to_contain_text(BASE[0], timeout=60_000)
                assert a.context.request.get(shown[0]).status != 200
                b.close()
                assert _wait_for(lambda: _cache_files(cache) == before), sorted(_cache_files(cache) - before)
            finally:
                browser.close()
    finally:
        app.demo.close()


def _wait_for(cond, timeout: float = 60.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.2)
    return cond()


def test_compare_tab_shows_verdict_names_and_heatmaps(tmp_path, monkeypatch):
    """The Compare tab: two photos in, the verdict and probability the API gives, both names, both
    vehicles with their boxes and a Grad-CAM++ of each."""
    from test_compare import calibration, with_compare

    tiny = with_compare(make_artifact(tmp_path / "model"), calibration())
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{tiny}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "import-data"))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app_module = importlib.import_module("app")
    app, client = _launch(app_module, tiny, tmp_path / "data")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    vehicle_photo(0, 1).save(paths[0])
    vehicle_photo(0, 2).save(paths[1])
    try:
        want = client.predict(handle_file(str(paths[0])), handle_file(str(paths[1])), api_name="/compare")
        verdict = {True: "Same model", False: "Different models", None: "Not sure"}[want["same_model"]]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.goto(app.demo.local_url, wait_until="load")
                page.get_by_role("tab", name="Compare").click()
                page.locator("#vericar-compare-a input[type=file]").set_input_files(str(paths[0]))
                page.locator("#vericar-compare-b input[type=file]").set_input_files(str(paths[1]))
                page.locator("#vericar-compare").click()
                result = page.locator("#vericar-compare-result")
                expect(result).to_contain_text(verdict, timeout=60_000)
                shown = result.inner_text()
                assert f"{want['probability']:.0%}" in shown and (want["a"]["label"] or "unknown vehicle") in shown
                for box in ("found-a", "found-b", "cam-a", "cam-b"):
                    expect(page.locator(f"#vericar-compare-{box} img")).to_be_visible(timeout=60_000)
                page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
            finally:
                browser.close()
    finally:
        app.demo.close()
    assert (tmp_path / "compare.png").stat().st_size > 10_000


def _tiny_with_insights(tmp_path: Path) -> Path:
    """The tiny model, its insights made by the real evaluate --report on drawn photos of its four
    vehicles and one it does not know, put into the artifact as train/ship.py --insights does."""
    from vericar.evaluate import main as evaluate
    from vericar.evaluation import insights

    tiny = make_artifact(tmp_path / "model")
    (tmp_path / "q").mkdir()
    rows = ["file,label,class_name"]
    for c, name in enumerate(BASE + ["Othermake Van Minivan 2001"]):
        for i in range(3):
            vehicle_photo(c if c < len(BASE) else 55, 200 + i).save(tmp_path / "q" / f"{c}_{i}.png")
            rows.append(f"q/{c}_{i}.png,{c},{name}")
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    evaluate(["--model", f"local-dir:{tiny}", "--queries", str(tmp_path / "q.csv"), "--detector", "none",
              "--no-progress", "--report", str(tmp_path / "report")])
    insights.copy_into(tmp_path / "report", tiny)
    return tiny


def test_insights_tab_shows_the_table_plots_and_added_vehicles(tmp_path, monkeypatch):
    """The Insights tab: the per-class table, the per-make bar plot, a class's figures, the vehicles added.
    The docs' screenshot: VERICAR_BROWSER_MODEL=default VERICAR_INSIGHTS_SCREENSHOT=docs/insights.png."""
    screenshot = Path(os.environ.get("VERICAR_INSIGHTS_SCREENSHOT") or tmp_path / "insights.png")
    app, client = _serve(_tiny_with_insights(tmp_path), tmp_path, monkeypatch)
    shots = []
    for i in range(2):
        shots.append(str(tmp_path / f"new{i}.png"))
        vehicle_photo(91, i).save(shots[-1])
    added = "Testmake Roadster Convertible 2024"
    client.predict([handle_file(s) for s in shots], added, api_name="/enroll")
    from vericar.evaluation import insights

    doc = insights.load(app.vehicles.store.rec.config.source.folder)
    first = doc["per_class"][0]["class"]  # the picker's first class
    lowest = sorted(doc["per_class"], key=lambda r: r["f1"])[0]["class"]  # the table's first row (it shows a window)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(app.demo.local_url, wait_until="load")
                page.get_by_role("tab", name="Insights").click()
                table = page.locator("#vericar-insights-table")
                expect(table).to_contain_text(lowest, timeout=60_000)
                expect(table).to_contain_text("most often taken for")
                # The bar plot is drawn (Vega renders it in the page), not just its frame.
                expect(page.locator("#vericar-insights-makes canvas, #vericar-insights-makes svg").first
                       ).to_be_visible(timeout=60_000)
                expect(page.locator("#vericar-insights-reliability img")).to_be_visible()
                expect(page.locator("#vericar-insights-added")).to_contain_text(added, timeout=60_000)
                expect(page.locator("#vericar-insights-added")).to_contain_text("2")
                page.locator("#vericar-insights-pick input").fill(first)
                page.get_by_role("option", name=first).first.click()
                expect(page.locator("#vericar-insights-class")).to_contain_text("precision", timeout=60_000)
                page.wait_for_timeout(500)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        app.demo.close()
    assert screenshot.stat().st_size > 10_000
