"""Which photos a batch run reads: files, folders (recursive, image types only) and CSVs with a ``file`` column."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable

from vericar.core.errors import VericarError

#: What a folder is searched for (case-insensitive). A file named on the command line is read whatever its name.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def find_photos(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The photos ``paths`` name, each once, in the order given (a folder's in sorted order).

    A folder is searched recursively for image files (``IMAGE_SUFFIXES``); a ``.csv`` file lists photos in
    its ``file`` column, relative to the CSV's folder unless absolute; any other file is a photo (a bad one
    gets an error row later, it is not skipped). VericarError for a path that does not exist or a CSV
    without a ``file`` column.
    """
    found: dict[str, None] = {}  # ordered set
    for p in map(Path, paths):
        if p.is_dir():
            found.update(dict.fromkeys(_walk(p)))
        elif p.suffix.lower() == ".csv" and p.is_file():
            found.update(dict.fromkeys(_from_csv(p)))
        elif p.exists():
            found[str(p)] = None
        else:
            raise VericarError(f"{p} does not exist; give photo files, folders of photos or a CSV with a 'file' "
                               "column.")
    return list(found)


def _walk(folder: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return out


def _from_csv(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            if "file" not in (reader.fieldnames or []):
                raise VericarError(f"{path} has no 'file' column (its columns: {reader.fieldnames}); a CSV of "
                                   "photos needs one, with a path per row (relative to the CSV's folder).")
            names = [row["file"] for row in reader if row.get("file")]
    except UnicodeDecodeError as e:
        raise VericarError(f"{path} is not UTF-8 text ({e}); save it as UTF-8 CSV.") from e
    return [n if os.path.isabs(n) else os.path.join(path.parent, n) for n in names]
