"""EmbeddingModel: backbone + projection head -> L2-normalised embedding."""

from __future__ import annotations

from dataclasses import asdict
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vericar.core.config import ModelCfg, PreprocessCfg, check_tta
from vericar.core.errors import ArtifactError, SpecError, VericarError
from vericar.models.backbones import Backbone, create_backbone

__all__ = ["EmbeddingModel", "ModelSettings", "create_model", "embed_images"]


class ModelSettings:
    """What every embedding model (one network or an ensemble) says about its input and views; the class
    using it sets ``preprocess`` and ``model_cfg``."""

    preprocess: PreprocessCfg
    model_cfg: ModelCfg

    @property
    def pretrained_cfg(self) -> Mapping[str, Any]:
        """``preprocess`` as a read-only dict in timm's vocabulary (input_size, mean, std, interpolation,
        crop_mode, crop_pct). Read-only on purpose: set ``model.preprocess = dataclasses.replace(...)``."""
        return MappingProxyType(asdict(self.preprocess))

    @property
    def tta(self) -> tuple[str, ...]:
        """Test-time views each embedding averages over: () or ("flip",) (its mirror image too)."""
        return self._tta

    @tta.setter
    def tta(self, views: Any) -> None:
        self._tta = check_tta(views)

    def config(self) -> dict[str, Any]:
        """JSON-able description from which vericar.models.ensemble.model_from_config rebuilds the architecture."""
        return self.model_cfg.to_dict()


