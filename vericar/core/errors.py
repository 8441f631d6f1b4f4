"""Exceptions raised by vericar. Each message says what is wrong and how to fix it."""


class VericarError(Exception):
    """Base class of every error vericar raises on purpose."""


class ImageError(VericarError, ValueError):
    """An input could not be used as a photo (corrupt, wrong type, too large, too small)."""


class ArtifactError(VericarError):
    """A saved model or gallery is missing, corrupt, or from an incompatible version."""


class SpecError(VericarError, ValueError):
    """A model spec string (``local-dir:...``, ``timm:...``) is malformed or unknown."""


class GalleryError(VericarError, ValueError):
    """Embeddings, labels or settings given to a Gallery are not usable."""


def check_positive_int(value: object, name: str, error: type[Exception] = VericarError, what: str = "") -> int:
    """``value`` as an int if it is a positive integer (bool excluded), else ``error`` saying so.

    ``what`` is added to the message in parentheses (e.g. "the embedding size").
    """
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        detail = f" ({what})" if what else ""
        raise error(f"{name} must be a positive integer{detail}, got {value!r}.")
    return int(value)
