"""The app's Insights tab: where the shipped model is right and wrong, and what it learned from.

Everything shown comes from the model's ``insights/`` folder (vericar/evaluation/insights.py, made by
``python -m vericar.evaluate ... --report DIR`` and put in the artifact by ``train/ship.py --insights
DIR``) and its training log (``metrics.csv``), read once when the page is built: nothing is computed
per view. Photos are shown only when they are at hand: gallery entries with thumbnails, or the
``--gallery-images`` source; otherwise tiles carry the class names.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from vericar.core.errors import VericarError
from vericar.evaluation import insights
from vericar.ui.handlers import Handlers, session_of
from vericar.ui.labels import md_text
from vericar.ui.present import TILE, placeholder

log = logging.getLogger(__name__)
SAMPLES = 6  # sample photos shown for a picked class
TABLE_COLUMNS = {"class": "class", "make": "make", "support": "dev photos", "precision": "precision",
                 "recall": "recall", "f1": "F1", "confused_with": "most often taken for", "confused_count": "times"}


class InsightsView:
    """The tab's data: the insights file, the training log and the photos at hand for a class."""

    def __init__(self, h: Handlers) -> None:
        self.h = h
        rec = h.vehicles.store.rec
        source = rec.config.source
        self.folder = Path(source.folder) if source and source.folder else None
        self.problem = ""
        try:
            self.doc = insights.load(self.folder) if self.folder else None
        except VericarError as e:  # a broken file: the tab says so, the rest of the app serves
            log.warning("insights: %s", e)
            self.doc, self.problem = None, str(e)
        self.rows = {r["class"]: r for r in (self.doc or {}).get("per_class", [])}
        self._pairs: list | None = None

    def table(self) -> pd.DataFrame:
        """The per-class table, lowest F1 first, columns renamed for reading."""
        df = pd.DataFrame(self.doc["per_class"]).sort_values("f1", kind="stable")
        return df[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS).round(4)

    def per_make(self) -> pd.DataFrame:
        """Per make: the share of its dev photos whose model is right."""
        return pd.DataFrame(self.doc["per_make"]).sort_values("model_accuracy", kind="stable")

    def curves(self) -> pd.DataFrame | None:
        """The training log's validation accuracies per epoch (long form), if the artifact has one."""
        path = self.folder / "metrics.csv" if self.folder else None
        if path is None or not path.is_file():
            return None
        log_ = pd.read_csv(path)
        cols = [c for c in log_.columns if c.startswith("val_top1_")]
        if "epoch" not in log_ or not cols:
            return None
        long = log_.melt("epoch", cols, var_name="level", value_name="validation top-1")
        long["level"] = long["level"].str.removeprefix("val_top1_")
        return long

    def figure(self, name: str, explore: bool = False) -> tuple[str, str] | None:
        """(path, caption) of a figure of the insights file."""
        figs = ((self.doc.get("explore") or {}).get("figures") or []) if explore else self.doc["figures"]
        for f in figs:
            if f["name"] == name:
                return str(Path(self.doc["folder"]) / f["file"]), f["caption"]
        return None

    def photos(self, label: str, n: int) -> list[Image.Image]:
        """Up to ``n`` photos of ``label`` at hand: the gallery's thumbnails or the gallery-images source."""
        rec, source, out = self.h.vehicles.store.rec, self.h.source, []
        for i, (lab, ref) in enumerate(zip(rec.gallery.labels, rec.gallery.refs)):
            if lab != label:
                continue
            img = (source.tile(ref, lab) if source and ref else None) or rec.thumbnail(i, lab)
            if img is not None:
                out.append(img)
                if len(out) == n:
                    break
        return out

    def pairs(self) -> list[tuple[Image.Image, str]]:
        """The most-confused pairs as tiles: a photo of each class when at hand, its name otherwise
        (kept once every photo was found: the Hub source fetches in the background)."""
        if self._pairs is not None:
            return self._pairs
        out, complete = [], True
        for p in self.doc["confusions"][:20]:
            tiles = []
            for label in (p["true"], p["predicted"]):
                found = self.photos(label, 1)
                complete &= bool(found)
                img = found[0].copy() if found else placeholder(label)
                img.thumbnail(TILE)
                tiles.append(img)
            both = Image.new("RGB", (2 * TILE[0] + 6, TILE[1]), (255, 255, 255))
            for k, img in enumerate(tiles):
                both.paste(img, (k * (TILE[0] + 6) + (TILE[0] - img.width) // 2, (TILE[1] - img.height) // 2))
            out.append((both, f"{p['count']}× {p['true']} → taken for {p['predicted']}"))
        if complete or self.h.source is None:
            self._pairs = out
        return out

    def pick(self, label: str | None) -> tuple[str, list]:
        """A class's figures (Markdown) and sample photos when at hand."""
        if not label:
            return "", []
        r = self.rows.get(label)
        counts = (self.doc.get("explore") or {}).get("class_counts") or {}
        lines = [f"### {md_text(label)}"]
        if label in counts:
            lines.append(f"Trained on **{counts[label]}** photos ({md_text(self.doc['explore']['source'])}).")
        if r:
            lines.append(f"On {r['support']} dev photos: precision {100 * r['precision']:.1f}%, recall "
                         f"{100 * r['recall']:.1f}%, F1 {100 * r['f1']:.1f}%.")
            if r["confused_count"]:
                lines.append(f"Most often taken for **{md_text(r['confused_with'])}** ({r['confused_count']}×).")
        photos = self.photos(label, SAMPLES)
        if not photos:
            lines.append("_No photos at hand: start the app with `--gallery-images DIR` (a copy of the dataset) "
                         "to see samples._")
        return "\n\n".join(lines), [(p, label) for p in photos]

    def added(self, request: gr.Request) -> pd.DataFrame:
        """Vehicles added by the user (this visitor's, in public mode) with their photo counts."""
        rows = self.h.vehicles.summary(session_of(request))
        return pd.DataFrame(rows or [], columns=["vehicle", "photos"])


def _headline(doc: dict[str, Any]) -> str:
    r = doc["result"]
    rows = [f"| {lvl} | {100 * r['top1'][lvl]:.2f}% | {100 * r['balanced_accuracy'][lvl]:.2f}% |" for lvl in r["top1"]]
    ood = (f"\n\nUnknown vehicles: AUROC {100 * r['ood']['auroc']:.2f}%, FPR95 {100 * r['ood']['fpr95']:.2f}%."
           if r.get("ood") else "")
    return (f"**{md_text(doc['title'])}** ({r['n_queries']:,} photos): top-5 model {100 * r['top5']['model']:.2f}%, "
            f"macro-F1 {100 * r['macro_f1']:.2f}%, Recall@1 {100 * r['recall_at_1']:.2f}%.\n\n"
            "| level | top-1 | balanced accuracy |\n|---|---|---|\n" + "\n".join(rows) + ood)


def _images(view: InsightsView, names: list[str], explore: bool = False) -> None:
    with gr.Row():
        for name in names:
            fig = view.figure(name, explore)
            if fig:
                gr.Image(fig[0], label=fig[1], interactive=False, elem_id=f"vericar-insights-{name}")


def _model_sections(view: InsightsView) -> None:
    """Everything about the model's dev run: headline, table, per make, confusions, reliability, training."""
    gr.Markdown(_headline(view.doc), elem_id="vericar-insights-headline")
    gr.Dataframe(view.table(), label="Per class (lowest F1 first; sort by a column, search by name)",
                 interactive=False, show_search="search", max_height=420, elem_id="vericar-insights-table")
    gr.BarPlot(view.per_make(), x="make", y="model_accuracy", title="Model accuracy per make (dev)",
               y_title="share of photos whose model is right", sort="y", y_lim=[0, 1], x_label_angle=-60,
               height=360, elem_id="vericar-insights-makes")
    if view.doc["confusions"]:
        gr.Gallery(view.pairs(), label="Most-confused pairs (true class, then the class it was taken for)",
                   columns=4, height=330, object_fit="contain", interactive=False, elem_id="vericar-insights-pairs")
    else:
        gr.Markdown("_No class was taken for another on this run._", elem_id="vericar-insights-pairs")
    with gr.Row():
        curves = view.curves()
        if curves is not None:
            gr.LinePlot(curves, x="epoch", y="validation top-1", color="level", title="Training curves",
                        y_lim=[0, 1], height=320, elem_id="vericar-insights-curves")
        fig = view.figure("reliability")
        if fig:
            gr.Image(fig[0], label=fig[1], interactive=False, elem_id="vericar-insights-reliability")
    _images(view, ["make_confusion", "unknown_scores"])


def insights_tab(h: Handlers) -> None:
    """Build the Insights tab (call inside the app's gr.Blocks)."""
    view = InsightsView(h)
    with gr.Tab("Insights", elem_id="vericar-insights-tab") as tab:
        if view.doc is None:
            gr.Markdown(view.problem or f"This model ships no insights file; {insights.HOW}.",
                        elem_id="vericar-insights-missing")
        else:
            _model_sections(view)
            explore = view.doc.get("explore")
            if explore:
                gr.Markdown(f"#### The photos it was trained on: {explore['n_photos']:,} photos of "
                            f"{explore['n_classes']} classes ({md_text(explore['source'])})")
                _images(view, ["class_counts", "sizes", "aspect"], explore=True)
                _images(view, ["colour", "blur"], explore=True)
            with gr.Row():
                picker = gr.Dropdown(sorted(view.rows), label="A class", value=None, elem_id="vericar-insights-pick")
            about = gr.Markdown(elem_id="vericar-insights-class")
            samples = gr.Gallery(label="Samples (photos at hand)", columns=6, height=200, object_fit="contain",
                                 interactive=False)
            picker.change(view.pick, [picker], [about, samples], api_visibility="private")
        added = gr.Dataframe(pd.DataFrame(columns=["vehicle", "photos"]), label="Vehicles added here",
                             interactive=False, elem_id="vericar-insights-added")
    tab.select(view.added, None, [added], api_visibility="private")
