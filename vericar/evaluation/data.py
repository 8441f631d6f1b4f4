"""Data sources with one interface: Stanford Cars from the HF Hub, or a local CSV.

A source yields ``Sample(image, label, class_name)`` where ``image`` is a file path (local CSV)
or a PIL image (Hub). The CSV format is the one of ``shared/data/stanford_cars``:
``file,label,class_name`` with paths relative to the CSV.
"""
from __future__ import annotations

import csv
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from vericar.core.errors import VericarError

HF_DEFAULT = "tanganke/stanford_cars"
CSV_COLUMNS = ("file", "label", "class_name")


@dataclass(frozen=True)
class Sample:
    """One labelled photo: ``image`` is a path or an already-decoded PIL image."""

    image: Any
    label: int
    class_name: str
    row_ref: str | None = None  # stable id of a photo that has no path (a Hub dataset row)
    # What the vehicle looks like, when the CSV has ``colour`` / ``viewpoint`` columns (empty: not labelled).
    colour: str | None = None
    viewpoint: str | None = None

    @property
    def ref(self) -> str:
        """A stable reference to the photo: its path, or ``hf:NAME/SPLIT/ROW``."""
        return self.image if isinstance(self.image, str) else (self.row_ref or "")


_SHORT_REF = re.compile(r"^[\w.-]*:[\w.-]+/[^/:]+$")


def short_ref(ref: str) -> str:
    """"dataset:folder/file" for a photo path: what a shipped gallery keeps of it (no local paths).
    A reference already in that form stays as it is (a shipped gallery shipped again)."""
    if _SHORT_REF.match(ref):
        return ref
    p = Path(ref)
    return f"{p.parent.parent.name}:{p.parent.name}/{p.name}" if p.parent.name else ref


def portable_value(v: Any) -> Any:
    """An absolute path (also behind a "local-dir:" spec) keeps only its last part; anything else stays
    (what a shipped artifact records of a command: no machine's folders)."""
    if not isinstance(v, str):
        return v
    prefix, sep, rest = v.partition("local-dir:")
    if sep and not prefix and os.path.isabs(rest):
        return f"local-dir:{Path(rest).name}"
    return Path(v).name if os.path.isabs(v) else v


