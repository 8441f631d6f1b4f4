"""Moving recognizers around: ``load(spec)``, ``save_pretrained(dir)``, ``push_to_hub(repo_id)``.

The only module that imports huggingface_hub. An artifact is a folder:

    config.json         format + format_version, the config tree (vericar.core.config.VericarConfig: model
                        & preprocessing, ranking, OOD, calibration, detector) and meta
    model.safetensors   the embedding model's weights (an ensemble's: members.0.*, members.1.*, ...)
    gallery.json + gallery tensors (written by Gallery.save, atomically)
    attributes-colour.*, attributes-viewpoint.*   per-vehicle attribute heads, safetensors + JSON (optional;
                        vericar/attributes/stage.py: a folder without them gives None attributes)
    README.md           model card (optional; written by training)
    training_curve.png  (optional)

``save_pretrained`` works offline; ``push_to_hub`` uploads exactly that folder.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file, save

from vericar._infra.io import atomic_write
from vericar.artifacts import config_file as artifact
from vericar.artifacts.config_file import CONFIG_NAME, FORMAT
from vericar.artifacts.spec import BACKBONE_KINDS, SPEC_HELP, ModelSpec, parse_spec
from vericar.attributes.stage import Attributes
from vericar.core.config import AttributesCfg, SourceCfg, VericarConfig, plain_json
from vericar.core.errors import ArtifactError, SpecError
from vericar.models.ensemble import model_from_config
from vericar.models.model import create_model
from vericar.search.calibration import Calibration
from vericar.search.pair_calibration import PairCalibration
from vericar.search.density import DensityCorrection
from vericar.search.gallery import JSON_NAME as GALLERY_JSON, Gallery
from vericar.search.ood import KNNOOD

if TYPE_CHECKING:
    from vericar.core.recognizer import Recognizer

WEIGHTS_NAME = "model.safetensors"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "default"


def save_pretrained(recognizer: "Recognizer", directory: str | os.PathLike, *, half: bool = False) -> str:
    """Write a recognizer to ``directory`` as config.json + model.safetensors + gallery files.

    ``half=True`` stores weights as float16 (half the size; they are cast back to float32 on load).
    An unknown threshold fitted under another neighbour ranking, or a calibration loading would refuse,
    is refused before anything is written.
    """
    config = _checked(recognizer.config, directory)
    recognizer.check_views()  # queries and gallery embedded alike, or loading would refuse what is written
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # FileExistsError when `directory` (or a folder above it) is a file
        file = next((p for p in (out, *out.parents) if p.is_file()), None)
        what = f"{file} is a file" if file else f"{out} cannot be created ({e.strerror or e})"
        raise ArtifactError(f"save_pretrained: {what}; pass the path of a folder to write config.json, "
                            "model.safetensors and the gallery into (it is created if missing).") from e
    # Overwriting: drop config.json first, so a crash midway leaves "not an artifact" (a clear
    # error on load) rather than new weights beside an old gallery that would load silently.
    (out / CONFIG_NAME).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in recognizer.model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    # One metadata key: safetensors writes several in a random order (the same weights would get
    # other bytes each save); the format version is in config.json, where it is checked.
    atomic_write(out / WEIGHTS_NAME, save(state, metadata={"format": FORMAT}))
    recognizer.gallery.save(out)
    recognizer.attributes.save(out)
    # config.json last: a folder without it is not an artifact, so a crash mid-save is visible.
    write_config(out, config, recognizer.meta)
    return str(out)


def read_config(directory: str | os.PathLike) -> VericarConfig:
    """An artifact's checked config tree (older formats translated); ArtifactError says what is wrong and what to do."""
    return artifact.read(directory)[0]


def read_artifact(directory: str | os.PathLike) -> tuple[VericarConfig, dict[str, Any]]:
    """An artifact's checked config tree and its meta (training facts: metrics, command, ...)."""
    config, meta, _ = artifact.read(directory)
    return config, meta


