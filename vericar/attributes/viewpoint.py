"""A vehicle's viewpoint: front, front-side, side, rear-side or rear, with a confidence, or None.

Left and right are one class (a photo and its mirror image have the same viewpoint), so the head
reads the recogniser's pooled backbone features, which do not keep left from right anyway; it was
fitted on labelled training photos and their mirror images (docs/attributes.md, labelling rules).
"""
from __future__ import annotations

VIEWPOINTS = ("front", "front-side", "side", "rear-side", "rear")