class EmbeddingModel(ModelSettings, nn.Module):
    """Backbone features -> Linear head (or Identity when ``embed_dim == 0``) -> unit-norm embedding.

    For ViTs, ``prefix_tokens`` (class/register tokens) and ``grid_size`` (patch rows, cols)
    describe the token layout that ``reshape_transform`` turns back into a feature map.
    """

    def __init__(self, backbone: Backbone, embed_dim: int = 128) -> None:
        super().__init__()
        if not isinstance(embed_dim, int) or embed_dim < 0:
            raise SpecError(f"embed_dim must be an int >= 0 (0 = raw backbone features), got {embed_dim!r}")
        self.spec = backbone.name
        self.embed_dim = embed_dim
        self.num_features = backbone.num_features
        self.output_dim = embed_dim or backbone.num_features
        self.preprocess = PreprocessCfg.from_dict(backbone.pretrained_cfg)  # frozen: change with dataclasses.replace
        self.tta = ()  # test-time views vericar.models.embedding.embed averages over (ModelCfg.tta)
        self.kind = backbone.kind
        self.backbone = backbone.module
        self.head: nn.Module = nn.Linear(self.num_features, embed_dim) if embed_dim else nn.Identity()
        # Kept in a tuple so the text tower is not registered as a submodule: it is not part
        # of the embedding model's weights (state_dict) and is only used for zero-shot prompts.
        self._text: tuple[nn.Module | None, Any] = (backbone.clip_model, backbone.tokenizer)
        self.prefix_tokens: int | None = None
        self.grid_size: tuple[int, int] | None = None
        if self.kind == "vit":
            self.prefix_tokens, self.grid_size = _token_layout(self.backbone)

    @property
    def model_cfg(self) -> ModelCfg:
        """This model's node of the config tree (vericar.core.config.ModelCfg)."""
        return ModelCfg(self.spec, self.embed_dim, self.preprocess, self.tta)

    @property
    def clip_model(self) -> nn.Module | None:
        """The full open_clip model (image + text towers) when created with ``keep_text=True``."""
        return self._text[0]

    @property
    def tokenizer(self) -> Any:
        """open_clip tokenizer matching ``clip_model`` (None unless ``keep_text=True``)."""
        return self._text[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(B, num_features)``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` -> L2-normalised embeddings ``(B, output_dim)``."""
        return F.normalize(self.head(self.features(x)), dim=-1)

    @classmethod
    def from_config(cls, cfg: ModelCfg | dict[str, Any], pretrained: bool = False) -> "EmbeddingModel":
        """Rebuild from a ModelCfg or :meth:`config` output (random weights unless ``pretrained``;
        load a state dict after). The dict form of artifact format < 3 (``pretrained_cfg``) is read too.
        An ensemble's config (``members`` > 1) is refused: build it with vericar.models.ensemble.model_from_config."""
        members = cfg.get("members", 1) if isinstance(cfg, dict) else getattr(cfg, "members", 1)
        if members != 1:
            raise ArtifactError(f"this model config describes an ensemble of {members} networks; build it with "
                                "vericar.models.ensemble.model_from_config (vericar.load does), not EmbeddingModel.from_config")
        if isinstance(cfg, dict):
            if "spec" not in cfg or "embed_dim" not in cfg:
                raise ArtifactError(
                    f"model config must be a dict with 'spec' and 'embed_dim' (from EmbeddingModel.config()), got {cfg!r}"
                )
            saved = cfg.get("preprocess", cfg.get("pretrained_cfg"))
            try:
                pre = None if saved is None else PreprocessCfg.from_dict(saved)
            except SpecError as e:
                raise ArtifactError(f"model config's preprocess/pretrained_cfg is invalid ({e}); re-save the model") from e
            spec, embed_dim, tta = cfg["spec"], int(cfg["embed_dim"]), ()
        elif isinstance(cfg, ModelCfg):
            spec, embed_dim, pre, tta = cfg.spec, cfg.embed_dim, cfg.preprocess, cfg.tta
        else:
            raise ArtifactError(f"model config must be a ModelCfg or a dict, got {type(cfg).__name__}")
        model = create_model(spec, int(embed_dim), pretrained=pretrained)
        if pre is not None:  # the saved preprocessing is what the weights were trained with: it wins
            model.preprocess = pre
        model.tta = tta
        return model

    def target_layers(self) -> list[nn.Module]:
        """Layers whose activations Grad-CAM uses: the last block's norm for ViTs, the last conv stage for CNNs."""
        b = self.backbone
        if self.kind == "vit":
            if hasattr(b, "blocks"):  # timm
                return [b.blocks[-1].norm1]
            return [b.transformer.resblocks[-1].ln_1]  # open_clip
        if hasattr(b, "conv_head") and hasattr(b, "bn2"):  # timm EfficientNet family: bn2 includes the activation
            return [b.bn2]
        if hasattr(b, "feature_info"):  # other timm CNNs: the deepest feature stage
            return [b.get_submodule(b.feature_info[-1]["module"])]
        if hasattr(b, "layer4"):  # open_clip ModifiedResNet
            return [b.layer4]
        raise VericarError(f"no Grad-CAM target layer known for backbone {self.spec!r}; explain() is unavailable")

    @property
    def reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """None for CNNs; for ViTs a callable tokens ``(B, N, C)`` -> feature map ``(B, C, rows, cols)``."""
        if self.kind != "vit":
            return None
        prefix, (rows, cols) = self.prefix_tokens, self.grid_size

        def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
            patches = tokens[:, prefix:, :]
            if patches.shape[1] != rows * cols:
                raise VericarError(
                    f"ViT produced {patches.shape[1]} patch tokens but its grid is {rows}x{cols}; "
                    f"feed images of size {tuple(self.preprocess.input_size[1:])} (use eval_transform)"
                )
            return patches.reshape(tokens.shape[0], rows, cols, tokens.shape[2]).permute(0, 3, 1, 2)

        return tokens_to_map


def _token_layout(module: nn.Module) -> tuple[int, tuple[int, int]]:
    """(number of prefix tokens, (rows, cols)) of a timm or open_clip ViT."""
    if hasattr(module, "patch_embed"):  # timm
        rows, cols = module.patch_embed.grid_size
        return int(module.num_prefix_tokens), (int(rows), int(cols))
    rows, cols = module.grid_size  # open_clip VisionTransformer: one class token before the patches
    return 1, (int(rows), int(cols))


def create_model(spec: str, embed_dim: int = 128, pretrained: bool = True, *, keep_text: bool = False) -> EmbeddingModel:
    """Build an EmbeddingModel from a spec (``timm:NAME`` | ``open_clip:ARCH/TAG``).

    ``embed_dim=0`` keeps the raw pooled features (L2-normalised): the frozen baseline.
    ``keep_text=True`` (open_clip only) keeps the CLIP text tower for zero-shot prototypes.
    """
    if not isinstance(embed_dim, int) or embed_dim < 0:
        raise SpecError(f"embed_dim must be an int >= 0 (0 = raw backbone features), got {embed_dim!r}")
    return EmbeddingModel(create_backbone(spec, pretrained=pretrained, keep_text=keep_text), embed_dim)


def embed_images(
    model: EmbeddingModel, images: Sequence[Image.Image], batch_size: int = 32, progress: bool = False
) -> np.ndarray:
    """Embed PIL images -> float32 ``(N, output_dim)``: :func:`vericar.models.embedding.embed`, kept under this name."""
    from vericar.models.embedding import embed

    return embed(model, images, batch_size=batch_size, progress=progress)
