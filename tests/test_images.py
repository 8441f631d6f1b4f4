"""Tests for vericar.vision.images: every input kind, every pixel mode, every refusal. Images are made here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vericar.core.errors import ImageError
from vericar.vision.images import MIN_SIDE, make_thumbnail, open_image


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _noise(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height but that holds no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _assert_loaded_rgb(im: Image.Image) -> None:
    assert isinstance(im, Image.Image)
    assert im.mode == "RGB"
    assert getattr(im, "fp", None) is None  # detached from any file
    im.getpixel((0, 0))  # pixels are there


# ---------------------------------------------------------------- input kinds


def test_path_bytes_pil_numpy_agree(tmp_path):
    src = _noise()
    path = tmp_path / "a.png"
    src.save(path)
    ref = np.asarray(src)
    for given in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), src, ref):
        out = open_image(given)
        _assert_loaded_rgb(out)
        np.testing.assert_array_equal(np.asarray(out), ref)


def test_result_is_detached_from_file_and_input(tmp_path):
    path = tmp_path / "a.png"
    _noise().save(path)
    out = open_image(path)
    path.unlink()  # file gone: the image must still be usable
    assert np.asarray(out).shape == (48, 64, 3)

    src = _noise()
    before = np.asarray(src).copy()
    out = open_image(src)
    assert out is not src
    out.paste((1, 2, 3), (0, 0, 64, 48))
    np.testing.assert_array_equal(np.asarray(src), before)  # the caller's image is untouched


# ---------------------------------------------------------------- refusals


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        open_image(tmp_path / "nope.jpg")


def test_directory_refused(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        open_image(tmp_path)


def test_empty_file_and_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        open_image(p)
    with pytest.raises(ImageError, match="empty"):
        open_image(b"")


def test_text_file_renamed_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is a shopping list, not a car\n")
    with pytest.raises(ImageError, match="not an image.*text"):
        open_image(p)


def test_pdf_bytes():
    with pytest.raises(ImageError, match="not an image.*PDF"):
        open_image(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n")


def test_truncated_jpeg(tmp_path):
    data = _jpeg_bytes(_noise(128, 128), quality=90)
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        open_image(p)
    # the untruncated file is fine, so the failure above is the cut
    assert open_image(data).size == (128, 128)


def test_truncated_png():
    data = _png_bytes(_noise(128, 128))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        open_image(data[: len(data) // 2])


def test_size_checked_before_decoding():
    # 5000x5000 declared, no pixel data: refused for size, not as truncated, so no decode ran
    data = _png_header_only(5000, 5000)
    with pytest.raises(ImageError, match="25,000,000 pixels.*max_pixels"):
        open_image(data, max_pixels=1_000_000)


def test_real_image_over_small_max_pixels():
    data = _png_bytes(_noise(200, 100))
    with pytest.raises(ImageError, match="20,000 pixels"):
        open_image(data, max_pixels=10_000)
    assert open_image(data, max_pixels=20_000).size == (200, 100)
    with pytest.raises(ImageError, match="pixels"):
        open_image(_noise(200, 100), max_pixels=10_000)
    with pytest.raises(ImageError, match="pixels"):
        open_image(np.zeros((100, 200, 3), np.uint8), max_pixels=10_000)


def test_pil_decompression_bomb_error_is_wrapped():
    # 10^10 pixels: PIL itself raises DecompressionBombError inside Image.open
    with pytest.raises(ImageError, match="too large|pixels"):
        open_image(_png_header_only(100_000, 100_000), max_pixels=10**12)


@pytest.mark.parametrize("size", [(1, 1), (MIN_SIDE - 1, 100), (100, MIN_SIDE - 1)])
def test_too_small(size):
    with pytest.raises(ImageError, match=rf"{size[0]}x{size[1]}.*at least {MIN_SIDE}"):
        open_image(_png_bytes(Image.new("RGB", size)))


def test_min_side_accepted():
    assert open_image(Image.new("RGB", (MIN_SIDE, MIN_SIDE))).size == (MIN_SIDE, MIN_SIDE)


def test_unsupported_type():
    with pytest.raises(ImageError, match="int"):
        open_image(42)  # type: ignore[arg-type]


def test_bad_array_shape():
    with pytest.raises(ImageError, match="shape"):
        open_image(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        open_image(np.full((32, 32), np.nan, np.float32))


# ---------------------------------------------------------------- orientation and frames


def test_exif_orientation_applied():
    # left half red, right half blue; orientation 6 = "rotate 90 degrees clockwise to display"
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _jpeg_bytes(Image.fromarray(a), exif=exif.tobytes(), quality=95)
    out = open_image(data)
    assert out.size == (20, 40)  # width and height swapped
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # clockwise turn puts the left (red) half on top
    assert bottom[2] > 200 and bottom[0] < 60
    # naive reference: the stored pixels turned clockwise by hand
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    assert open_image(buf.getvalue()).getpixel((5, 5)) == (255, 0, 0)


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animated_webp_apng_first_frame(fmt):
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=50, **kw)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    assert open_image(buf.getvalue()).getpixel((5, 5)) == (255, 0, 0)


# ---------------------------------------------------------------- pixel modes


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    out = open_image(_jpeg_bytes(cmyk, quality=95))
    r, g, b = out.getpixel((16, 16))
    assert r > 230 and g < 30 and b < 30


def test_palette_png_with_transparency():
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    p.paste(1, (16, 0, 32, 32))  # right half: index 1 = red; left half: index 0 = transparent black
    data = _png_bytes(p, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = open_image(data)
    assert out.getpixel((4, 4)) == (255, 255, 255)  # transparent -> white, not black
    assert out.getpixel((24, 4)) == (255, 0, 0)


def test_rgba_composited_on_white():
    a = np.zeros((32, 32, 4), np.uint8)
    a[:, :, :3] = (255, 0, 0)
    a[:, 16:] = (0, 0, 255, 255)
    a[:8, :8] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    out = open_image(_png_bytes(Image.fromarray(a)))
    assert out.getpixel((12, 20)) == (255, 255, 255)  # fully transparent red -> white
    assert out.getpixel((24, 20)) == (0, 0, 255)
    grey = out.getpixel((2, 2))
    assert all(120 <= v <= 135 for v in grey)
    # numpy RGBA goes the same way
    np.testing.assert_array_equal(np.asarray(open_image(a)), np.asarray(out))


def test_la_l_and_1bit():
    la = Image.fromarray(np.dstack([np.full((32, 32), 0, np.uint8), np.zeros((32, 32), np.uint8)]), "LA")
    assert open_image(_png_bytes(la)).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.new("L", (32, 32), 77)
    assert open_image(_png_bytes(grey)).getpixel((3, 3)) == (77, 77, 77)
    one = Image.new("1", (32, 32), 0)
    one.paste(1, (16, 0, 32, 32))
    out = open_image(_png_bytes(one))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((20, 0)) == (255, 255, 255)


def test_16bit_png_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (32, 1))
    data = _png_bytes(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(open_image(data))
    ref = np.rint(ramp.astype(np.float64) * 255 / 65535)  # naive reference
    assert np.abs(out[:, :, 0].astype(int) - ref).max() <= 1
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out[0, 128, 0] in (127, 128)  # clipping would give 255 here
    np.testing.assert_array_equal(open_image(ramp), open_image(data))  # numpy uint16 the same


def test_float_mode_f_scaled():
    unit = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (32, 1))
    out = np.asarray(open_image(Image.fromarray(unit, "F")))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and 120 <= out[0, 32, 0] <= 135
    wide = unit * 5000.0 - 1000.0  # arbitrary range: stretched to 0..255, not clipped
    out = np.asarray(open_image(Image.fromarray(wide, "F")))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and 120 <= out[0, 32, 0] <= 135
    np.testing.assert_array_equal(np.asarray(open_image(unit)), np.asarray(open_image(Image.fromarray(unit, "F"))))


def test_numpy_variants():
    g = np.full((20, 30, 1), 9, np.uint8)
    assert open_image(g).getpixel((0, 0)) == (9, 9, 9)
    b = np.zeros((20, 30), bool)
    b[:, 15:] = True
    out = open_image(b)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((20, 0)) == (255, 255, 255)


# ---------------------------------------------------------------- thumbnails


def test_make_thumbnail():
    t = make_thumbnail(_noise(400, 200))
    assert t.size == (96, 48) and t.mode == "RGB"
    t = make_thumbnail(Image.new("RGBA", (50, 300), (0, 0, 0, 0)), size=60)
    assert t.size == (10, 60) and t.mode == "RGB" and t.getpixel((5, 5)) == (255, 255, 255)
    small = _noise(40, 30)
    assert make_thumbnail(small).size == (40, 30)  # never upscaled
    with pytest.raises(ValueError):
        make_thumbnail(small, size=0)
