"""The model spec string, parsed in one place.

    "default"                       the model shipped in vericar/default
    "local-dir:PATH"                a folder written by save_pretrained / python train/train.py
    "hf-hub:ORG/NAME[@REVISION]"    such a folder on the Hugging Face Hub
    "timm:NAME"                     a bare timm backbone (no trained head, empty gallery)
    "open_clip:ARCH/TAG"            a bare OpenCLIP image tower ("open_clip:tiny-test": tiny random, tests)

``hub.load``, ``backbones.create_backbone``, ``space.stage`` and the app read a spec only
through :func:`parse_spec`; once loaded, a Recognizer carries where it came from in
``rec.config.source`` (the spec and the folder it resolved to), so nobody resolves it again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vericar.core.errors import SpecError

__all__ = ["ModelSpec", "parse_spec", "SPEC_HELP", "ARTIFACT_KINDS", "BACKBONE_KINDS"]

SPEC_HELP = (
    "use 'default', 'local-dir:PATH', 'hf-hub:ORG/NAME[@REVISION]', or a backbone such as "
    "'timm:tf_efficientnet_lite2' / 'open_clip:ViT-B-16/laion2b_s34b_b88k'"
)
Kind = Literal["default", "local-dir", "hf-hub", "timm", "open_clip"]
ARTIFACT_KINDS = ("default", "local-dir", "hf-hub")  # a saved artifact: a folder with config.json
BACKBONE_KINDS = ("timm", "open_clip")  # a bare backbone built from its library


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``kind`` and ``name`` (the folder, ``ORG/NAME`` or backbone name), and the
    Hub ``revision`` for ``hf-hub:ORG/NAME@REVISION``. ``str(spec)`` gives the spec string back."""

    kind: Kind
    name: str = ""
    revision: str | None = None

    @property
    def is_artifact(self) -> bool:
        """A saved model folder (default, local-dir, hf-hub) rather than a bare backbone."""
        return self.kind in ARTIFACT_KINDS

    def __str__(self) -> str:
        if self.kind == "default":
            return "default"
        return f"{self.kind}:{self.name}" + (f"@{self.revision}" if self.revision else "")


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec string; SpecError says what is wrong and which forms are valid."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty model spec {spec!r}; {SPEC_HELP}.")
    spec = spec.strip()
    if spec == "default":
        return ModelSpec("default")
    kind, sep, name = spec.partition(":")
    if not sep or kind not in ARTIFACT_KINDS + BACKBONE_KINDS or kind == "default":
        raise SpecError(f"unknown model spec {spec!r}; {SPEC_HELP}.")
    name = name.strip()
    if not name:
        raise SpecError(f"model spec {spec!r} names nothing after {kind + ':'!r}; {SPEC_HELP}.")
    if kind == "hf-hub":
        repo_id, _, revision = name.partition("@")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise SpecError(f"hf-hub spec needs ORG/NAME, got {name!r}; {SPEC_HELP}.")
        return ModelSpec("hf-hub", repo_id, revision or None)
    return ModelSpec(kind, name)  # type: ignore[arg-type]
