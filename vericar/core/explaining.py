"""``Recognizer.explain``: Grad-CAM++ of the similarity between a photo's main vehicle and the gallery
embeddings of the vehicle it is predicted to be, drawn on the pixels the model saw (never the mirror
image a flip-averaged embedding also looks at)."""
from __future__ import annotations

from typing import Any

from vericar.core.errors import VericarError
from vericar.core.prediction import Explanation
from vericar.models.transforms import eval_transform, input_view
from vericar.vision.images import open_image
from vericar.vision.scene import main_crop


def explain(rec: Any, image: Any) -> Explanation:
    """Grad-CAM++ of ``rec``'s answer for ``image`` (VericarError when no vehicle is found or its class left)."""
    from vericar.models.explain import gradcam_pp, overlay  # lazy: pytorch-grad-cam is only needed here

    pil = main_crop(rec, open_image(image), none_if_blank=True)
    if pil is None:
        raise VericarError("No vehicle was found in this photo (the detector saw none), so there is nothing to "
                           "explain; try a photo where the vehicle is larger or clearer.")
    pred = rec.predict_embeddings(rec._embed_pil([pil]))[0]
    with rec._lock:
        rows = [i for i, lab in enumerate(rec.gallery.labels) if lab == pred.label]
        if not rows:  # removed by another request between predict() and here
            raise VericarError(f"{pred.label!r} was just removed from the gallery; try again.")
        targets = rec.gallery.embeddings[rows]
    x = eval_transform(rec.model.preprocess)(pil).unsqueeze(0)  # the model's preprocessing as it is now
    heat = gradcam_pp(rec.model, x, targets)
    view = input_view(pil, rec.model.preprocess).convert("RGB")  # the part of the photo the model saw
    return Explanation(heatmap=heat, overlay=overlay(view, heat), label=pred.label, photo=view)
