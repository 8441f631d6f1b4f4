"""The artifact's config.json on disk: read any readable format version, write the current one,
migrate older ones (``python -m vericar.artifacts.config_file migrate DIR [DIR ...]``).

Format 3 is ``{"format": "vericar", "format_version": 3, **VericarConfig.to_dict(), "meta": {...}}``.
Format 4 is format 3 with a calibration that has a nearness term (method "knn-softmax-sim"): it is
written only then, so the vericar before it refuses such an artifact with its clear "install the
version that wrote it" instead of misreading the calibration. Format 5 is a model with test-time
views (``model.tta``, e.g. flip averaging), or a calibration with a part fitted on never-trained
models (method "knn-softmax-open"): a vericar before it would embed queries without the views against
a gallery embedded with them, a silent accuracy loss, so it must refuse. Format 6 is an ensemble
(``model.members`` > 1, vericar/models/ensemble.py), whose weights a vericar before it cannot build.
Every other artifact stays format 3.
Formats 1 and 2 (vericar before the config tree) restated settings: the density weight in
``density`` and again in ``meta.train_config``, the OOD threshold in ``ood`` and again in
``meta.ood_threshold``, and linked threshold and ranking only through the version number (2 =
"the threshold is calibrated for the ``density`` written beside it", 1 = plain cosine). They are
read by translating them into the tree (:func:`upgrade`), and ``python -m vericar.artifacts.config_file migrate
DIR`` writes that translation back; weights and gallery files are not touched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from vericar._infra.io import atomic_write
from vericar.core.config import TRAIN_SETTINGS_IN_TREE, DensityCfg, DetectorCfg, ModelCfg, OODCfg, PreprocessCfg, RankingCfg, VericarConfig
from vericar.core.errors import ArtifactError, SpecError

FORMAT = "vericar"
CURRENT_VERSIONS = (3, 4, 5, 6)  # read as the tree itself; written: see ``version_for``
LEGACY_VERSIONS = (1, 2)
CONFIG_NAME = "config.json"


def read(directory: str | os.PathLike) -> tuple[VericarConfig, dict[str, Any], int]:
    """An artifact's config tree, meta and the format version it was written in; ArtifactError says
    what is wrong and what to do. Older versions are translated in memory; the tree is checked."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{path} not found: {directory} is not a vericar model folder. Point at a folder written by "
            "save_pretrained or python train/train.py --output-dir."
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); re-export the model with save_pretrained.") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a vericar config (no \"format\": \"{FORMAT}\"); re-export the model.")
    version = raw.get("format_version")
    if version in LEGACY_VERSIONS:
        cfg, meta = upgrade(raw, directory)
    elif version in CURRENT_VERSIONS:
        cfg, meta = VericarConfig.from_dict(raw), dict(raw.get("meta") or {})
    else:
        raise ArtifactError(
            f"{directory} uses artifact format version {version}, this vericar reads versions "
            f"{', '.join(map(str, (*LEGACY_VERSIONS, *CURRENT_VERSIONS)))}. "
            "Install the vericar version that wrote it, or re-export the model with this one."
        )
    return cfg.check(str(directory)), meta, version


def write(directory: str | os.PathLike, cfg: VericarConfig, meta: dict[str, Any]) -> None:
    """Write config.json (atomically; without ``source``: where it is loaded from next is the reader's)."""
    body = {"format": FORMAT, "format_version": version_for(cfg), **cfg.to_dict(), "meta": meta}
    body.pop("source", None)
    atomic_write(Path(directory) / CONFIG_NAME, json.dumps(body, indent=2, sort_keys=True).encode())


def version_for(cfg: VericarConfig) -> int:
    """The format ``cfg`` is written in: 6 for an ensemble, 5 with test-time views or an open-world calibration,
    else 4 when its calibration has a nearness term, else 3 (the oldest that reads it right)."""
    from vericar.search.calibration import METHODS

    if cfg.model.members > 1:
        return CURRENT_VERSIONS[3]
    method = cfg.calibration.get("method") if cfg.calibration is not None else None
    if cfg.model.tta or method == METHODS[2]:
        return CURRENT_VERSIONS[2]
    nearness = method == METHODS[1]
    return CURRENT_VERSIONS[1] if nearness else CURRENT_VERSIONS[0]


