"""One frozen config tree for a recognizer, written once as an artifact's config.json.

    VericarConfig(
        model=ModelCfg(spec, embed_dim, preprocess=PreprocessCfg(input_size, mean, std, interpolation,
                                                                   crop_mode, crop_pct), tta=() or ("flip",),
                       members=1 or more (an ensemble)),
        ranking=RankingCfg(k, density=DensityCfg(weight, k, max_fetch)),
        ood=OODCfg(k, threshold, tpr, calibrated_for=<the DensityCfg the threshold was fitted with>),
        calibration={...} | None, detector=DetectorCfg(spec), source=SourceCfg(spec, folder) | None,
        compare={...} | None,
        attributes=AttributesCfg(colour, viewpoint))

Every node is a frozen dataclass: change one with ``dataclasses.replace``. ``to_dict`` /
``from_dict`` are exact inverses (``from_dict(c.to_dict()) == c``). Consistency is checked, not
hoped for: an unknown-vehicle threshold fitted under one neighbour ranking is refused under
another (:meth:`VericarConfig.check`). Preprocessing uses timm's vocabulary (``crop_mode``
"center" | "squash", ``crop_pct``), as ``timm.data.resolve_model_data_config`` returns it.

``python -m vericar.artifacts.config_file migrate DIR`` rewrites an older artifact's config.json in this form.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from vericar.core.errors import ArtifactError, SpecError

__all__ = ["PreprocessCfg", "ModelCfg", "DensityCfg", "RankingCfg", "OODCfg", "DetectorCfg", "SourceCfg",
           "AttributesCfg", "VericarConfig", "CROP_MODES", "INTERPOLATIONS", "TRAIN_SETTINGS_IN_TREE", "TTA_VIEWS", "check_tta"]

CROP_MODES = ("center", "squash")  # timm's names: short side to size / crop_pct + centre crop | stretch to size
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
# Test-time views an embedding may average over (vericar/models/embedding.py): the mirror image. Cars are
# close to mirror-symmetric, so a side view facing left then matches the gallery's photos facing right.
TTA_VIEWS = ("flip",)
_LEGACY_RESIZE = {"shortest": "center", "squash": "squash"}  # vericar < format 3 called crop_mode "resize_mode"
# Settings of train/config.py that end up in the tree: an artifact's meta.train_config keeps only the
# others (data, optimisation), so no setting is written twice (formats 1-2 restated these).
TRAIN_SETTINGS_IN_TREE = ("backbone", "embed_dim", "eval_size", "resize_mode", "k", "ood_k", "ood_tpr",
                          "density_weight", "density_k", "tta")
RECALIBRATE = "Re-run `python train/calibrate.py --artifact DIR` on that folder to fit the threshold for the ranking in use"


def _floats(v: Any, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError) as e:
        raise SpecError(f"preprocess {name} must be 3 numbers, got {v!r}") from e
    if len(out) != 3 or not all(math.isfinite(x) for x in out):
        raise SpecError(f"preprocess {name} must be 3 finite numbers, got {v!r}")
    return out


@dataclass(frozen=True)
class PreprocessCfg:
    """How a photo becomes the model's input (timm's data config)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_mode: str = "center"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        try:
            size = tuple(int(v) for v in self.input_size)
        except (TypeError, ValueError) as e:
            raise SpecError(f"preprocess input_size must be (3, H, W), got {self.input_size!r}") from e
        if len(size) != 3 or size[0] != 3 or min(size) < 1:
            raise SpecError(f"preprocess input_size must be (3, H, W), got {self.input_size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise SpecError(f"preprocess interpolation {self.interpolation!r} is not one of {list(INTERPOLATIONS)}")
        if self.crop_mode not in CROP_MODES:
            raise SpecError(f"preprocess crop_mode must be one of {list(CROP_MODES)}, got {self.crop_mode!r}")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise SpecError(f"preprocess crop_pct must be in (0, 1], got {self.crop_pct}")
        for name, v in (("input_size", size), ("mean", _floats(self.mean, "mean")),
                        ("std", _floats(self.std, "std")), ("crop_pct", float(self.crop_pct))):
            object.__setattr__(self, name, v)  # normalised types, so equal settings compare equal

    def override(self, *, size: int | None = None, crop_mode: str | None = None) -> "PreprocessCfg":
        """A copy at input ``size`` x ``size`` and/or with ``crop_mode``; squashing the whole photo
        leaves nothing to crop, so it sets ``crop_pct`` to 1 (the one place that rule lives)."""
        cfg = self
        if size:
            cfg = replace(cfg, input_size=(3, int(size), int(size)))
        if crop_mode:
            crop_mode = _LEGACY_RESIZE.get(crop_mode, crop_mode)
            cfg = replace(cfg, crop_mode=crop_mode, crop_pct=1.0 if crop_mode == "squash" else cfg.crop_pct)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**d, "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessCfg":
        """From a dict in timm's vocabulary; an older ``resize_mode`` ("shortest" | "squash") is read too."""
        if not isinstance(d, Mapping):
            raise SpecError(f"preprocess config must be a dict, got {d!r}")
        d = dict(d)
        if "resize_mode" in d:
            d.setdefault("crop_mode", _LEGACY_RESIZE.get(d["resize_mode"], d["resize_mode"]))
            d.pop("resize_mode")
        missing = [k for k in ("input_size", "mean", "std") if k not in d]
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if missing or unknown:
            raise SpecError(f"preprocess config lacks {missing} / has unknown keys {unknown}; it takes "
                            f"{list(cls.__dataclass_fields__)} (timm's data config)")
        return cls(**d)


def check_tta(tta: Any) -> tuple[str, ...]:
    """``tta`` as a tuple of known view names (SpecError otherwise): [] or ["flip"]."""
    if isinstance(tta, str) or not isinstance(tta, (list, tuple)):
        raise SpecError(f"model tta must be a list of views from {list(TTA_VIEWS)} ([] = none), got {tta!r}")
    bad = [v for v in tta if v not in TTA_VIEWS]
    if bad or len(set(tta)) != len(tta):
        raise SpecError(f"model tta takes each of {list(TTA_VIEWS)} at most once ([] = none), got {list(tta)!r}")
    return tuple(tta)


@dataclass(frozen=True)
class ModelCfg:
    """The embedding model: backbone spec, projection width (0 = raw features), its preprocessing,
    its test-time views (``tta``: ``("flip",)`` averages each photo's embedding with its mirror image's)
    and ``members``: how many trainings of this same architecture embed together (an ensemble,
    vericar/models/ensemble.py: their embeddings concatenated, a cosine is the mean of theirs)."""

    spec: str
    embed_dim: int
    preprocess: PreprocessCfg
    tta: tuple[str, ...] = ()
    members: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "tta", check_tta(self.tta))
        if isinstance(self.members, bool) or not isinstance(self.members, int) or self.members < 1:
            raise SpecError(f"model members must be an integer >= 1 (1 = one network), got {self.members!r}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"spec": self.spec, "embed_dim": self.embed_dim, "preprocess": self.preprocess.to_dict()}
        if self.tta:  # written only when set: a plain model's config.json stays as older vericars wrote it
            d["tta"] = list(self.tta)
        if self.members > 1:  # likewise
            d["members"] = self.members
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelCfg":
        return cls(str(d["spec"]), int(d["embed_dim"]), PreprocessCfg.from_dict(d["preprocess"]),
                   check_tta(d.get("tta", [])), d.get("members", 1))


@dataclass(frozen=True)
class DensityCfg:
    """Neighbour ranking by ``cos - weight * local density`` (vericar/search/density.py); weight 0 = plain cosine."""

    weight: float = 0.0
    k: int = 10
    max_fetch: int = 4096

    def __post_init__(self) -> None:
        w, k, m = self.weight, self.k, self.max_fetch
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise SpecError(f"density weight must be a number >= 0 (0 = off, 0.5 = CSLS), got {w!r}")
        if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in (k, m)):
            raise SpecError(f"density k and max_fetch must be positive integers, got k={k!r}, max_fetch={m!r}")
        object.__setattr__(self, "weight", float(w))