def load_csv(path: str | Path) -> list[Sample]:
    """Read a local CSV (``file,label,class_name``; paths relative to the CSV; optional ``colour``, ``viewpoint``)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a CSV" if path.is_dir() else "not found"
        raise VericarError(f"CSV {path} {what}; give a file such as ../shared/data/stanford_cars/train.csv.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no column
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise VericarError(
                    f"{path} lacks column(s) {missing}; expected a header 'file,label,class_name' "
                    "(paths relative to the CSV)."
                )
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise VericarError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as a UTF-8 CSV "
                           "with the header 'file,label,class_name'.") from None
    samples = []
    for n, row in enumerate(rows, start=2):
        try:
            label = int(row["label"])
        except ValueError:
            raise VericarError(f"{path}:{n}: label {row['label']!r} is not an integer class id.") from None
        samples.append(Sample(str(path.parent / row["file"]), label, row["class_name"].strip(),
                              colour=(row.get("colour") or "").strip() or None,
                              viewpoint=(row.get("viewpoint") or "").strip() or None))
    if not samples:
        raise VericarError(f"{path} has a header but no rows.")
    return samples


def load_hf(name: str = HF_DEFAULT, split: str = "train") -> list[Sample]:
    """Stanford Cars from the Hugging Face Hub (columns ``image``, ``label`` with ClassLabel names)."""
    try:
        from datasets import load_dataset  # lazy: only Hub users need it
    except ImportError as e:
        raise VericarError("reading from the Hub needs the 'datasets' package: pip install -r requirements-train.txt") from e

    try:
        ds = load_dataset(name, split=split)
    except (OSError, ValueError) as e:  # offline (ConnectionError is an OSError), no such dataset or split
        raise VericarError(f"hf:{name} (split {split!r}) could not be loaded ({type(e).__name__}: {str(e)[:160]}); "
                           "check the name and the network, or pass a local CSV (file,label,class_name).") from e
    names = ds.features["label"].names
    return [
        Sample(row["image"], int(row["label"]), names[int(row["label"])], f"hf:{name}/{split}/{i}")
        for i, row in enumerate(ds)
    ]


def load_source(source: str, split: str = "train") -> list[Sample]:
    """``hf:ORG/NAME`` (the Hub) or a path to a local CSV."""
    if source.startswith("hf:"):
        return load_hf(source[3:] or HF_DEFAULT, split=split)
    return load_csv(source)


_HOLDOUT = re.compile(r"^\s*label\s*(%\s*(\d+)\s*)?(==|!=|<=|>=|<|>)\s*(\d+)\s*$")
_OPS: dict[str, Callable[[int, int], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def parse_holdout(expr: str) -> Callable[[int], bool]:
    """Parse an open-world holdout rule such as ``label%5==4`` into a predicate on class ids.

    Parsed, never ``eval``-ed: it comes from the command line.
    """
    m = _HOLDOUT.match(expr or "")
    if not m:
        raise VericarError(
            f"holdout rule {expr!r} not understood; write it as 'label%N==R' or 'label<N' (e.g. \"label%5==4\")."
        )
    mod, op, value = m.group(2), m.group(3), int(m.group(4))
    if mod is not None and int(mod) == 0:
        raise VericarError("holdout rule divides by zero ('label%0'); use a positive modulus.")
    fn = _OPS[op]
    return (lambda y: fn(y % int(mod), value)) if mod is not None else (lambda y: fn(y, value))


def split_holdout(samples: Sequence[Sample], expr: str | None) -> tuple[list[Sample], list[Sample]]:
    """(kept, held-out) by a holdout rule; with no rule everything is kept."""
    if not expr:
        return list(samples), []
    held = parse_holdout(expr)
    return [s for s in samples if not held(s.label)], [s for s in samples if held(s.label)]


def stratified_split(
    samples: Sequence[Sample], val_fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``val_fraction`` of each class (at least one photo of classes with ≥ 2)."""
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        items = by_class[label][:]
        rng.shuffle(items)
        n_val = max(1, round(len(items) * val_fraction)) if len(items) >= 2 and val_fraction > 0 else 0
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return train, val


# A model's meta key saying how the photos it was trained on are stored ("bgr": red and blue swapped),
# written by train/fix_channels.py when it makes the network take photos as they are.
TRAIN_CHANNELS = "train_photos_channels"


def swapped_csv(meta: dict[str, Any], root: str | Path) -> str | None:
    """The CSV of the dataset copy at ``root`` whose photos are stored with red and blue swapped: the
    training CSV of a model that records it was trained on such photos, when that CSV is in ``root``
    (its path as recorded, from the working folder or the repository); else None."""
    data = str((meta.get("train_config") or {}).get("data") or "")
    if meta.get(TRAIN_CHANNELS) != "bgr" or not data.endswith(".csv"):
        return None
    here = Path(root).expanduser().resolve()
    repo = Path(__file__).resolve().parents[2]  # the repository: recorded paths are relative to it
    for base in (Path.cwd(), repo):
        candidate = (base / data).resolve()
        if candidate.parent == here and candidate.is_file():
            return candidate.name
    return None


def refuse_swapped(meta: dict[str, Any], csv_path: str, flag: str) -> None:
    """VericarError when ``csv_path`` is the training CSV whose photos are stored with red and blue
    swapped, of a model since made to take photos as they are (train/fix_channels.py): embedded as
    stored, they would all sit in the wrong channel order. (It matches the CSV, not its photos: a
    copy listing some of them is not caught.)"""
    path = Path(csv_path)
    if path.suffix == ".csv" and swapped_csv(meta, path.parent) == path.name:
        raise VericarError(
            f"{flag} {csv_path}: these photos are stored with red and blue swapped, and this model was fixed to "
            f"take photos as they are (meta.{TRAIN_CHANNELS}, docs/attributes.md), so their embeddings would "
            "be wrong. Use the model's own gallery (it was embedded right), or run on a copy that takes them as "
            "stored: python train/fix_channels.py --undo --artifact COPY.")