def write_config(directory: str | os.PathLike, config: VericarConfig, meta: dict[str, Any]) -> None:
    """Write ``config`` (checked) and ``meta`` as ``directory``/config.json, atomically."""
    artifact.write(directory, _checked(config, directory), meta)


def _checked(config: VericarConfig, where: Any) -> VericarConfig:
    """``config.check``, and its calibration read back as loading reads it: what loading would
    refuse (a hand-set temperature of 20, a threshold of 1.2) is refused before anything is written."""
    config.check(str(where))
    try:
        if config.calibration is not None:
            Calibration.from_dict(dict(config.calibration))
        if config.compare is not None:
            PairCalibration.from_dict(plain_json(config.compare))
    except ArtifactError as e:
        raise ArtifactError(f"{where}: not saved: {e}") from e
    return config


def load_local(directory: str | os.PathLike, *, source: SourceCfg | None = None, **recognizer_kw: Any) -> "Recognizer":
    """Load a recognizer from a folder written by ``save_pretrained``."""
    from vericar.core.recognizer import Recognizer

    directory = Path(directory)
    config, meta, _ = artifact.read(directory)
    model = model_from_config(config.model, pretrained=False)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"{weights} not found; the artifact is incomplete — copy or download it again.")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise ArtifactError(f"{weights} is unreadable ({e}); copy or download the artifact again.") from e
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(
            f"{weights} does not match the architecture in config.json "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); the files come from different models."
        )
    gallery = Gallery.load(directory)
    attributes = recognizer_kw.pop("attributes", config.attributes)
    if isinstance(attributes, bool):  # load(..., attributes=False): every head off
        attributes = AttributesCfg(colour=attributes, viewpoint=attributes)
    if isinstance(attributes, AttributesCfg):
        attributes = Attributes.load(directory, attributes)
    # load(..., detector=SPEC) overrides the saved detector; an artifact from before detection has "none".
    kw = {"k": config.ranking.k, "meta": meta, "detector": config.detector.spec,
          "density": DensityCorrection.from_cfg(config.ranking.density),
          "calibration": Calibration.from_dict(None if config.calibration is None else dict(config.calibration)),
          "comparison": PairCalibration.from_dict(None if config.compare is None else plain_json(config.compare)),
          "source": source or SourceCfg(f"local-dir:{directory}", str(directory)), "attributes": attributes,
          **recognizer_kw}
    return Recognizer(model, gallery, KNNOOD.from_cfg(config.ood), **kw)


def from_backbone(
    spec: str, *, pretrained: bool = True, zeroshot_classes: list[str] | None = None, **recognizer_kw: Any
) -> "Recognizer":
    """A baseline recognizer: pretrained backbone features, no trained head.

    The gallery is empty, or — for an OpenCLIP backbone with ``zeroshot_classes`` — holds one text
    prototype per class name ("a photo of a 2012 BMW 3 Series Sedan"): named vehicles recognised
    with no training and no photos.
    """
    from vericar.core.recognizer import Recognizer

    model = create_model(spec, embed_dim=0, pretrained=pretrained, keep_text=bool(zeroshot_classes))
    if zeroshot_classes:
        from vericar.models.zeroshot import zeroshot_gallery

        gallery = zeroshot_gallery(model, list(zeroshot_classes))
        # One prototype per class: the 1st neighbour is the only meaningful one for KNN+.
        return Recognizer(model, gallery, KNNOOD(k=1), **{"k": 1, **recognizer_kw})
    return Recognizer(model, Gallery(model.output_dim), KNNOOD(), **recognizer_kw)


