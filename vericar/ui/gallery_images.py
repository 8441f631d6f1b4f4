"""Photos behind a gallery's references, for the app's "most similar vehicles" tiles and examples.

A shipped gallery keeps references such as ``stanford_cars:train/02050.jpg`` (dataset, split folder,
file), not the photos. ``image_source(spec)`` resolves them against

* ``DIR``: a local copy of the dataset (``DIR/train/02050.jpg``; ``python app.py --gallery-images DIR``),
* ``hf-dataset:ORG/NAME``: a Hugging Face dataset read with ``datasets`` (a Space; default
  :data:`HUB_DATASET`), row ``NNNNN - 1`` of the split the folder names (train -> train,
  dev -> test).

Either way a photo is shown only when its class, as the source records it (``DIR/<split>.csv`` or
the dataset's label names), is the gallery entry's label: a source in another order shows text
tiles, never a wrong car. Both also give the page real test photos as examples.

The Stanford Cars copy in ``../shared`` stores its train photos with red and blue swapped
(docs/attributes.md); a model trained on it records that (``meta.train_photos_channels``,
train/fix_channels.py), and ``swapped_csv`` then names the CSV of the copy whose photos a local
source shows swapped back, so a red car's tile is red.
"""
from __future__ import annotations

import csv
import functools
import itertools
import logging
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from vericar.core.errors import VericarError
from vericar.evaluation.data import swapped_csv
from vericar.vision.images import make_thumbnail, open_image, swap_red_blue

log = logging.getLogger(__name__)
HUB_DATASET = "tanganke/stanford_cars"
TILE_SIZE = 256
_REF = re.compile(r"^(?:[\w.-]+:)?(?P<split>train|dev|test)/(?P<stem>\d{1,6})\.(?:jpg|jpeg|png)$")
HUB_SPLITS = {"train": "train", "dev": "test", "test": "test"}


