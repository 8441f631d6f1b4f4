"""Grad-CAM++ for an embedding model: which pixels make this photo similar to the predicted vehicle.

An embedding model has no class logits, so the score explained is the cosine similarity between
the query embedding and the (re-normalised) mean of the predicted class's gallery embeddings
(as in pytorch-grad-cam's ``SimilarityToConceptTarget``). Works for CNN and ViT backbones: a ViT's
tokens are reshaped with ``model.reshape_transform``, built from the model's own patch grid.

Thread safety: Grad-CAM registers forward hooks on the (shared) model, switches it to eval mode
and turns off ``requires_grad`` on its parameters for the duration of one call (so backward
fills no ``.grad`` on shared weights). A module-level lock serialises Grad-CAM calls; hooks only
record the calling thread's forward pass, so concurrent ``no_grad`` inference (``predict``) in other
threads is neither disturbed nor captured. Everything is restored in ``finally``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from vericar.core.errors import ImageError, VericarError

__all__ = ["SimilarityTarget", "gradcam_pp", "overlay"]

_LOCK = threading.Lock()


class SimilarityTarget:
    """Grad-CAM target: cosine similarity between a model output (D,) and a fixed concept (D,)."""

    def __init__(self, concept: torch.Tensor) -> None:
        self.concept = concept

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(output, self.concept.to(output), dim=0)


def _concept(target_embeddings: Any, dim: int) -> torch.Tensor:
    """Mean of the target embeddings, L2-normalised; clear errors for wrong shapes."""
    t = np.asarray(target_embeddings, dtype=np.float32)
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] != dim:
        raise VericarError(
            f"target_embeddings must have shape (M, {dim}) with M >= 1 (the predicted class's gallery "
            f"embeddings, from the same model), got {t.shape}; embed them with this model first"
        )
    if not np.isfinite(t).all():
        raise VericarError("target_embeddings contain NaN/inf; re-embed the gallery with this model")
    mean = torch.from_numpy(t).mean(dim=0)
    norm = mean.norm()
    if norm < 1e-12:
        raise VericarError("the mean of target_embeddings is the zero vector; pass the class's own embeddings")
    return mean / norm


def _thread_filtered_hooks(cam: Any, model: torch.nn.Module, layers: list, reshape: Callable | None) -> None:
    """Replace the CAM's hook holder with one that ignores forward passes from other threads."""
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    owner = threading.get_ident()

    class _OwnThreadOnly(ActivationsAndGradients):
        def save_activation(self, module, input, output):  # noqa: A002 - torch hook signature
            if threading.get_ident() == owner:
                super().save_activation(module, input, output)

        def save_gradient(self, module, input, output):  # noqa: A002
            if threading.get_ident() == owner:
                super().save_gradient(module, input, output)

    cam.activations_and_grads.release()
    cam.activations_and_grads = _OwnThreadOnly(model, layers, reshape)


def gradcam_pp(model: Any, image_tensor: torch.Tensor, target_embeddings: np.ndarray) -> np.ndarray:
    """Grad-CAM++ heatmap ``(H, W)`` float32 in [0, 1] for ``image_tensor`` ``(1, 3, H, W)``.

    ``model`` is an EmbeddingModel (needs ``target_layers()``, ``reshape_transform``, ``output_dim``);
    ``target_embeddings`` ``(M, D)`` are the predicted class's gallery embeddings. The score explained
    is cos(query embedding, normalised mean of the targets). A map of zeros means no region raised
    the similarity (all gradients negative).
    """
    from pytorch_grad_cam import GradCAMPlusPlus

    if not isinstance(image_tensor, torch.Tensor) or image_tensor.ndim != 4 or image_tensor.shape[:2] != (1, 3):
        got = tuple(image_tensor.shape) if isinstance(image_tensor, torch.Tensor) else type(image_tensor).__name__
        raise ImageError(
            f"image_tensor must be a torch tensor of shape (1, 3, H, W) (one preprocessed RGB image), got {got}; "
            "use vericar.models.transforms.eval_transform(model.pretrained_cfg)(img).unsqueeze(0)"
        )
    concept = _concept(target_embeddings, int(model.output_dim))
    layers = list(model.target_layers())
    reshape = getattr(model, "reshape_transform", None)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    with _LOCK, torch.inference_mode(False), torch.enable_grad():  # callers may be under no_grad/inference_mode
        # gradients w.r.t. the input only: the CAM hooks need a graph, the weights need no .grad.
        x = image_tensor.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
        was_training = model.training
        saved_flags = [p.requires_grad for p in params]
        cam = None
        try:
            for p in params:
                p.requires_grad_(False)
            cam = GradCAMPlusPlus(model=model, target_layers=layers, reshape_transform=reshape)
            _thread_filtered_hooks(cam, model, layers, reshape)
            heat = cam(input_tensor=x, targets=[SimilarityTarget(concept)])[0]
        finally:
            if cam is not None:
                cam.activations_and_grads.release()
            for p, flag in zip(params, saved_flags):
                p.requires_grad_(flag)
            model.train(was_training)
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(heat, 0.0, 1.0)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend a ``(h, w)`` heatmap in [0, 1] (jet colormap) over ``image``; returns an RGB image of image's size."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if not isinstance(image, Image.Image):
        raise ImageError(f"overlay needs a PIL image, got {type(image).__name__}; open it with vericar.vision.images.open_image")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise VericarError(f"heatmap must be a 2-D array (H, W), got shape {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise VericarError(f"alpha must be in [0, 1] (weight of the heatmap), got {alpha}")
    rgb = image.convert("RGB")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    # resize as an image (bilinear) so the map lines up with the photo, not with the model input.
    heat_img = Image.fromarray(heat).resize(rgb.size, Image.BILINEAR)
    heat = np.clip(np.asarray(heat_img, dtype=np.float32), 0.0, 1.0)
    base = np.asarray(rgb, dtype=np.float32) / 255.0
    blended = show_cam_on_image(base, heat, use_rgb=True, image_weight=1.0 - alpha)
    return Image.fromarray(blended)
