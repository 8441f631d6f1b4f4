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
"""
from __future__ import annotations

import csv
import functools
import logging
import re
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from .errors import VericarError
from .images import make_thumbnail, open_image

log = logging.getLogger(__name__)
HUB_DATASET = "tanganke/stanford_cars"
TILE_SIZE = 256
_REF = re.compile(r"^(?:[\w.-]+:)?(?P<split>train|dev|test)/(?P<stem>\d{1,6})\.(?:jpg|jpeg|png)$")
HUB_SPLITS = {"train": "train", "dev": "test", "test": "test"}


class LocalImages:
    """A local copy of the dataset: ``root/<split>/<file>`` with ``root/<split>.csv`` (file, class_name)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise VericarError(f"--gallery-images {root}: no such folder; point it at a copy of the dataset "
                               "(e.g. ../shared/data/stanford_cars).")
        self._names: dict[str, str] = {}
        for table in sorted(self.root.glob("*.csv")):
            with table.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    if row.get("file") and row.get("class_name"):
                        self._names[row["file"]] = row["class_name"]

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
        return _thumb(str(path)) if path else None

    def examples(self, n: int = 3) -> list[tuple[str, str]]:
        """``n`` real photos of the test split (dev folder) as (path, class name), spread over classes."""
        rows = sorted((f, c) for f, c in self._names.items() if f.startswith("dev/"))
        step = max(1, len(rows) // max(n, 1))
        return [(str(self.root / f), c) for f, c in rows[::step][:n] if (self.root / f).is_file()]


@functools.lru_cache(maxsize=256)
def _thumb(path: str) -> Image.Image | None:
    try:
        return make_thumbnail(open_image(path), TILE_SIZE)
    except VericarError:
        return None


class HubImages:
    """A Hugging Face image-classification dataset (columns ``image``, ``label`` as a ClassLabel)."""

    def __init__(self, repo: str = HUB_DATASET, *, load: Callable[..., Any] | None = None) -> None:
        self.repo = repo
        if load is None:
            try:
                from datasets import load_dataset as load  # lazy: only a Space (or a test) needs it
            except ImportError as e:
                raise VericarError("hf-dataset: gallery images need the 'datasets' package: pip install "
                                   "datasets") from e
        self._load = load
        self._splits: dict[str, Any] = {}

    def _split(self, name: str) -> Any:
        if name not in self._splits:
            self._splits[name] = self._load(self.repo, split=name)
        return self._splits[name]

    def _row(self, split: str, index: int) -> tuple[Image.Image, str] | None:
        ds = self._split(split)
        if not 0 <= index < len(ds):
            return None
        row = ds[index]
        return row["image"], ds.features["label"].int2str(int(row["label"]))

    @functools.lru_cache(maxsize=256)
    def tile(self, ref: str, label: str | None = None) -> Image.Image | None:
        """The photo behind ``ref`` if the dataset holds it under ``label``."""
        m = _REF.match(ref or "")
        if not m:
            return None
        try:
            got = self._row(HUB_SPLITS[m["split"]], int(m["stem"]) - 1)
        except Exception as e:  # the Hub is down, the dataset moved: text tiles, and say why once
            log.warning("gallery images from %s unavailable (%s); showing text tiles", self.repo, e)
            return None
        if got is None or (label is not None and got[1] != label):
            return None
        return make_thumbnail(open_image(got[0]), TILE_SIZE)

    def examples(self, n: int = 3, folder: Path | None = None) -> list[tuple[str, str]]:
        """``n`` photos of the test split saved under ``folder`` (at start-up; never committed)."""
        ds = self._split("test")
        out = []
        for i in range(n):
            j = (i * 997 + 11) % len(ds)  # spread over the split (it is ordered by nothing we rely on)
            img, name = open_image(ds[j]["image"]), ds.features["label"].int2str(int(ds[j]["label"]))
            folder = folder or Path(".")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"test-{j:05d}.jpg"
            img.save(path, quality=90)
            out.append((str(path), name))
        return out


def image_source(spec: str | None) -> LocalImages | HubImages | None:
    """``DIR`` or ``hf-dataset:ORG/NAME`` (see the module doc); None for None / ""."""
    if not spec:
        return None
    if spec.startswith("hf-dataset:"):
        return HubImages(spec[len("hf-dataset:"):] or HUB_DATASET)
    return LocalImages(spec)


DRAWINGS_NOTE = ("These examples are drawings, not photos: the model was trained on photos of real cars, so a "
                 "drawing comes back as an *unknown vehicle*. Upload a photo of a car to see it named.")


def page_examples(source: LocalImages | HubImages | None, folder: Path) -> tuple[list[str], str, str]:
    """The Identify tab's examples: (paths, their label, a note for the page).

    Real test photos from ``source`` when it has them (fetched at start-up into ``folder``, which
    is a data folder, never the repository); else the drawn vehicles, said to be drawings.
    """
    from .present import make_examples  # present draws the fallback examples

    if source is not None:
        try:
            real = (source.examples(3, folder / "real") if isinstance(source, HubImages) else source.examples(3))
            if real:
                return [p for p, _ in real], "Examples (Stanford Cars test photos)", ""
        except Exception as e:  # no network on the Space's first start: the drawings still work
            log.warning("no real example photos from %s (%s); using drawings", source, e)
    return make_examples(folder), "Examples (drawings, not photos)", DRAWINGS_NOTE