def upgrade(raw: dict[str, Any], where: Any = "config.json") -> tuple[VericarConfig, dict[str, Any]]:
    """A format 1 / 2 config.json as the tree and a meta without the restated settings."""
    try:
        model = raw["model"]
        saved_pp = model.get("pretrained_cfg")
        if saved_pp is None:  # written before preprocessing was saved: the backbone's own
            from vericar.models.backbones import create_backbone

            saved_pp = create_backbone(model["spec"], pretrained=False).pretrained_cfg
        density = DensityCfg(**raw["density"]) if raw.get("density") else DensityCfg()
        ood = dict(raw.get("ood") or {})
        threshold = ood.get("threshold")
        cfg = VericarConfig(
            model=ModelCfg(str(model["spec"]), int(model["embed_dim"]), PreprocessCfg.from_dict(saved_pp)),
            ranking=RankingCfg(int(raw.get("k", 10)), density),
            # Version 2's promise: the threshold is calibrated for the density beside it (version 1: none).
            ood=OODCfg(int(ood.get("k", 10)), threshold, ood.get("tpr"), density if threshold is not None else None,
                       ood.get("method", "knn+")),
            calibration=raw.get("calibration"),
            detector=DetectorCfg(str(raw.get("detector") or "none")),
        )
    except (KeyError, TypeError, ValueError, AttributeError, SpecError) as e:
        raise ArtifactError(f"{where}: config.json (format {raw.get('format_version')}) is invalid "
                            f"({type(e).__name__}: {e}); re-export the model.") from e
    meta = dict(raw.get("meta") or {})
    meta.pop("ood_threshold", None)  # == ood.threshold
    if isinstance(meta.get("train_config"), dict):
        meta["train_config"] = {k: v for k, v in meta["train_config"].items() if k not in TRAIN_SETTINGS_IN_TREE}
    return cfg, meta


def migrate(directory: str | os.PathLike) -> str:
    """Rewrite ``directory``'s config.json in the current format (only that file); says what it did."""
    cfg, meta, version = read(directory)
    if version == version_for(cfg):  # (a format 3 file with a nearness calibration is rewritten as 4)
        return f"{directory}: already format {version}, nothing to do"
    write(directory, cfg, meta)
    return f"{directory}: config.json migrated from format {version} to {version_for(cfg)}"


def legacy_model_dict(model: ModelCfg) -> dict[str, Any]:
    """The model description vericar wrote before format 3. Fingerprints of saved data (enrolled
    galleries) hash this form, so enrolments saved before the tree still match their model."""
    pp = model.preprocess
    extra = {"members": model.members} if model.members > 1 else {}  # an ensemble is another model
    legacy_mode = {"center": "shortest", "squash": "squash"}[pp.crop_mode]
    return {"spec": model.spec, "embed_dim": model.embed_dim,
            "pretrained_cfg": {"input_size": list(pp.input_size), "mean": list(pp.mean), "std": list(pp.std),
                               "interpolation": pp.interpolation, "crop_pct": pp.crop_pct, "resize_mode": legacy_mode}, **extra}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m vericar.artifacts.config_file migrate DIR [DIR ...]``: rewrite older artifacts' config.json."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vericar.artifacts.config_file", description=main.__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="rewrite config.json of an artifact written by an older vericar "
                         "(weights and gallery files are left as they are)")
    mig.add_argument("dirs", nargs="+", metavar="DIR")
    args = ap.parse_args(argv)
    for d in args.dirs:
        print(migrate(d))


if __name__ == "__main__":
    from vericar.core.errors import VericarError

    try:
        main()
    except VericarError as e:
        raise SystemExit(f"error: {e}") from None
