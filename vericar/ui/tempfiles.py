"""The app's temporary files: each request's own output folder, and uploads held only while in use.

    files = RequestFiles(get_upload_folder(), delivery_s=30)
    demo.upload_file_set = files.watch_uploads(demo)       # learn of every upload
    with files.request(session, [upload], hold_as="photo", keep_as="found") as out:
        return out.image(pil)                              # a path Gradio serves in place

Outputs: what the app writes for a response goes to a folder of that request alone (a random
name, not a content hash, so no two requests ever share a file) inside Gradio's cache, which
Gradio serves without copying. An API request's folder is removed ``delivery_s`` after it
answered, the time a client has to fetch the files its answer names; a page's (``keep_as``) stays
while its result is shown and goes ``delivery_s`` after the next result replaces it, or at once
when the page is closed (``end_session``).

Uploads: Gradio names an upload by its content hash, so two visitors who upload the same photo
share one path, and a page sends the same path again for every event that uses the photo (an
Identify chain; a second click). Every upload counts as one pending use until a request takes it
(a page's input keeps holding it while it shows that photo, ``hold_as``); a file is deleted when
nothing holds it and no upload of it is pending (its hash folder stays, as Gradio leaves it: a
concurrent upload of the same photo may be writing into it). Only uploads this object was told of
are ever deleted (never an example or a file of the app's own). Unused uploads (a page never submitted, a file
refused before the request ran) are dropped after ``pending_s``; Gradio's ``delete_cache`` sweep
stays as the backstop for anything left by a crash.
"""
from __future__ import annotations

import heapq
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image

PENDING_S = 900.0  # an upload no request has used after this long is dropped (the page was left)


class Outputs:
    """The folder of one request's output files (made on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def image(self, image: Image.Image | str | os.PathLike, name: str = "image", fmt: str = "webp") -> str:
        """Write ``image`` (a PIL image, or a file opened as one) here; its path, for a Gradio output."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.{fmt}"
        if not isinstance(image, Image.Image):
            with Image.open(image) as im:
                image = im.convert("RGB")
        image.save(path, format=fmt.upper())
        return str(path)


class _Uploads(set):
    """Gradio's set of uploaded paths, telling ``on_add`` of each new upload (the /upload route calls update)."""

    def __init__(self, items: Iterable[str], on_add: Any) -> None:
        super().__init__(items)
        self._on_add = on_add

    def update(self, *others: Iterable[str]) -> None:  # type: ignore[override]
        items = [p for o in others for p in o]
        super().update(items)
        self._on_add(items)


