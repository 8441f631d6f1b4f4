"""Recognizer: an embedding model, a gallery and an unknown-vehicle detector, passed in.

``Recognizer(model, gallery, ood)`` answers "what vehicle is this?" with a k-NN vote at every
level of the taxonomy (make, type, model, year), flags photos far from everything it knows as
unknown (KNN+), shows the most similar gallery entries, explains itself with Grad-CAM++ and
learns new vehicles by adding embeddings to the gallery (no retraining). Neighbours are ranked
by a ``DensityCorrection`` (CSLS in trained artifacts) so that enrolled vehicles compete fairly
with the tightly clustered photos the model was trained on.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from vericar.core.compare import Comparison, compare
from vericar.attributes.stage import Attributes, Described
from vericar.core.config import DetectorCfg, RankingCfg, SourceCfg, VericarConfig
from vericar.core.explaining import explain
from vericar.core.errors import VericarError, check_positive_int
from vericar.core.prediction import PREDICTION_LEVELS, Explanation, Neighbour, Prediction
from vericar.models.embedding import check_views, embed
from vericar.models.ensemble import Model
from vericar.search.calibration import PARTIAL_LEVELS, Calibration
from vericar.search.density import DensityCorrection
from vericar.search.pair_calibration import PairCalibration
from vericar.search.gallery import Gallery
from vericar.search.labels import normalise_label
from vericar.search.ood import KNNOOD
from vericar.search.taxonomy import Taxonomy
from vericar.vision.detect import Detector, create_detector
from vericar.vision.images import make_thumbnail, open_image, photo_list
from vericar.vision.scene import main_crop, main_predictions, recognise

class Recognizer:
    """Open-world vehicle recognizer over collaborators that are passed in.

    Args:
        model: embedding model (carries its own preprocessing config).
        gallery: the known vehicles' embeddings and labels.
        ood: KNN+ detector with its calibrated threshold (``threshold=None`` flags nothing).
        k: neighbours that vote.
        density: how neighbours are ranked (``DensityCorrection``); plain cosine if omitted.
        taxonomy: maps labels to make / type / year; built from the gallery's labels if omitted.
        meta: free-form facts saved with the artifact (metrics, training command, …).
        calibration: per-level confidence softmax (temperature, bias, nearness) and partial-answer
            thresholds; plain vote shares and no partial answers if omitted.
        detector: finds the vehicles in a photo (``vericar.vision.detect``: a Detector or a spec such as
            'opencv-ssd:mobilenet_v2_coco'); None or 'none' treats the whole photo as the vehicle.
        source: where it was loaded from (``vericar.load`` sets it; see ``config.source``).
        comparison: ``compare``'s fitted same-vehicle probability (None: compare is refused).
        attributes: each vehicle's colour and viewpoint (``vericar.attributes.stage.Attributes``); None: none.

    ``rec.config`` describes it all as one frozen ``vericar.core.config.VericarConfig``.
    """

    def __init__(
        self,
        model: Model,
        gallery: Gallery,
        ood: KNNOOD,
        *,
        k: int = 10,
        density: DensityCorrection | None = None,
        taxonomy: Taxonomy | None = None,
        meta: dict[str, Any] | None = None,
        batch_size: int = 16,
        calibration: Calibration | None = None,
        detector: Detector | str | None = None,
        source: SourceCfg | None = None,
        comparison: PairCalibration | None = None,
        attributes: Attributes | None = None,
    ) -> None:
        if gallery.dim != model.output_dim:
            raise VericarError(
                f"gallery holds {gallery.dim}-d embeddings but the model makes {model.output_dim}-d ones; "
                "rebuild the gallery with this model (python -m vericar.evaluate --gallery CSV does it)."
            )
        self.model = model.eval()
        self.gallery = gallery
        if gallery.tta is None:  # built in memory from embeddings of this model: record how they were made
            gallery.tta = model.tta
        self.check_views()
        self.ood = ood
        self.k = int(k)
        self.taxonomy = taxonomy or Taxonomy.from_labels(list(gallery.classes))
        self.meta = dict(meta or {})
        self.batch_size = batch_size
        self.detector = create_detector(detector)
        self.source = source
        self.attributes = attributes or Attributes()
        # One lock for gallery reads and writes: enrolment from one request must never be seen
        # half-done by a search from another (the app serves requests from several threads).
        self._lock = threading.RLock()
        self._counts: dict[str, int] | None = None  # photos per label, for the per-query k cap
        self.density = density or DensityCorrection()
        self.calibration, self.comparison = calibration or Calibration(), comparison
        self._n_values: dict[str, int] = {}  # distinct values per level, for the calibrated softmax
        self._density_r: np.ndarray | None = None  # each entry's local density, recomputed after changes
        self._density_key: tuple | None = None

    @property
    def config(self) -> VericarConfig:
        """This recognizer's settings as one frozen tree (what save_pretrained writes as config.json).
        A threshold calibrated by hand (KNNOOD.calibrate) with no ranking recorded counts as fitted
        for the ranking in use."""
        ood = self.ood.cfg
        if ood.threshold is not None and ood.calibrated_for is None:
            ood = replace(ood, calibrated_for=self.density.cfg)
        return VericarConfig(self.model.model_cfg, RankingCfg(self.k, self.density.cfg), ood,
                             self.calibration.to_dict() if self.calibration.active else None,
                             DetectorCfg(self.detector.spec), self.source,
                             self.comparison.to_dict() if self.comparison is not None else None, self.attributes.cfg)

    # ---------------------------------------------------------------- embedding
    def embed(self, images: Sequence[Any]) -> np.ndarray:
        """Embed photos (paths, bytes, PIL or arrays) → (N, D) float32, L2-normalised."""
        pil = [open_image(im) for im in images]
        return self._embed_pil(pil)

    def _embed_pil(self, pil: Sequence[Any]) -> np.ndarray:
        self.check_views()  # a tuple compare per request: model.tta may be set after the gallery was built
        return embed(self.model, pil, batch_size=self.batch_size)

    def check_views(self) -> None:
        """ArtifactError when queries would be embedded otherwise than the gallery (models.embedding.check_views)."""
        check_views(getattr(self.gallery, "tta", None), self.model.tta)
    def _embed_described(self, crops: Sequence[Any]) -> tuple[np.ndarray, list[Described]]:
        """Embeddings of vehicle crops and each one's attributes, from the same network pass."""
        return self.attributes.run(self.model, self._embed_pil, crops)

    # --------------------------------------------------------------- prediction
    def predict(self, image: Any) -> Prediction:
        """Identify the main vehicle of a photo (the largest; ties: the most central)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[Any]) -> list[Prediction]:
        """Identify the main vehicle of several photos in one forward pass."""
        return main_predictions(self, [open_image(im) for im in images])

    def predict_all(self, image: Any, max_vehicles: int = 10) -> list[Prediction]:
        """Every vehicle in a photo, largest first (at most ``max_vehicles``; [] when none is found)."""
        return recognise(self, [open_image(image)], max_vehicles=max_vehicles)[0]

    def compare(self, photo_a: Any, photo_b: Any) -> Comparison:
        """Whether two photos' main vehicles are the same model, make and type (vericar/core/compare.py)."""
        return compare(self, photo_a, photo_b)

    def predict_embeddings(self, emb: np.ndarray) -> list[Prediction]:
        """Predictions for already-computed query embeddings (evaluation reuses this)."""
        with self._lock:  # votes read labels by index: no enrolment/removal may interleave
            if len(self.gallery) == 0:
                raise VericarError(
                    "the gallery is empty, so there is nothing to compare with; enroll photos "
                    "(Recognizer.enroll) or build a gallery (python -m vericar.evaluate --gallery CSV)."
                )
            depth = max(self.k, self.ood.k)
            scores, cosine, idx = self.search(emb, depth)
            # A vehicle enrolled from 3 photos has only 3 neighbours of its own: its 10th neighbour
            # is another class, which would make it look unknown and let a similar class with many
            # photos outvote it. So k (voting and KNN+) is capped at the nearest class's photo count.
            cap = self.k_cap(idx[:, 0])
            s_ood = scores[:, : self.ood.k].copy()
            s_ood[np.arange(self.ood.k)[None, :] >= cap[:, None]] = -np.inf
            ood_scores = self.ood.score(s_ood)
            unknown = self.ood.is_unknown(ood_scores)
            return [
                self._prediction(cosine[q], idx[q], min(self.k, int(cap[q])), float(ood_scores[q]), bool(unknown[q]))
                for q in range(len(emb))
            ]

    def search(self, emb: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The top ``depth`` gallery entries per query as this recognizer ranks them.

        Returns ``(scores, cosine, idx)``: the ranking scores (KNN+ reads them; the cosine itself
        unless the density correction is on), the plain cosines and the entry indices.
        """
        with self._lock:
            if not self.density.active:
                scores, idx = self.gallery.search(emb, depth)
                return scores, scores, idx
            # The gallery's revision is unique per gallery state, so this also notices a gallery
            # swapped or changed in place by a caller; k, because the density may be swapped too.
            key = (self.gallery.revision, self.density.k)
            if self._density_r is None or self._density_key != key:
                self._density_r, self._density_key = self.density.densities(self.gallery), key
            return self.density.neighbours(self.gallery, emb, self._density_r, depth)

    def k_cap(self, nearest: np.ndarray) -> np.ndarray:
        """Per query, the photo count of its nearest entry's class (the cap on k; see predict_embeddings)."""
        counts = self._class_counts()
        return np.array([counts.get(self.gallery.labels[j], 1) if j >= 0 else 1 for j in nearest], dtype=int)

    def n_values(self, level: str) -> int:
        """How many distinct values the gallery knows at ``level`` (the calibrated softmax's size)."""
        if level not in self._n_values:
            self._n_values[level] = len(self.taxonomy.values(level))
        return self._n_values[level]

    def _class_counts(self) -> dict[str, int]:
        if self._counts is None:
            self._counts = dict(Counter(self.gallery.labels))
        return self._counts

    def _prediction(self, scores: np.ndarray, idx: np.ndarray, k: int, ood_score: float, unknown: bool) -> Prediction:
        s, ix = scores[None, :k], idx[None, :k]
        conf: dict[str, float] = {}
        values: dict[str, str | None] = {}
        for level in PREDICTION_LEVELS:
            values[level], c = self.calibration.vote(s[0], ix[0], self.gallery.labels, self._level_fn(level),
                                                     level, k, self.n_values(level))
            conf[level] = float(c)
        unknown = unknown or self.calibration.below_floor(conf)
        for level in PARTIAL_LEVELS if unknown and self.calibration.unseen else ():  # as fitted on unseen models
            conf[level] = float(self.calibration.vote(s[0], ix[0], self.gallery.labels, self._level_fn(level), level,
                                                      k, self.n_values(level), unseen=True)[1])
        label = values["model"]
        hier = label is not None and self.taxonomy.is_hierarchical(label)
        labels, refs = self.gallery.labels, self.gallery.refs
        neigh = [
            Neighbour(labels[j], float(sc), refs[j] if refs else None, int(j))
            for sc, j in zip(s[0], ix[0])
            if j >= 0
        ]
        return Prediction(
            label=label,
            make=values["make"] if hier else None,
            model=self.taxonomy.name(label).model if label is not None else None,
            type=values["type"] if hier else None,
            year=values["year"] if hier else None,
            confidence=conf if hier else {"model": conf["model"]},
            unknown=unknown,
            ood_score=ood_score,
            neighbours=neigh,
            unknown_levels=self.calibration.unknown_levels(conf if hier else {}, unknown),
        )

    def _level_fn(self, level: str):
        if level == "model":
            return lambda label: label
        return lambda label: self.taxonomy.level_value(label, level)

    def similar(self, image: Any, k: int = 5) -> list[Neighbour]:
        """The ``k`` gallery entries most similar to a photo, in this recognizer's ranking (as the
        neighbours of ``predict``); each ``score`` is the plain cosine similarity. A photo in which the
        detector sees no box at all has no vehicle to compare: ``[]``."""
        k = check_positive_int(int(k) if isinstance(k, float) and k.is_integer() else k, "k",
                               what="how many similar gallery entries")
        crop = main_crop(self, open_image(image), none_if_blank=True)
        if crop is None:  # no vehicle in the photo (as predict says): nothing to compare
            return []
        emb = self._embed_pil([crop])
        with self._lock:
            if not len(self.gallery):
                return []
            _, cosine, idx = self.search(emb, min(k, len(self.gallery)))  # k = 10**9 must not size arrays by k
            return [
                Neighbour(self.gallery.labels[j], float(s), self.gallery.refs[j] if self.gallery.refs else None, int(j))
                for s, j in zip(cosine[0], idx[0])
                if j >= 0
            ]

    # ---------------------------------------------------------------- enrolment
    def enroll(self, images: Any, label: str, refs: Sequence[str] | None = None) -> int:
        """Add photos of a (new or known) vehicle to the gallery; no retraining. Returns how many.

        ``images``: one photo or a list (paths, bytes, PIL images, arrays). ``label``: text such as
        "Tesla Model 3 Sedan 2021", NFKC-normalised, spaces collapsed, invisible characters refused.
        """
        label = normalise_label(label)
        images = photo_list(images)
        if not images:
            raise VericarError("no photos were given; enroll at least one photo of the vehicle.")
        pil = [open_image(im) for im in images]  # every photo is checked before anything is added
        pil = [main_crop(self, p) for p in pil]  # a whole photo: its largest vehicle
        emb = self._embed_pil(pil)
        if refs is None:
            refs = [f"enrolled:{label}:{i}" for i in range(len(pil))]
        with self._lock:
            self.gallery.add(emb, [label] * len(pil), refs=list(refs), thumbnails=[make_thumbnail(p) for p in pil])
            self._changed()
        return len(pil)

    def add_embeddings(
        self,
        embeddings: np.ndarray,
        labels: Sequence[str],
        refs: Sequence[str] | None = None,
        thumbnails: Sequence[Any] | None = None,
    ) -> int:
        """Add already-computed embeddings (e.g. a saved gallery of enrolled vehicles) under the lock."""
        with self._lock:
            self.gallery.add(embeddings, list(labels), refs=None if refs is None else list(refs), thumbnails=thumbnails)
            self._changed()
        return len(labels)

    def remove(self, label: str) -> int:
        """Remove every gallery entry of ``label`` (as given, else as ``enroll`` normalised it: "New  Car"
        removes "New Car"). Returns how many were removed."""
        try:
            folded = normalise_label(label)
        except VericarError:  # a label enroll would refuse can only be in the gallery as it is
            folded = label
        with self._lock:
            n = self.gallery.remove_label(label) or (self.gallery.remove_label(folded) if folded != label else 0)
            self._changed()
        return n

    def _changed(self) -> None:
        """The gallery's label set changed: refresh what is derived from it."""
        self.taxonomy = Taxonomy.from_labels(list(self.gallery.classes))
        self._counts = None
        self._n_values = {}
        self._density_r = None

    def thumbnail(self, index: int, label: str) -> Any:
        """Thumbnail of gallery entry ``index`` if it still holds ``label`` (else None), under the lock."""
        with self._lock:
            g = self.gallery
            if 0 <= index < len(g) and g.labels[index] == label:
                return g.thumbnail(index)
            return None

    # ----------------------------------------------------------------- explain
    def explain(self, image: Any) -> Explanation:
        """Grad-CAM++ of the similarity to the predicted vehicle's gallery embeddings (vericar.core.explaining)."""
        return explain(self, image)
