"""Shared by the batch tests: real photos (with a broken and a non-image file) and a tiny saved model."""
from __future__ import annotations

import shutil
from pathlib import Path

from conftest import CARS_DIR, make_car_image

NAMES = ["Alpha Coupe Coupe 2001", "Beta Van Van 2002", "Gamma Wagon Wagon 2003"]


def real_photo_folder(folder: Path, n: int) -> list[Path]:
    """``folder`` with the first ``n`` dev photos, a truncated JPEG (in a subfolder), a text file named
    .jpg and a .txt note (not an image type: never read). Returns the real photos."""
    src = sorted((CARS_DIR / "dev").glob("*.jpg"))[:n]
    (folder / "sub").mkdir(parents=True)
    for p in src:
        shutil.copy(p, folder / p.name)
    (folder / "sub" / "broken.jpg").write_bytes(src[0].read_bytes()[:3000])
    (folder / "notes.jpg").write_text("not a photo\n")
    (folder / "readme.txt").write_text("not a photo either\n")
    return [folder / p.name for p in src]


def tiny_artifact(folder: Path) -> str:
    """A tiny random model with a gallery of three made-up vehicles, saved; its spec (no detector)."""
    import torch

    from vericar import KNNOOD, Gallery, Recognizer, create_model, save_pretrained

    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False)
    rec = Recognizer(model, Gallery(16), KNNOOD(k=2), k=3, detector="none")
    for c, name in enumerate(NAMES):
        rec.enroll([make_car_image(10 * c + i) for i in range(3)], name)
    save_pretrained(rec, folder)
    return f"local-dir:{folder}"


def made_photos(folder: Path, n: int) -> list[Path]:
    """``n`` drawn car-like photos as JPEG files."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"car{i:03d}.jpg"
        make_car_image(100 + i, size=(120, 80)).save(p)
        out.append(p)
    return out
