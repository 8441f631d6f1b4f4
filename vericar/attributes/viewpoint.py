"""A vehicle's viewpoint: front, front-side, side, rear-side or rear, with a confidence, or None.

Left and right are one class (a photo and its mirror image have the same viewpoint). The head reads
the recogniser's pooled backbone features (globally pooled, so they barely keep left from right); it
was fitted on labelled training photos, with their mirror images added or not as cross-validation
chose (the shipped head: not; docs/attributes.md).
"""
from __future__ import annotations

VIEWPOINTS = ("front", "front-side", "side", "rear-side", "rear")
