"""EnsembleModel: several trainings of one architecture embedding a photo together.

Each member's embedding is L2-normalised and the concatenation is scaled by 1/sqrt(members), so the
whole is unit-norm and the cosine of two photos is the mean of the members' cosines: neighbours,
votes, the unknown check and comparisons need nothing new. The members share the input (one
preprocessing), so a photo is decoded and normalised once. What reads the backbone's pooled
features (the attribute heads) reads the first member's, the one they were trained on; Grad-CAM++
explains through every member's last stage.

``model_from_config`` is the one builder from a ``ModelCfg`` for both kinds of model.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import nn

from vericar.core.config import ModelCfg, PreprocessCfg
from vericar.core.errors import ArtifactError, SpecError
from vericar.models.model import EmbeddingModel, ModelSettings

__all__ = ["EnsembleModel", "Model", "model_from_config"]


class EnsembleModel(ModelSettings, nn.Module):
    """Members (EmbeddingModels of one spec, width and preprocessing) -> their embeddings concatenated."""

    def __init__(self, members: Sequence[EmbeddingModel]) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2 or not all(isinstance(m, EmbeddingModel) for m in members):
            raise SpecError(f"an ensemble needs at least two EmbeddingModels, got {[type(m).__name__ for m in members]}")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            if (m.spec, m.embed_dim, m.preprocess) != (first.spec, first.embed_dim, first.preprocess):
                raise SpecError(
                    f"ensemble member {i} is {m.spec} ({m.embed_dim}-d, {m.preprocess}) but member 0 is "
                    f"{first.spec} ({first.embed_dim}-d, {first.preprocess}); members must be trainings of one "
                    "architecture with one preprocessing.")
        self.members = nn.ModuleList(members)
        # The ensemble applies its own test-time views once, around all members (the members' own are
        # not read: the embedding path asks the model it is given, and members are only called inside).
        self.tta = ()

    # What callers read of a model, from the first member (the others are alike).
    spec = property(lambda self: self.members[0].spec, doc="The members' backbone spec.")
    embed_dim = property(lambda self: self.members[0].embed_dim, doc="Each member's embedding width.")
    num_features = property(lambda self: self.members[0].num_features, doc="The first member's pooled feature width.")
    kind = property(lambda self: self.members[0].kind, doc="Backbone kind: cnn or vit.")
    backbone = property(lambda self: self.members[0].backbone, doc="The first member's backbone.")
    head = property(lambda self: self.members[0].head,
                    doc="The first member's head: the attribute heads read its input (FeatureTap).")
    reshape_transform = property(lambda self: self.members[0].reshape_transform, doc="As EmbeddingModel's.")
    clip_model = property(lambda self: None, doc="None: no zero-shot text tower in an ensemble.")
    tokenizer = property(lambda self: None, doc="None, as clip_model.")

    @property
    def output_dim(self) -> int:
        """Width of the concatenated embedding."""
        return sum(m.output_dim for m in self.members)

    @property
    def preprocess(self) -> PreprocessCfg:
        """The members' one preprocessing; setting it sets every member's."""
        return self.members[0].preprocess

    @preprocess.setter
    def preprocess(self, pre: PreprocessCfg) -> None:
        for m in self.members:
            m.preprocess = pre

    @property
    def model_cfg(self) -> ModelCfg:
        """This model's node of the config tree: the members' ModelCfg with ``members`` set."""
        return replace(self.members[0].model_cfg, tta=self.tta, members=len(self.members))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The first member's pooled backbone features ``(B, num_features)``."""
        return self.members[0].features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` -> unit-norm ``(B, output_dim)``: the members' embeddings side by side."""
        return torch.cat([m(x) for m in self.members], dim=-1) / math.sqrt(len(self.members))

    def target_layers(self) -> list[nn.Module]:
        """Every member's Grad-CAM layer: the map is their mean (pytorch-grad-cam aggregates layers)."""
        return [layer for m in self.members for layer in m.target_layers()]


def model_from_config(cfg: ModelCfg | dict[str, Any], pretrained: bool = False) -> EmbeddingModel | EnsembleModel:
    """An EmbeddingModel, or an EnsembleModel when ``cfg.members > 1`` (random weights: load a state dict after)."""
    if isinstance(cfg, dict) and cfg.get("members", 1) != 1:
        try:
            cfg = ModelCfg.from_dict(cfg)
        except (KeyError, TypeError, ValueError, SpecError) as e:
            raise ArtifactError(f"model config {cfg!r} is invalid ({e}); re-save the model") from e
    if isinstance(cfg, ModelCfg) and cfg.members > 1:
        one = replace(cfg, tta=(), members=1)
        model = EnsembleModel([EmbeddingModel.from_config(one, pretrained) for _ in range(cfg.members)])
        model.tta = cfg.tta
        return model
    return EmbeddingModel.from_config(cfg, pretrained)


Model = EmbeddingModel | EnsembleModel  # what a Recognizer embeds with
