"""Safe image opening: any photo-like input -> a fully loaded 8-bit RGB PIL image, or a clear error.

Every image that enters vericar (training, gallery enrolment, the demo upload box) goes through
:func:`open_image`, so that EXIF rotation, odd pixel modes, animated files, truncated uploads and
decompression bombs are handled once, here.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vericar.core.errors import ImageError

__all__ = ["MAX_PIXELS", "MIN_SIDE", "ImageSource", "open_image", "photo_list", "to_rgb", "make_thumbnail"]

#: Largest accepted image, in pixels (width * height). 50 MP lets 48 MP phone photos through
#: while keeping one decoded RGB image under ~150 MB.
MAX_PIXELS = 50_000_000
#: Smallest accepted side, in pixels: below this a photo holds no usable detail of a vehicle.
MIN_SIDE = 16

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


def photo_list(images: Any) -> list[Any]:
    """``images`` as a list of photos: one photo (path, bytes, PIL image, 2-3-D array) becomes a list of one.

    Enrolment takes several photos; without this a single path would be walked letter by letter.
    None is no photos.
    """
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or (
            isinstance(images, np.ndarray) and images.ndim <= 3):
        return [images]
    try:
        return list(images)
    except TypeError:
        raise ImageError(f"Photos must be one photo or a list of photos (file paths, bytes, PIL images or "
                         f"arrays), not {type(images).__name__}.") from None


_HINT = "Use a JPEG, PNG or WebP photo of a vehicle."


def open_image(src: ImageSource, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``src`` (path, bytes, PIL image or numpy array) as a loaded RGB image.

    Applies EXIF orientation, takes the first frame of animated files, converts every pixel
    mode to 8-bit RGB (alpha composited on white) and refuses unusable input with
    :class:`vericar.core.errors.ImageError`. The result never shares memory or a file handle with
    ``src``.
    """
    if isinstance(src, Image.Image):
        # A PIL image keeps the frame the caller chose; we never seek (mutate) their object.
        _check_size(src.size, max_pixels, "The image")
        try:
            src.load()
            return _finish(_exif_transpose(src), "The image")
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"The PIL image could not be decoded ({exc}). {_HINT}") from exc
    if isinstance(src, np.ndarray):
        return _finish(_from_array(src, max_pixels), "The array")
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise ImageError(f"The image data is empty (0 bytes). {_HINT}")
        return _decode(io.BytesIO(data), data[:512], "The image data", max_pixels)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageError(f"Image file not found: '{path}'. Check the path and try again.")
        if not path.is_file():
            raise ImageError(f"'{path}' is not a file (a directory?). Pass the path of one image.")
        if path.stat().st_size == 0:
            raise ImageError(f"Image file '{path}' is empty (0 bytes). {_HINT}")
        with path.open("rb") as fh:
            head = fh.read(512)
            fh.seek(0)
            return _decode(fh, head, f"'{path}'", max_pixels)
    raise ImageError(
        f"Cannot open an image from a {type(src).__name__}; expected a file path, bytes, "
        "a PIL image or a numpy array."
    )


def _decode(fh, head: bytes, what: str, max_pixels: int) -> Image.Image:
    """Read the header, check its size, then fully decode (so truncation surfaces here)."""
    with warnings.catch_warnings():
        # PIL only warns for big images; make its warning a refusal unless the caller asked
        # for more pixels than PIL's own limit allows.
        if Image.MAX_IMAGE_PIXELS is None or max_pixels <= Image.MAX_IMAGE_PIXELS:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        else:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(fh) as im:
                _check_size(im.size, max_pixels, what)  # before any pixel is decoded
                im = _first_frame(im)
                im.load()
                return _finish(_exif_transpose(im), what)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"{what} is too large to open safely ({exc}). Resize it below "
                f"{max_pixels:,} pixels and try again."
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{what} is not an image ({_sniff(head)}). {_HINT}") from exc
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(
                f"{what} is corrupt or truncated and could not be decoded ({exc}). "
                f"Re-export or re-download the photo. {_HINT}"
            ) from exc


def _sniff(head: bytes) -> str:
    """Say what a non-image file looks like, so the message helps the user."""
    if head.startswith(b"%PDF"):
        return "it looks like a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "it looks like a ZIP/Office archive"
    if head.lstrip().startswith((b"<!DOCTYPE", b"<html", b"<HTML")):
        return "it looks like an HTML page"
    try:
        head.decode("utf-8")
        return "it looks like a text file"
    except UnicodeDecodeError:
        return "its format is not recognised"


def _check_size(size: tuple[int, int], max_pixels: int, what: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageError(
            f"{what} is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} "
            "(a possible decompression bomb). Downscale it, or pass a larger max_pixels if "
            "you trust the file."
        )


def _first_frame(im: Image.Image) -> Image.Image:
    """Animated GIF/WebP/APNG: use frame 0, the one a browser shows first."""
    if getattr(im, "n_frames", 1) > 1 and im.tell() != 0:
        im.seek(0)
    return im


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Rotate per EXIF orientation. A malformed EXIF block must not cost the user the photo."""
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - broken metadata: keep the pixels as stored
        return im
    return out if out is not None else im


def _finish(im: Image.Image, what: str) -> Image.Image:
    rgb = to_rgb(im)
    w, h = rgb.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(
            f"{what} is only {w}x{h} pixels; both sides must be at least {MIN_SIDE}. "
            "Use a larger photo of the vehicle."
        )
    return rgb


def swap_red_blue(im: Image.Image) -> Image.Image:
    """The RGB photo with its red and blue channels swapped (the Stanford Cars train photos in
    ../shared are stored so: docs/attributes.md)."""
    red, green, blue = im.convert("RGB").split()
    return Image.merge("RGB", (blue, green, red))


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to a new 8-bit RGB image (alpha over white, high bit depth rescaled)."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(im))).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im.copy()
    return im.convert("RGB")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale integer / float pixels to 0..255 by their nominal range, never by clipping."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.size == 0:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageError("The image holds NaN or infinite values; it is not a photo.")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:  # the usual float convention
            scaled = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:  # float copy of 8-bit data
            scaled = a
        else:  # arbitrary range: stretch it (a constant image maps to black)
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return np.rint(scaled).astype(np.uint8)
    # integers: 16-bit data (I;16, or mode I as PIL opens 16-bit PNGs) maps 65535 -> 255
    a = a.astype(np.int64)
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi <= 65535:
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    return (((a - lo) * 255) // max(hi - lo, 1)).astype(np.uint8)


def _from_array(a: np.ndarray, max_pixels: int) -> Image.Image:
    """numpy HxW, HxWx1, HxWx3 or HxWx4 (any numeric dtype) -> PIL image."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(
            f"The array has shape {a.shape}; expected HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA). "
            "For a CHW tensor, transpose it to HxWxC first."
        )
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ImageError(f"The array has dtype {a.dtype}; expected a numeric pixel array.")
    _check_size((a.shape[1], a.shape[0]), max_pixels, "The array")
    a8 = np.ascontiguousarray(_to_uint8(a))
    return Image.fromarray(a8)  # uint8 HxW / HxWx3 / HxWx4 -> L / RGB / RGBA


def make_thumbnail(img: Image.Image, size: int = 96) -> Image.Image:
    """A new RGB copy of ``img`` that fits in ``size`` x ``size``, aspect ratio kept."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"Thumbnail size must be a positive int, got {size!r}.")
    thumb = to_rgb(img)
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return thumb