class LocalImages:
    """A local copy of the dataset: ``root/<split>/<file>`` with ``root/<split>.csv`` (file, class_name);
    the photos listed in ``root/<swapped>`` are stored with red and blue swapped and shown swapped back."""

    def __init__(self, root: str | Path, swapped: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise VericarError(f"--gallery-images {root}: no such folder; point it at a copy of the dataset "
                               "(e.g. ../shared/data/stanford_cars).")
        self._names: dict[str, str] = {}
        self._swapped: set[str] = set()
        for table in sorted(self.root.glob("*.csv")):
            with table.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    if row.get("file") and row.get("class_name"):
                        self._names[row["file"]] = row["class_name"]
                        if table.name == swapped:
                            self._swapped.add(row["file"])

    def _path(self, ref: str, label: str | None) -> Path | None:
        m = _REF.match(ref or "")
        if not m:
            return None
        rel = ref.split(":", 1)[-1]
        if label is not None and self._names.get(rel) != label:
            return None
        path = (self.root / rel).resolve()
        return path if path.is_relative_to(self.root) and path.is_file() else None

    def tile(self, ref: str, label: str | None = None) -> Image.Image | None:
        """The photo behind ``ref`` (a TILE_SIZE thumbnail) if it is there and shows ``label``."""
        path = self._path(ref, label)
        return _thumb(str(path), ref.split(":", 1)[-1] in self._swapped) if path else None

    def examples(self, n: int = 3) -> list[tuple[str, str]]:
        """``n`` real photos of the test split (dev folder) as (path, class name), spread over classes."""
        rows = sorted((f, c) for f, c in self._names.items() if f.startswith("dev/"))
        step = max(1, len(rows) // max(n, 1))
        return [(str(self.root / f), c) for f, c in rows[::step][:n] if (self.root / f).is_file()]


@functools.lru_cache(maxsize=256)
def _thumb(path: str, swapped: bool = False) -> Image.Image | None:
    try:
        photo = open_image(path)
    except VericarError:
        return None
    return make_thumbnail(swap_red_blue(photo) if swapped else photo, TILE_SIZE)


class HubImages:
    """A Hugging Face image-classification dataset (columns ``image``, ``label`` as a ClassLabel).

    A split is downloaded once, in a background thread, so no request waits for it: until it is
    there (or when the Hub cannot be reached) tiles are text. Examples stream only a few rows.
    """

    def __init__(self, repo: str = HUB_DATASET, *, load: Callable[..., Any] | None = None,
                 background: bool = True) -> None:
        self.repo, self.background = repo, background
        if load is None:
            try:
                from datasets import load_dataset as load  # lazy: only a Space (or a test) needs it
            except ImportError as e:
                raise VericarError("hf-dataset: gallery images need the 'datasets' package: pip install "
                                   "datasets") from e
        self._load = load
        self._splits: dict[str, Any] = {}
        self._loading: dict[str, threading.Thread] = {}
        self._tiles: dict[tuple[str, str | None], Image.Image] = {}
        self._lock = threading.Lock()

    def warm(self, split: str = "train") -> threading.Thread | None:
        """Start downloading ``split`` (once); returns the loading thread (None when run inline / loaded)."""
        with self._lock:
            if split in self._splits or split in self._loading:
                return self._loading.get(split)
            if not self.background:
                self._fetch(split)
                return None
            t = threading.Thread(target=self._fetch, args=(split,), daemon=True, name=f"vericar-hub-{split}")
            self._loading[split] = t
        t.start()
        return t

    def _fetch(self, split: str) -> None:
        try:
            ds = self._load(self.repo, split=split)
        except Exception as e:  # the Hub is down, the dataset moved: text tiles, and say why once
            log.warning("gallery images from %s unavailable (%s); showing text tiles", self.repo, e)
            ds = None
        self._splits[split] = ds

    def tile(self, ref: str, label: str | None = None) -> Image.Image | None:
        """The photo behind ``ref`` if the dataset holds it under ``label`` (None while it downloads)."""
        m = _REF.match(ref or "")
        if not m:
            return None
        if (ref, label) in self._tiles:
            return self._tiles[(ref, label)]
        split, index = HUB_SPLITS[m["split"]], int(m["stem"]) - 1
        self.warm(split)
        ds = self._splits.get(split)
        if ds is None or not 0 <= index < len(ds):
            return None
        row = ds[index]
        if label is not None and ds.features["label"].int2str(int(row["label"])) != label:
            return None  # the dataset is in another order than the gallery's refs: never a wrong car
        tile = make_thumbnail(open_image(row["image"]), TILE_SIZE)
        if len(self._tiles) < 512:
            self._tiles[(ref, label)] = tile
        return tile

    def examples(self, n: int = 3, folder: Path | None = None) -> list[tuple[str, str]]:
        """``n`` photos of the test split saved under ``folder`` (at start-up; never committed).

        Streams the first rows only, so a Space starts without downloading the split.
        """
        ds = self._load(self.repo, split="test", streaming=True)
        names = ds.features["label"]
        folder = folder or Path(".")
        folder.mkdir(parents=True, exist_ok=True)
        out: list[tuple[str, str]] = []
        for j, row in enumerate(itertools.islice(ds, 0, 40 * n)):
            if j % 40:  # every 40th row: a few different cars
                continue
            path = folder / f"test-{j:05d}.jpg"
            if not path.is_file():  # whole or absent: another app on this data dir may be serving it
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                open_image(row["image"]).save(tmp, format="JPEG", quality=90)
                os.replace(tmp, path)
            out.append((str(path), names.int2str(int(row["label"]))))
        return out


def image_source(spec: str | None, meta: dict[str, Any] | None = None) -> LocalImages | HubImages | None:
    """``DIR`` or ``hf-dataset:ORG/NAME`` (see the module doc); None for None / "". ``meta``: the model's,
    which says whether its training photos in a local copy are stored swapped (``swapped_csv``)."""
    if not spec:
        return None
    if spec.startswith("hf-dataset:"):
        source = HubImages(spec[len("hf-dataset:"):] or HUB_DATASET)
        source.warm("train")  # the shipped gallery's refs are train photos: fetch them before anyone asks
        return source
    return LocalImages(spec, swapped_csv(meta or {}, spec))


DRAWINGS_NOTE = ("These examples are drawings, not photos: the model was trained on photos of real cars, so a "
                 "drawing comes back as an *unknown vehicle*. Upload a photo of a car to see it named.")


def page_examples(source: LocalImages | HubImages | None, folder: Path) -> tuple[list[str], str, str]:
    """The Identify tab's examples: (paths, their label, a note for the page).

    Real test photos from ``source`` when it has them (fetched at start-up into ``folder``, which
    is a data folder, never the repository); else the drawn vehicles, said to be drawings.
    """
    from vericar.ui.present import make_examples  # present draws the fallback examples

    if source is not None:
        try:
            real = (source.examples(3, folder / "real") if isinstance(source, HubImages) else source.examples(3))
            if real:
                return [p for p, _ in real], "Examples (Stanford Cars test photos)", ""
        except Exception as e:  # no network on the Space's first start: the drawings still work
            log.warning("no real example photos from %s (%s); using drawings", source, e)
    return make_examples(folder), "Examples (drawings, not photos)", DRAWINGS_NOTE