class RequestFiles:
    """Leases on uploads and per-request output folders; see the module docstring."""

    def __init__(self, cache_dir: str | os.PathLike, delivery_s: float = 30.0, pending_s: float = PENDING_S) -> None:
        self.cache = Path(os.path.realpath(cache_dir))
        self.root = self.cache / "vericar"
        self.delivery_s, self.pending_s = float(delivery_s), float(pending_s)
        self._uploads: set[str] = set()  # every upload path reported and not yet deleted
        self._pending: dict[str, list[float]] = {}  # upload path -> times of uploads no request has taken
        self._inode: dict[str, int] = {}  # upload path -> the file last seen there (a new upload replaces it)
        self._holds: Counter[str] = Counter()  # upload path -> requests running with it + pages showing it
        self._shown: dict[tuple[str, str], list[str]] = {}  # (session, input) -> the uploads that input holds
        self._kept: dict[tuple[str, str], Path] = {}  # (session, output) -> the folder that page shows
        self._ended: dict[str, float] = {}  # closed pages -> when: a request still running for one keeps nothing
        self._due: list[tuple[float, str]] = []  # (time, folder) removals, a heap
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None

    # ---------------------------------------------------------------- uploads
    def watch_uploads(self, demo: Any) -> None:
        """Replace ``demo``'s upload set (gradio.Blocks.upload_file_set) with one that reports to us."""
        old = demo.upload_file_set
        new = _Uploads(old, self.uploaded)
        demo.upload_file_set = new
        demo.temp_file_sets = [new if s is old else s for s in demo.temp_file_sets]

    def uploaded(self, paths: Iterable[str]) -> None:
        """Each of ``paths`` was just uploaded: one more pending use of it."""
        now = time.monotonic()
        with self._lock:
            for p in map(os.path.realpath, paths):
                self._uploads.add(p)
                self._pending.setdefault(p, []).append(now)
                self._note_inode(p)

    def _note_inode(self, path: str) -> None:
        try:
            self._inode[path] = os.stat(path).st_ino
        except OSError:  # not moved into place yet (Gradio may finish an upload after answering)
            pass

    def _take(self, path: str, session: str | None) -> None:
        """A request starts using ``path``: it holds it, taking one pending upload unless its page already had it."""
        shown = session is not None and any(path in v for (s, _), v in self._shown.items() if s == session)
        if not shown and self._pending.get(path):
            self._pending[path].pop(0)
        self._holds[path] += 1
        self._note_inode(path)

    def _let_go(self, path: str) -> None:
        self._holds[path] -= 1
        if self._holds[path] <= 0:
            del self._holds[path]
            self._delete_if_unused(path)

    def _delete_if_unused(self, path: str) -> None:
        if self._holds.get(path) or self._pending.get(path) or path not in self._uploads:
            return
        self._pending.pop(path, None)
        self._uploads.discard(path)
        inode = self._inode.pop(path, None)
        if Path(path).parent.parent != self.cache:  # only <cache>/<hash>/<name>: Gradio's upload layout
            return
        # Gradio moves an upload into place before it tells the upload set, so the same photo may just
        # have been uploaded again, its use not counted yet: set the file aside, and put it back if it
        # is not the one last seen here.
        aside = Path(path).with_name(f".{uuid.uuid4().hex}.gone")
        try:
            os.rename(path, aside)
        except OSError:
            return
        try:
            if inode is None or os.stat(aside).st_ino == inode:
                os.remove(aside)
            else:
                os.rename(aside, path)
        except OSError:
            pass

    # --------------------------------------------------------------- requests
    @contextmanager
    def request(self, session: str | None, uploads: Iterable[Any] = (), *, hold_as: str | None = None,
                keep_as: str | None = None) -> Iterator[Outputs]:
        """One request: holds ``uploads`` while it runs (and, with ``hold_as``, while the session's page shows
        them), and gives a fresh output folder, kept while the page shows it with ``keep_as``."""
        known = [os.path.realpath(str(p)) for p in uploads if p]
        with self._lock:
            self._expire(time.monotonic())
            for p in known:
                self._take(p, session)
        out = Outputs(self.root / uuid.uuid4().hex)
        ok = False
        try:
            yield out
            ok = True
        finally:
            with self._lock:
                gone = session in self._ended  # its page was closed while this ran: nobody will see the result
                if hold_as and session and not gone:
                    self._show(session, hold_as, known)
                for p in known:
                    self._let_go(p)
                if gone:
                    self._remove_later(out.folder, 0.0)
                elif ok and keep_as and session:  # the page shows this folder now, instead of its last one
                    self._remove_later(self._kept.pop((session, keep_as), None), self.delivery_s)
                    self._kept[(session, keep_as)] = out.folder
                else:  # an answer (kept until fetched), or an error (nothing to fetch)
                    self._remove_later(out.folder, self.delivery_s if ok else 0.0)

    def _show(self, session: str, name: str, paths: list[str]) -> None:
        """The page's input ``name`` now shows ``paths`` (holding them); what it showed before is let go."""
        before = self._shown.pop((session, name), [])
        for p in paths:
            self._holds[p] += 1
        if paths:
            self._shown[(session, name)] = paths
        for p in before:
            self._let_go(p)

    def end_session(self, session: str | None) -> None:
        """The page was closed: let go of what it showed, remove its output folders now."""
        if not session:
            return
        with self._lock:
            self._ended[session] = time.monotonic()
            for key in [k for k in self._shown if k[0] == session]:
                for p in self._shown.pop(key):
                    self._let_go(p)
            for key in [k for k in self._kept if k[0] == session]:
                self._remove_later(self._kept.pop(key), 0.0)

    # --------------------------------------------------------------- removal
    def _remove_later(self, folder: Path | None, after_s: float) -> None:
        if folder is None or not folder.exists():  # (made on first use: a request that wrote nothing has none)
            return
        if after_s <= 0:
            shutil.rmtree(folder, ignore_errors=True)
            return
        heapq.heappush(self._due, (time.monotonic() + after_s, str(folder)))
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="vericar-tempfiles", daemon=True)
            self._reaper.start()
        self._wake.notify()

    def _reap(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    shutil.rmtree(heapq.heappop(self._due)[1], ignore_errors=True)
                self._expire(now)
                self._wake.wait(timeout=min(self._due[0][0] - now, 60.0) if self._due else 60.0)

    def _expire(self, now: float) -> None:
        """Drop uploads no request took within ``pending_s`` (their page was left, or they were refused)."""
        for session in [s for s, t in self._ended.items() if now - t >= self.pending_s]:
            del self._ended[session]  # no request runs that long
        for path in list(self._pending):
            times = [t for t in self._pending[path] if now - t < self.pending_s]
            if len(times) < len(self._pending[path]):
                self._pending[path] = times
                self._delete_if_unused(path)

    def counts(self) -> dict[str, int]:
        """Uploads held / pending, pages' kept folders, removals due (for tests and monitoring)."""
        with self._lock:
            return {"held": len(self._holds), "pending": sum(map(len, self._pending.values())),
                    "kept": len(self._kept), "due": len(self._due)}
