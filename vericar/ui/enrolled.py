"""Vehicles added at run time (the app's "Add a vehicle"), kept across restarts.

    store = EnrolledStore(recognizer, default_data_dir())   # merges earlier additions into the recognizer
    store.enroll(["a.jpg", "b.jpg"], "Tesla Model 3 Sedan 2021")
    store.remove("Tesla Model 3 Sedan 2021")
    store.close()                                            # or `with EnrolledStore(...) as store:`

The added vehicles are a Gallery of their own under ``data_dir/enrolled/<model key>``: embeddings
only make sense for the model that made them, so another model starts with none of them.

One store per model folder: a store holds an exclusive lock on ``<its folder>/vericar.lock`` (an
OS file lock, freed by ``close()`` or when the process ends, even killed) from start to close. Two
stores on one folder would each save only their own in-memory vehicles, the last save silently
dropping the other's, so a second one (another ``python app.py`` of the same model on the same data
dir, or another store in this process) is refused at start with a message naming the folder. Apps
of different models share a data dir freely: their folders differ.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from filelock import FileLock, Timeout

from vericar.artifacts.config_file import legacy_model_dict
from vericar.core.errors import ArtifactError, VericarError
from vericar.core.recognizer import Recognizer
from vericar.models.embedding import check_views
from vericar.search.gallery import Gallery
from vericar.ui.labels import MAX_LABEL_LEN  # noqa: F401 - re-exported: the label rules live in labels.py
from vericar.ui.labels import check_not_confusable, html_text, normalise_label
from vericar.vision.images import open_image, photo_list

log = logging.getLogger(__name__)
MAX_ENROL_PHOTOS = 32
LOCK_NAME = "vericar.lock"
ADDED_DIR = "enrolled"  # data_dir/enrolled/<model key>: one folder of added vehicles per model
# The data dirs this process holds (to say which kind of holder it is); an entry goes with its lock,
# which a store dropped without close() releases when it is garbage collected.
_LOCKED_HERE: weakref.WeakValueDictionary[Path, FileLock] = weakref.WeakValueDictionary()


def default_data_dir() -> Path:
    """$VERICAR_DATA_DIR, else the per-user cache ($XDG_CACHE_HOME or ~/.cache)/vericar."""
    env = os.environ.get("VERICAR_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vericar"


def lock_data_dir(data_dir: str | os.PathLike) -> FileLock:
    """Take the exclusive lock of the folder ``data_dir`` (created if missing; a store's is its model's
    folder under the data dir) for as long as the result is not released.

    VericarError, naming the folder and the fix, when another store holds it or it cannot be written.
    """
    folder = Path(data_dir).expanduser().absolute()
    lock = FileLock(folder / LOCK_NAME, thread_local=False)  # one holder per store, whichever thread closes it
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        held = _LOCKED_HERE.get(folder.resolve())
        if held is not None and held.is_locked:
            raise VericarError(f"another EnrolledStore in this process is using the folder {folder}; two "
                               "stores on one folder lose each other's added vehicles. close() the other store "
                               "first (an app's: app.close()), or use another folder.") from None
        raise VericarError(f"another vericar app of this model is using its added vehicles in {folder} (it holds "
                           f"{LOCK_NAME} there); two apps on one folder lose each other's added vehicles. Stop the "
                           "other app, or set VERICAR_DATA_DIR (python app.py --data-dir) to another folder.") from None
    except OSError as e:
        raise VericarError(f"cannot keep added vehicles in {folder} ({e}); set VERICAR_DATA_DIR (python app.py "
                           "--data-dir) to a folder you can write to.") from e
    _LOCKED_HERE[folder.resolve()] = lock  # resolved: a folder reached through a link is the same folder
    return lock


def model_key(rec: Recognizer, tta: tuple[str, ...] | None = None) -> str:
    """Short fingerprint of the served model: enrolled embeddings only make sense for the model that made them
    (``tta``: as if its test-time views were these; default its own)."""
    # The pre-tree form of the model's description, so enrolments saved before it still match.
    described = legacy_model_dict(rec.model.model_cfg)
    views = rec.model.tta if tta is None else tta
    if views:  # other embeddings from the same weights; a plain model's key stays what it was
        described["tta"] = list(views)
    h = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    params = list(rec.model.parameters())
    for p in (params[:1] + params[-1:]):  # first and last tensors tell trained weights apart cheaply
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _say_if_left_behind(root: Path, rec: Recognizer, own: Path) -> None:
    """Vehicles added under the same weights embedded another way (before flip averaging) are not loaded:
    their embeddings would not compare with this model's. Say where they are, once, at start."""
    plain = root / ADDED_DIR / model_key(rec, tta=())
    if plain != own and (plain / "gallery.json").is_file() and not (own / "gallery.json").is_file():
        log.warning("vehicles added before this model averaged each photo with its mirror image are kept in %s "
                    "but not loaded (their embeddings are plain); add their photos again to use them", plain)


