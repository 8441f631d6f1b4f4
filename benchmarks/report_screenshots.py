"""Screenshots of a report.html for the docs, with the dataset's photos hidden (they are not committed).

    python benchmarks/report_screenshots.py runs/report-dev docs/report-dev

writes PREFIX-top.png (headline figures and the most-confused pairs, photos hidden) and
PREFIX-makes.png (the make-level confusion matrix), rendered by headless Chromium (Debian's
/usr/bin/chromium through Playwright; Playwright's own browsers are never downloaded).
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

HIDE_PHOTOS = ".pair img { display: none !important; }"


def main(argv: list[str] | None = None) -> None:
    """Render the report and take the two screenshots."""
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", help="the report folder (python -m vericar.evaluate ... --report DIR)")
    ap.add_argument("prefix", help="screenshot path prefix, e.g. docs/report-dev")
    ap.add_argument("--chromium", default=os.environ.get("VERICAR_CHROMIUM") or shutil.which("chromium")
                    or "/usr/bin/chromium")
    args = ap.parse_args(argv)
    page_url = (Path(args.report) / "report.html").resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1150, "height": 1000})
            page.goto(page_url, wait_until="load")
            page.add_style_tag(content=HIDE_PHOTOS)
            page.wait_for_timeout(300)
            top = page.locator("#make_confusion").bounding_box()["y"]
            page.screenshot(path=f"{args.prefix}-top.png", clip={"x": 0, "y": 0, "width": 1150, "height": top - 10},
                            full_page=True)
            makes = page.locator("#make_confusion")
            box = makes.bounding_box()
            end = page.locator("#model_confusion").bounding_box()["y"]
            page.screenshot(path=f"{args.prefix}-makes.png", full_page=True,
                            clip={"x": 0, "y": box["y"] - 10, "width": 1150, "height": end - box["y"]})
        finally:
            browser.close()
    print(f"wrote {args.prefix}-top.png and {args.prefix}-makes.png")


if __name__ == "__main__":
    main()