@dataclass(frozen=True)
class RankingCfg:
    """How gallery neighbours are ranked (``density``) and how many of them vote (``k``)."""

    k: int = 10
    density: DensityCfg = field(default_factory=DensityCfg)

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0:
            raise SpecError(f"ranking k must be a positive integer, got {self.k!r}")


@dataclass(frozen=True)
class OODCfg:
    """KNN+ unknown-vehicle detection: ``k``, the ``threshold`` fitted at ``tpr`` and the neighbour
    ranking it was fitted under (``calibrated_for``; its scores mean nothing under another one)."""

    k: int = 10
    threshold: float | None = None
    tpr: float | None = None
    calibrated_for: DensityCfg | None = None
    method: str = "knn+"

    def __post_init__(self) -> None:
        if self.method != "knn+":
            raise SpecError(f"unknown-vehicle method {self.method!r} is not 'knn+'")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0:
            raise SpecError(f"ood k must be a positive integer, got {self.k!r}")
        if self.threshold is not None and not math.isfinite(float(self.threshold)):
            raise SpecError(f"ood threshold must be a finite number or None, got {self.threshold!r}")


@dataclass(frozen=True)
class DetectorCfg:
    """The vehicle detector (vericar/vision/detect.py): 'none' treats the whole photo as the vehicle."""

    spec: str = "none"


