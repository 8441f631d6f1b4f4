"""Who may add vehicles, and where they go: local mode (one store) or public mode (one per visitor).

    vehicles = make_vehicles(rec, data_dir)            # public when $VERICAR_PUBLIC=1
    vehicles.recognizer(session).predict(photo)        # what this visitor's requests are answered with
    vehicles.enroll(session, photos, label); vehicles.remove(session, label); vehicles.summary(session)

Local (default): every request shares one EnrolledStore, persisted under the data dir (as before).
Public (a Space used by strangers at once): a visitor's vehicles belong to their Gradio session
(``gr.Request.session_hash``; each gradio_client.Client is one), are kept in memory only, never
reach the shared store, are capped, rate-limited, and are freed when the session ends or has been
idle for ``ttl_s``. The shared gallery changes only through ``admin_enroll`` / ``admin_remove`` with
$VERICAR_ADMIN_TOKEN (compared in constant time), or not at all when it is unset.
"""
from __future__ import annotations

import hmac
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer
from vericar.search.gallery import Gallery
from vericar.ui.enrolled import MAX_ENROL_PHOTOS, EnrolledStore
from vericar.ui.labels import check_not_confusable, html_text, normalise_label
from vericar.ui.sessions import SessionRecognizer, own_densities
from vericar.vision.images import make_thumbnail, open_image, photo_list
from vericar.vision.scene import main_crop

MAX_VEHICLES = 5  # per session; with MAX_ENROL_PHOTOS photos each
MAX_SESSIONS = 500  # sessions holding vehicles at once; the longest idle one is dropped beyond this
TTL_S = 3600.0  # a session idle this long is forgotten (its tab was closed without an unload event)


class RateLimit:
    """At most ``n`` events per ``per_s`` seconds for each key (a sliding window)."""

    def __init__(self, n: int, per_s: float) -> None:
        self.n, self.per_s = int(n), float(per_s)
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, what: str) -> None:
        """Count one event for ``key``; VericarError (saying how long to wait) when over the limit."""
        now = time.monotonic()
        with self._lock:
            if len(self._hits) > 1000:  # forget keys with no recent event, so memory stays bounded
                for k in [k for k, h in self._hits.items() if not h or now - h[-1] >= self.per_s]:
                    del self._hits[k]
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= self.per_s:
                hits.popleft()
            if len(hits) >= self.n:
                wait = self.per_s - (now - hits[0])
                raise VericarError(f"Too many {what} from this session ({self.n} per {self.per_s:.0f} s on this "
                                   f"public demo); try again in {max(wait, 1):.0f} s.")
            hits.append(now)

    def forget(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)


def parse_rate(text: str | None, default: tuple[int, float]) -> tuple[int, float]:
    """'N/SECONDS' (e.g. '10/60') from the environment, else ``default``."""
    if not text:
        return default
    try:
        n, s = text.split("/")
        return int(n), float(s)
    except ValueError as e:
        raise VericarError(f"a rate must look like N/SECONDS (e.g. 10/60), got {text!r}.") from e


class LocalVehicles:
    """Local mode: one persistent EnrolledStore that every request shares (the app as it always was)."""

    public = False

    def __init__(self, store: EnrolledStore) -> None:
        self.store = store

    def recognizer(self, session: str | None) -> Recognizer:
        return self.store.rec

    def enroll(self, session: str | None, images: Sequence[Any], label: Any) -> dict[str, Any]:
        return self.store.enroll(images, label)

    def remove(self, session: str | None, label: Any) -> dict[str, Any]:
        return self.store.remove(label)

    def summary(self, session: str | None) -> list[tuple[str, int]]:
        return self.store.summary()

    def end(self, session: str | None) -> None:
        """Nothing to free: local vehicles persist."""

    def close(self) -> None:
        """Release the model folder of the data dir (EnrolledStore.close)."""
        self.store.close()


@dataclass
class _Session:
    own: Gallery
    density: np.ndarray
    used: float = field(default_factory=time.monotonic)
    view: SessionRecognizer | None = None