def is_complete(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds the three files of a saved artifact (config, weights, gallery)."""
    return all((Path(folder) / name).is_file() for name in (CONFIG_NAME, WEIGHTS_NAME, GALLERY_JSON))


def default_dir() -> Path:
    """Folder of the shipped default model.

    ``vericar/default``, or ``vericar/default.old`` while ``default`` is missing: train/ship.py
    swaps folders with two renames, and a crash between them leaves the previous model there.
    """
    stranded = DEFAULT_DIR.with_name(DEFAULT_DIR.name + ".old")
    return stranded if not DEFAULT_DIR.exists() and is_complete(stranded) else DEFAULT_DIR


def load(spec: str = "default", **kw: Any) -> "Recognizer":
    """Build a Recognizer from a spec: 'default', 'local-dir:PATH', 'hf-hub:ORG/NAME[@REV]' or a backbone spec.

    The recognizer keeps where it came from in ``rec.config.source`` (spec and resolved folder).
    ``plates="read"`` also reads each vehicle's licence plate (``Prediction.plate``; default: the
    model's config, "off").
    """
    plates = kw.pop("plates", None)  # load(..., plates="read"): each vehicle's plate is read (docs/plates.md)
    parsed = parse_spec(spec)
    if parsed.kind in BACKBONE_KINDS:
        rec = from_backbone(str(parsed), source=SourceCfg(str(parsed)), **kw)
    else:
        folder = resolve(parsed)
        rec = load_local(folder, source=SourceCfg(str(parsed), str(folder)), **kw)
    if plates is not None:
        rec.attributes = rec.attributes.with_plates(plates)
    return rec


def resolve(spec: str | ModelSpec) -> Path:
    """The folder a saved-artifact spec names (downloading an hf-hub one); SpecError for a backbone spec."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "local-dir":
        return Path(parsed.name)
    if parsed.kind == "hf-hub":
        return Path(download(parsed.name + (f"@{parsed.revision}" if parsed.revision else "")))
    if parsed.kind != "default":
        raise SpecError(f"{parsed} is a bare backbone, not a saved model folder; {SPEC_HELP}.")
    folder = default_dir()
    if folder != DEFAULT_DIR:
        warnings.warn(f"{DEFAULT_DIR} is missing but {folder.name} holds the previous default model (an "
                      "interrupted python train/ship.py); loading that. Run python train/ship.py again to finish.", stacklevel=3)
    elif not (DEFAULT_DIR / CONFIG_NAME).is_file():
        raise ArtifactError(
            f"the default model is not shipped in this installation ({DEFAULT_DIR} has no {CONFIG_NAME}). "
            "Train one (python train/train.py --output-dir OUT) and load 'local-dir:OUT', or use 'hf-hub:ORG/NAME'."
        )
    return folder


def download(repo: str) -> str:
    """Download a model repo from the Hub (``ORG/NAME`` or ``ORG/NAME@REVISION``) and return its folder."""
    from huggingface_hub import snapshot_download

    parsed = parse_spec(f"hf-hub:{repo}")
    repo_id, revision = parsed.name, parsed.revision
    try:
        return snapshot_download(repo_id=repo_id, revision=revision or None)
    except Exception as e:  # network, auth, missing repo: all end up here with the Hub's own message
        raise ArtifactError(
            f"could not download {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Check the name and your network/HF_TOKEN, or download it yourself and use 'local-dir:PATH'."
        ) from e


def push_to_hub(
    recognizer_or_dir: "Recognizer | str | os.PathLike",
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload vericar model",
) -> str:
    """Upload a recognizer (saved to a temporary folder first) or an artifact folder to ``repo_id``."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(recognizer_or_dir, (str, os.PathLike)):
            folder = str(recognizer_or_dir)
            read_config(folder)  # refuse to upload something that would not load
        else:
            folder = save_pretrained(recognizer_or_dir, tmp)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def deploy_space(
    space_id: str,
    folder: str | os.PathLike,
    *,
    variables: dict[str, str] | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Deploy vericar app",
) -> str:
    """Create or update the Gradio Space ``space_id`` with the files in ``folder``; set its variables."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        # delete_patterns: library files removed since the last deploy disappear from the Space too.
        api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(folder),
                          commit_message=commit_message, delete_patterns=["vericar/**"])
        for key, value in (variables or {}).items():
            api.add_space_variable(space_id, key, value)
    except Exception as e:  # network, auth, name taken: the Hub's own message says which
        raise ArtifactError(
            f"could not deploy Space {space_id!r} ({type(e).__name__}: {e}). "
            "Check HF_TOKEN (write access) and the Space name."
        ) from e
    return str(url)