def read_added(data_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every model's added vehicles saved in ``data_dir`` (the app's local store, ``vericar enroll``), by
    model key, as plain data ({"embeddings", "labels", "refs"}) that can travel to other processes.

    A snapshot read without the stores' locks, so a reader (``vericar identify``) can run beside an app;
    a store saves atomically, so a snapshot is never half a save."""
    out: dict[str, dict[str, Any]] = {}
    root = Path(data_dir).expanduser() / ADDED_DIR
    for folder in sorted(root.glob("*/gallery.json")):
        for attempt in (0, 1):  # a save between reading gallery.json and its tensors file: read the new one
            try:
                g = Gallery.load(folder.parent)
                break
            except ArtifactError as e:
                if attempt:
                    raise ArtifactError(f"the added vehicles in {folder.parent} cannot be read ({e}); move that "
                                        "folder away to go on without them.") from e
        out[folder.parent.name] = {"embeddings": g.embeddings, "labels": list(g.labels), "refs": list(g.refs)}
    return out


def merge_added(rec: Recognizer, added: dict[str, dict[str, Any]]) -> list[str]:
    """Add to ``rec`` its model's vehicles from ``read_added``, as the app's store does at start (and, as
    ``EnrolledStore._load``, without those the model has learnt since). Returns their labels."""
    mine = added.get(model_key(rec))
    if not mine:
        return []
    base = {lab.casefold() for lab in rec.gallery.classes}
    rows = [i for i, lab in enumerate(mine["labels"]) if lab.casefold() not in base]
    if rows:
        rec.add_embeddings(np.asarray(mine["embeddings"])[rows], [mine["labels"][i] for i in rows],
                           refs=[mine["refs"][i] for i in rows])
    return sorted({mine["labels"][i] for i in rows})


def _copy(src: Gallery, rows: Iterable[int], add: Callable[..., Any]) -> None:
    """Pass entries ``rows`` of ``src`` (embeddings, labels, refs, thumbnails) to ``add`` (Gallery.add-like)."""
    rows = list(rows)
    if rows:
        add(src.embeddings[rows], [src.labels[i] for i in rows], refs=[src.refs[i] for i in rows],
            thumbnails=[src.thumbnail(i) for i in rows])


def clean_label(label: Any) -> str:
    """``label`` as plain text (vericar.search.labels.normalise_label: NFKC, whitespace collapsed); VericarError
    when not a string, empty, too long, or holding control / zero-width / bidi / blank-looking characters."""
    return normalise_label(label)


class EnrolledStore:
    """Vehicles added at run time: their own Gallery under ``data_dir/enrolled/<model key>``.

    On start it is merged into the recognizer's gallery; every enrol/remove changes both under one
    lock and saves the enrolled gallery atomically (Gallery.save), undoing the change in memory when
    the save fails, so a restart finds exactly the vehicles that were added and not removed.
    Enrolled labels never clash with the model's own labels, which is what makes removal exact
    (Recognizer.remove drops every entry of a label).
    """

    def __init__(self, rec: Recognizer, data_dir: str | os.PathLike) -> None:
        self.rec = rec
        root = Path(data_dir).expanduser()
        self.dir = root / ADDED_DIR / model_key(rec)
        _say_if_left_behind(root, rec, self.dir)
        self.lock = threading.Lock()
        self.base = {lab.casefold() for lab in rec.gallery.classes}
        # Before reading: this model's folder is ours from here (another model's store may share the data dir).
        self._dir_lock: FileLock | None = lock_data_dir(self.dir)
        try:
            self.gallery = self._load()
            _copy(self.gallery, range(len(self.gallery)), rec.add_embeddings)
        except BaseException:
            self.close()  # a store that failed to start must not keep the folder from the next attempt
            raise

    def _load(self) -> Gallery:
        """The saved added vehicles (none if nothing was saved), less those the model has learnt since."""
        if not (self.dir / "gallery.json").is_file():
            return Gallery(self.rec.gallery.dim, tta=self.rec.model.tta)
        try:
            saved = Gallery.load(self.dir)
            check_views(saved.tta, self.rec.model.tta)
        except ArtifactError as e:
            raise ArtifactError(f"the added vehicles in {self.dir} cannot be read ({e}); move that folder "
                                "away to start without them.") from e
        for label in saved.classes:
            if label.casefold() in self.base:  # the model learnt it since: its own entries win
                log.warning("enrolled vehicle %r is now part of the model; dropping the enrolled copy", label)
                saved.remove_label(label)
        return saved

    def close(self) -> None:
        """Release the folder for another store; this one then refuses changes, and its vehicles leave the
        recognizer (a new store over it reads them back from disk). Safe to call twice."""
        with self.lock:
            lock, self._dir_lock = self._dir_lock, None
            if lock is not None:
                for label in getattr(self, "gallery", Gallery(1)).classes:  # (none if it failed before loading)
                    self.rec.remove(label)
        if lock is not None:
            lock.release()

    def __enter__(self) -> EnrolledStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        """VericarError once closed: another store may own the folder now, and saving would undo its changes."""
        if self._dir_lock is None:
            raise VericarError(f"this store of added vehicles was closed (its folder {self.dir} may have another "
                               "owner now); open a new EnrolledStore to make changes.")

    def summary(self) -> list[tuple[str, int]]:
        """(label, photo count) of every added vehicle, sorted by label."""
        with self.lock:
            labels = list(self.gallery.labels)
        return sorted((lab, labels.count(lab)) for lab in set(labels))

    def _save(self, undo: Callable[[], Any]) -> None:
        """Save the enrolled gallery; on failure run ``undo`` so memory keeps matching the disk."""
        try:
            self.gallery.save(self.dir)
        except Exception as e:
            undo()
            raise VericarError(f"could not save the added vehicles under {self.dir} ({e}); nothing was changed. "
                               "Check that VERICAR_DATA_DIR is writable and has space.") from e

    def enroll(self, images: Any, label: Any) -> dict[str, Any]:
        """Add photos (one photo or a list) under a new label; everything is checked before anything changes.

        Returns {"label", "added", "enrolled" (all added labels), "gallery_size"}.
        """
        label = clean_label(label)
        images = photo_list(images)
        if not images:
            raise VericarError("No photos were given; add at least one photo of the vehicle (2-10 work best).")
        if len(images) > MAX_ENROL_PHOTOS:
            raise VericarError(f"{len(images)} photos is more than the {MAX_ENROL_PHOTOS} accepted at once; "
                               "pick the best few.")
        pil = []
        for im in images:
            try:
                pil.append(open_image(im))
            except VericarError as e:
                name = Path(im).name if isinstance(im, (str, os.PathLike)) else "a photo"
                raise VericarError(f"{name}: {e} Nothing was added; replace that photo and try again.") from e
        with self.lock:
            self._check_open()
            if label.casefold() in self.base:
                raise VericarError(f"'{html_text(label)}' is already a vehicle the model knows; choose another name.")
            if label.casefold() in {lab.casefold() for lab in self.gallery.classes}:
                raise VericarError(f"'{html_text(label)}' was already added; remove it first to add it again with "
                                   "new photos, or choose another name.")
            check_not_confusable(label, self.rec.gallery.classes)
            n = self.rec.enroll(pil, label)

            def undo() -> None:
                self.rec.remove(label)
                self.gallery.remove_label(label)

            try:
                g = self.rec.gallery
                _copy(g, [i for i, lab in enumerate(g.labels) if lab == label], self.gallery.add)
            except Exception:
                undo()
                raise
            self._save(undo)
            return {"label": label, "added": n, "enrolled": self.gallery.classes, "gallery_size": len(self.rec.gallery)}

    def remove(self, label: Any) -> dict[str, Any]:
        """Remove an added vehicle (the model's own vehicles cannot be removed).

        Returns {"label", "removed", "enrolled" (remaining added labels), "gallery_size"}.
        """
        label = clean_label(label)
        with self.lock:
            self._check_open()
            if label not in self.gallery.classes:
                if label.casefold() in self.base:
                    raise VericarError(f"'{html_text(label)}' is one of the model's own vehicles, not an added one; "
                                       "only vehicles added in this app can be removed.")
                have = ", ".join(html_text(c) for c in self.gallery.classes) or "none"
                raise VericarError(f"No added vehicle is called '{html_text(label)}' (added: {have}).")
            kept = Gallery(self.gallery.dim)  # a copy of the entries, to put back if the save fails
            _copy(self.gallery, [i for i, lab in enumerate(self.gallery.labels) if lab == label], kept.add)
            n = self.rec.remove(label)
            self.gallery.remove_label(label)

            def undo() -> None:
                _copy(kept, range(len(kept)), self.rec.add_embeddings)
                _copy(kept, range(len(kept)), self.gallery.add)

            self._save(undo)
            return {"label": label, "removed": n, "enrolled": self.gallery.classes,
                    "gallery_size": len(self.rec.gallery)}