class SessionVehicles:
    """Public mode: each session's vehicles in memory, seen and removable by that session only."""

    public = True

    def __init__(self, store: EnrolledStore, *, max_vehicles: int = MAX_VEHICLES,
                 max_photos: int = MAX_ENROL_PHOTOS, max_sessions: int = MAX_SESSIONS, ttl_s: float = TTL_S,
                 write_rate: tuple[int, float] = (10, 60.0), read_rate: tuple[int, float] = (60, 60.0),
                 admin_token: str | None = None) -> None:
        self.store, self.rec = store, store.rec
        self.max_vehicles, self.max_photos = max_vehicles, max_photos
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self.writes, self.reads = RateLimit(*write_rate), RateLimit(*read_rate)
        self.admin_token = admin_token or None
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ sessions
    def _get(self, session: str | None, create: bool = False) -> _Session | None:
        """The session's record (refreshed as used); expired and surplus sessions are dropped here."""
        if not session:
            raise VericarError("This request has no session, so it cannot keep vehicles; open the app page "
                               "(or a gradio_client.Client) and try again.")
        now = time.monotonic()
        with self._lock:
            while self._sessions:
                sid, s = next(iter(self._sessions.items()))
                if now - s.used < self.ttl_s and len(self._sessions) <= self.max_sessions:
                    break
                self._drop(sid)
            s = self._sessions.get(session)
            if s is None and create:
                s = self._sessions[session] = _Session(Gallery(self.rec.gallery.dim), np.zeros(0, np.float32))
            if s is not None:
                s.used = now
                self._sessions.move_to_end(session)
            return s

    def _drop(self, session: str) -> None:
        self._sessions.pop(session, None)
        self.writes.forget(session)
        self.reads.forget(session)

    def end(self, session: str | None) -> None:
        """Forget a session's vehicles (its page was closed)."""
        if session:
            with self._lock:
                self._drop(session)

    def close(self) -> None:
        """Release the shared store's folder (EnrolledStore.close); visitors' vehicles were never saved."""
        self.store.close()

    def sessions(self) -> int:
        """How many sessions hold vehicles now (for tests and monitoring)."""
        with self._lock:
            return len(self._sessions)

    def recognizer(self, session: str | None) -> Recognizer:
        """The recognizer this session's requests are answered with (counts against its rate limit)."""
        if session:
            self.reads.check(session, "requests")
        s = self._get(session) if session else None
        if s is None or len(s.own) == 0:
            return self.rec
        with self.rec._lock:
            if s.view is None:
                s.view = SessionRecognizer.over(self.rec, s.own, s.density)
            return s.view

    # ------------------------------------------------------------------- changes
    def enroll(self, session: str | None, images: Any, label: Any) -> dict[str, Any]:
        """Add a vehicle (one photo or a list) to this session only.

        Returns {"label", "added", "enrolled" (this session's), "gallery_size"}."""
        label = normalise_label(label)
        images = photo_list(images)
        if not images:
            raise VericarError("No photos were given; add at least one photo of the vehicle (2-10 work best).")
        if len(images) > self.max_photos:
            raise VericarError(f"{len(images)} photos is more than the {self.max_photos} accepted for one vehicle; "
                               "pick the best few.")
        self.writes.check(session or "", "additions and removals")
        s = self._get(session, create=True)
        with self.rec._lock:
            mine = set(s.own.labels)
            if label.casefold() in {c.casefold() for c in self.rec.gallery.classes}:
                raise VericarError(f"'{html_text(label)}' is already a vehicle the model knows; choose another name.")
            if label.casefold() in {c.casefold() for c in mine}:
                raise VericarError(f"You already added '{html_text(label)}'; remove it first to add it again.")
            if len(mine) >= self.max_vehicles:
                raise VericarError(f"You have added {len(mine)} vehicles, the most one visitor can keep on this "
                                   "public demo; remove one of yours to add another.")
            check_not_confusable(label, list(self.rec.gallery.classes) + sorted(mine))
        pil = []
        for i, im in enumerate(images):
            try:
                pil.append(open_image(im))
            except VericarError as e:
                raise VericarError(f"Photo {i + 1}: {e} Nothing was added; replace that photo and try again.") from e
        pil = [main_crop(self.rec, p) for p in pil]  # as local enrolment: the photo's largest vehicle
        emb = self.rec._embed_pil(pil)
        with self.rec._lock:
            if label in s.own.labels or len(set(s.own.labels)) >= self.max_vehicles:  # a concurrent request won
                raise VericarError(f"'{html_text(label)}' was just added, or your vehicle limit reached; reload "
                                   "the list.")
            s.own.add(emb, [label] * len(pil), refs=[f"session:{label}:{i}" for i in range(len(pil))],
                      thumbnails=[make_thumbnail(p) for p in pil])
            self._changed(s)
            return {"label": label, "added": len(pil), "enrolled": s.own.classes,
                    "gallery_size": len(self.rec.gallery) + len(s.own)}

    def remove(self, session: str | None, label: Any) -> dict[str, Any]:
        """Remove one of this session's vehicles; never another session's, never a shared one."""
        label = normalise_label(label)
        self.writes.check(session or "", "additions and removals")
        s = self._get(session)
        with self.rec._lock:
            if s is None or label not in s.own.labels:
                mine = ", ".join(html_text(c) for c in s.own.classes) if s is not None else ""
                raise VericarError(f"You have no added vehicle called '{html_text(label)}' (yours: "
                                   f"{mine or 'none'}); only vehicles added in this session can be removed.")
            n = s.own.remove_label(label)
            self._changed(s)
            return {"label": label, "removed": n, "enrolled": s.own.classes,
                    "gallery_size": len(self.rec.gallery) + len(s.own)}

    def _changed(self, s: _Session) -> None:
        s.density = own_densities(self.rec, s.own)
        s.view = None

    def summary(self, session: str | None) -> list[tuple[str, int]]:
        """(label, photo count) of this session's vehicles, sorted by label."""
        s = self._get(session) if session else None
        if s is None:
            return []
        labels = list(s.own.labels)
        return sorted((lab, labels.count(lab)) for lab in set(labels))

    # --------------------------------------------------------------------- admin
    def _admin(self, token: Any) -> None:
        if not self.admin_token:
            raise VericarError("The shared gallery is read-only on this server (VERICAR_ADMIN_TOKEN is not set).")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            raise VericarError("Wrong admin token; the shared gallery was not changed.")

    def check_admin(self, token: Any) -> None:
        """VericarError unless ``token`` is the admin token (before work is spent on an admin request)."""
        self._admin(token)

    def admin_enroll(self, token: Any, images: Sequence[Any], label: Any) -> dict[str, Any]:
        """Add a vehicle to the shared (persistent) gallery: needs the admin token."""
        self._admin(token)
        return self.store.enroll(images, label)

    def admin_remove(self, token: Any, label: Any) -> dict[str, Any]:
        """Remove a vehicle from the shared gallery: needs the admin token."""
        self._admin(token)
        return self.store.remove(label)