@dataclass(frozen=True)
class AttributesCfg:
    """The per-vehicle attribute stage (vericar/attributes): which heads run. A head switched on but
    absent from the model folder (an older artifact) gives None for its attribute."""

    colour: bool = True
    viewpoint: bool = True
    # Licence plates (vericar/attributes/plates.py): "read" each vehicle's plate, or "off" (the
    # default: reading costs ~0.1 s a vehicle, and a plate is personal data; docs/plates.md).
    plates: str = "off"

    def __post_init__(self) -> None:
        for name in ("colour", "viewpoint"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"attributes {name} must be true or false, got {getattr(self, name)!r}")
        if self.plates not in ("read", "off"):
            raise SpecError(f"attributes plates must be 'read' or 'off', got {self.plates!r} (the app's 'blur' "
                            "is its own setting: --plates / $VERICAR_PLATES)")


@dataclass(frozen=True)
class SourceCfg:
    """Where a loaded recognizer came from (like timm's pretrained_cfg ``hf_hub_id``): the spec it was
    loaded with and the folder that spec resolved to (None for a bare backbone). Not saved."""

    spec: str
    folder: str | None = None


@dataclass(frozen=True)
class VericarConfig:
    """Everything that makes a saved recognizer behave as it does, apart from weights and gallery."""

    model: ModelCfg
    ranking: RankingCfg = field(default_factory=RankingCfg)
    ood: OODCfg = field(default_factory=OODCfg)
    calibration: Mapping[str, Any] | None = None  # vericar.search.calibration.Calibration.to_dict()
    detector: DetectorCfg = field(default_factory=DetectorCfg)
    source: SourceCfg | None = None
    compare: Mapping[str, Any] | None = None  # vericar.search.pair_calibration.PairCalibration.to_dict()
    attributes: AttributesCfg = field(default_factory=AttributesCfg)

    def __post_init__(self) -> None:
        for name in ("calibration", "compare"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def check(self, where: str = "this model") -> "VericarConfig":
        """Refuse a threshold fitted under another neighbour ranking; returns self."""
        ood, density = self.ood, self.ranking.density
        if ood.threshold is not None and ood.calibrated_for != density:
            fitted = "an unrecorded ranking" if ood.calibrated_for is None else _ranking_words(ood.calibrated_for)
            raise ArtifactError(
                f"{where}: the unknown-vehicle threshold {ood.threshold:.4f} was fitted for {fitted}, but neighbours "
                f"are ranked by {_ranking_words(density)}; its scores would be compared with the wrong threshold. "
                f"{RECALIBRATE}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the config.json of an artifact (with ``source`` only when set)."""
        d: dict[str, Any] = {"model": self.model.to_dict(), "ranking": asdict(self.ranking), "ood": asdict(self.ood),
                             "detector": asdict(self.detector), "attributes": asdict(self.attributes)}
        if self.calibration is not None:
            d["calibration"] = plain_json(self.calibration)
        if self.source is not None:
            d["source"] = asdict(self.source)
        if self.compare is not None:
            d["compare"] = plain_json(self.compare)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VericarConfig":
        """Inverse of :meth:`to_dict`; ArtifactError names the bad part and how to fix it."""
        try:
            ranking = dict(d.get("ranking") or {})
            ood = dict(d.get("ood") or {})
            if ood.get("calibrated_for") is not None:
                ood["calibrated_for"] = DensityCfg(**ood["calibrated_for"])
            return cls(
                model=ModelCfg.from_dict(d["model"]),
                ranking=RankingCfg(**{**ranking, "density": DensityCfg(**(ranking.get("density") or {}))}),
                ood=OODCfg(**ood),
                calibration=d.get("calibration"),
                detector=DetectorCfg(**(d.get("detector") or {})),
                source=SourceCfg(**d["source"]) if d.get("source") else None,
                compare=d.get("compare"),
                attributes=AttributesCfg(**(d.get("attributes") or {})),
            )
        except (KeyError, TypeError, SpecError) as e:
            raise ArtifactError(f"config.json is not a valid vericar config ({type(e).__name__}: {e}); re-save the "
                                "model with save_pretrained, or run `python -m vericar.artifacts.config_file migrate DIR` on an "
                                "artifact written by an older vericar.") from e


def _ranking_words(d: DensityCfg) -> str:
    return "plain cosine" if d.weight == 0 else f"cos - {d.weight:g} * density (density k={d.k}, max_fetch={d.max_fetch})"


def plain_json(v: Any) -> Any:
    """Mappings (read-only proxies included) and sequences as plain JSON-able dicts and lists."""
    if isinstance(v, Mapping):
        return {k: plain_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain_json(x) for x in v]
    return v
