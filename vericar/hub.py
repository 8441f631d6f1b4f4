"""Moving recognizers around: ``load(spec)``, ``save_pretrained(dir)``, ``push_to_hub(repo_id)``.

The only module that imports huggingface_hub. An artifact is a folder:

    config.json         format + format_version, model architecture & preprocessing, OOD, k, meta,
                        detector (spec of the vehicle detector, vericar.detect; absent = "none")
    model.safetensors   the embedding model's weights
    gallery.json + gallery tensors (written by Gallery.save, atomically)
    README.md           model card (optional; written by training)
    training_curve.png  (optional)

``save_pretrained`` works offline; ``push_to_hub`` uploads exactly that folder.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file, save

from ._io import atomic_write
from .errors import ArtifactError, SpecError
from .gallery import JSON_NAME as GALLERY_JSON, Gallery
from .model import EmbeddingModel, create_model
from .calibration import Calibration
from .density import DensityCorrection
from .ood import KNNOOD

if TYPE_CHECKING:
    from .recognizer import Recognizer

FORMAT = "vericar"
# Version 2 added "density" (the neighbour ranking, for which the OOD threshold is calibrated).
# An artifact that ranks by plain cosine is still written as version 1, so older vericar versions
# keep reading it; they refuse a version-2 one instead of applying its threshold to other scores.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_DIR = Path(__file__).parent / "default"
BACKBONE_PREFIXES = ("timm:", "open_clip:")
SPEC_HELP = (
    "use 'default', 'local-dir:PATH', 'hf-hub:ORG/NAME[@REVISION]', or a backbone such as "
    "'timm:tf_efficientnet_lite2' / 'open_clip:ViT-B-16/laion2b_s34b_b88k'"
)


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def save_pretrained(recognizer: "Recognizer", directory: str | os.PathLike, *, half: bool = False) -> str:
    """Write a recognizer to ``directory`` as config.json + model.safetensors + gallery files.

    ``half=True`` stores weights as float16 (half the size; they are cast back to float32 on load).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # Overwriting: drop config.json first, so a crash midway leaves "not an artifact" (a clear
    # error on load) rather than new weights beside an old gallery that would load silently.
    (out / CONFIG_NAME).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in recognizer.model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    version = FORMAT_VERSION if recognizer.density.active else 1
    atomic_write(out / WEIGHTS_NAME, save(state, metadata={"format": FORMAT, "format_version": str(version)}))
    recognizer.gallery.save(out)
    config = {
        "format": FORMAT,
        "format_version": version,
        "model": recognizer.model.config(),
        "ood": recognizer.ood.to_dict(),
        "k": recognizer.k,
        "meta": recognizer.meta,
        "detector": recognizer.detector.spec,
    }
    if recognizer.density.active:
        config["density"] = recognizer.density.to_dict()
    if recognizer.calibration.active:  # optional: older readers ignore it and keep plain vote shares
        config["calibration"] = recognizer.calibration.to_dict()
    # config.json last: a folder without it is not an artifact, so a crash mid-save is visible.
    _write_json_atomic(out / CONFIG_NAME, config)
    return str(out)


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and check an artifact's config.json; ArtifactError says what is wrong and what to do."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{path} not found: {directory} is not a vericar model folder. Point at a folder written by "
            "save_pretrained or train/train.py --output-dir."
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); re-export the model with save_pretrained.") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a vericar config (no \"format\": \"{FORMAT}\"); re-export the model.")
    version = config.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{directory} uses artifact format version {version}, this vericar reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. "
            "Install the vericar version that wrote it, or re-export the model with this one."
        )
    return config


def load_local(directory: str | os.PathLike, **recognizer_kw: Any) -> "Recognizer":
    """Load a recognizer from a folder written by ``save_pretrained``."""
    from .recognizer import Recognizer

    directory = Path(directory)
    config = read_config(directory)
    try:
        model = EmbeddingModel.from_config(config["model"], pretrained=False)
    except KeyError as e:
        raise ArtifactError(f"{directory}/config.json lacks {e}; re-export the model.") from e
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
    ood = KNNOOD.from_dict(config.get("ood", {}))
    # An artifact saved before detection existed has no "detector": it keeps working as it did
    # (the whole photo is the vehicle). load(..., detector=SPEC) overrides either.
    kw = {"k": config.get("k", 10), "meta": config.get("meta", {}), "detector": config.get("detector", "none"),
          "density": DensityCorrection.from_dict(config.get("density")),
          "calibration": Calibration.from_dict(config.get("calibration")), **recognizer_kw}
    return Recognizer(model, gallery, ood, **kw)


def from_backbone(
    spec: str, *, pretrained: bool = True, zeroshot_classes: list[str] | None = None, **recognizer_kw: Any
) -> "Recognizer":
    """A baseline recognizer: pretrained backbone features, no trained head.

    The gallery is empty, or — for an OpenCLIP backbone with ``zeroshot_classes`` — holds one text
    prototype per class name ("a photo of a 2012 BMW 3 Series Sedan"): named vehicles recognised
    with no training and no photos.
    """
    from .recognizer import Recognizer

    model = create_model(spec, embed_dim=0, pretrained=pretrained, keep_text=bool(zeroshot_classes))
    if zeroshot_classes:
        from .zeroshot import zeroshot_gallery

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
    """Build a Recognizer from a spec: 'default', 'local-dir:PATH', 'hf-hub:ORG/NAME[@REV]' or a backbone spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty model spec; {SPEC_HELP}.")
    spec = spec.strip()
    if spec == "default":
        folder = default_dir()
        if folder != DEFAULT_DIR:
            warnings.warn(f"{DEFAULT_DIR} is missing but {folder.name} holds the previous default model (an "
                          "interrupted train/ship.py); loading that. Run train/ship.py again to finish.", stacklevel=2)
            return load_local(folder, **kw)
        if not (DEFAULT_DIR / CONFIG_NAME).is_file():
            raise ArtifactError(
                f"the default model is not shipped in this installation ({DEFAULT_DIR} has no {CONFIG_NAME}). "
                "Train one (train/train.py --output-dir OUT) and load 'local-dir:OUT', or use 'hf-hub:ORG/NAME'."
            )
        return load_local(DEFAULT_DIR, **kw)
    if spec.startswith("local-dir:"):
        return load_local(spec[len("local-dir:") :], **kw)
    if spec.startswith("hf-hub:"):
        return load_local(download(spec[len("hf-hub:") :]), **kw)
    if spec.startswith(BACKBONE_PREFIXES):
        return from_backbone(spec, **kw)
    raise SpecError(f"unknown model spec {spec!r}; {SPEC_HELP}.")


def download(repo: str) -> str:
    """Download a model repo from the Hub (``ORG/NAME`` or ``ORG/NAME@REVISION``) and return its folder."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1:
        raise SpecError(f"hf-hub spec needs ORG/NAME, got {repo!r}; {SPEC_HELP}.")
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