def public_mode(env: Mapping[str, str] | None = None) -> bool:
    """$VERICAR_PUBLIC is 1/true/yes; when it is unset, a Hugging Face Space ($SYSTEM=spaces) is public."""
    env = os.environ if env is None else env
    flag = env.get("VERICAR_PUBLIC")
    if flag is None or not flag.strip():
        return env.get("SYSTEM") == "spaces"
    return flag.strip().lower() in {"1", "true", "yes"}


def make_vehicles(rec: Recognizer, data_dir: str | os.PathLike, *, public: bool | None = None,
                  store: EnrolledStore | None = None, **kw: Any) -> LocalVehicles | SessionVehicles:
    """Local or public mode (``public`` default: $VERICAR_PUBLIC), over the store under ``data_dir``.

    Public mode reads $VERICAR_ADMIN_TOKEN, $VERICAR_WRITE_RATE and $VERICAR_READ_RATE ('N/SECONDS').
    ``store``: an open EnrolledStore over ``rec`` to use instead of opening one (which would be refused
    while that one holds the folder), e.g. when a page is rebuilt in the same process.
    """
    if store is not None and store.rec is not rec:
        raise VericarError("make_vehicles: the store given serves another recognizer; pass store.rec as rec.")
    if store is None:
        store = EnrolledStore(rec, Path(data_dir))
    if not (public_mode() if public is None else public):
        return LocalVehicles(store)
    kw.setdefault("admin_token", os.environ.get("VERICAR_ADMIN_TOKEN"))
    kw.setdefault("write_rate", parse_rate(os.environ.get("VERICAR_WRITE_RATE"), (10, 60.0)))
    kw.setdefault("read_rate", parse_rate(os.environ.get("VERICAR_READ_RATE"), (60, 60.0)))
    return SessionVehicles(store, **kw)
