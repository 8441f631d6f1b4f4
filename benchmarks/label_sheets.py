"""Contact sheets for labelling colour and viewpoint by eye (docs/attributes.md, "Labelling rules").

Draws a fixed-seed, class-balanced sample of a split as numbered sheets of 5x4 tiles and writes the
sample's file list, so a labeller can fill in ``file,colour,viewpoint`` rows tile by tile:

    python benchmarks/label_sheets.py --split dev --n 200 --out /work/runs/attrs/sheets
    python benchmarks/label_sheets.py --split train --n 400 --out /work/runs/attrs/sheets

Enlarged sheets (6 photos of ~330 px a sheet, what the later viewpoint labels were made from; a larger
``--n`` keeps the sample's first tiles, so ``--first`` draws only the new ones):

    python benchmarks/label_sheets.py --split train --n 2000 --first 401 --grid 3 2 --tile 520 340 --out SHEETS

Colour sheets: each photo as stored beside itself with red and blue swapped, 3 to a sheet (the
labeller names the colour of the panel whose tell-tales are natural, docs/attributes.md):

    python benchmarks/label_sheets.py --split train --n 1200 --pairs --grid 2 3 --tile 520 300 --out SHEETS
"""
from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLS, ROWS, TILE_W, TILE_H = 5, 4, 220, 180


def balanced_sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` rows spread over the classes: round-robin over shuffled classes, shuffled rows in each."""
    rng = random.Random(seed)
    by_class: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_class[row["label"]].append(row)
    classes = sorted(by_class, key=int)
    rng.shuffle(classes)
    for c in classes:
        rng.shuffle(by_class[c])
    picked: list[dict] = []
    depth = 0
    while len(picked) < n:
        for c in classes:
            if depth < len(by_class[c]) and len(picked) < n:
                picked.append(by_class[c][depth])
        depth += 1
    return picked


def draw_sheet(root: Path, rows: list[dict], first: int, cols: int = COLS, tile: tuple[int, int] = (TILE_W, TILE_H),
               pairs: bool = False) -> Image.Image:
    """One sheet; tile i carries the number ``first + i`` (1-based over the sample). Each photo is scaled
    to fill its tile, up as well as down (so a 224 px photo can be looked at enlarged). ``pairs``: each
    photo as stored ("nA") beside itself with red and blue swapped ("nB"), one photo per row, to tell
    which of the two has natural colours."""
    tw, th = tile
    tiles: list[tuple[Image.Image, str]] = []
    for i, row in enumerate(rows):
        im = Image.open(root / row["file"]).convert("RGB")
        scale = min((tw - 6) / im.width, (th - 6) / im.height)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
        if pairs:  # a standalone labelling tool (no vericar import): vericar.vision.images.swap_red_blue's two lines
            red, green, blue = im.split()
            tiles += [(im, f"{first + i}A"), (Image.merge("RGB", (blue, green, red)), f"{first + i}B")]
        else:
            tiles.append((im, str(first + i)))
    cols = 2 if pairs else cols
    sheet = Image.new("RGB", (cols * tw, -(-len(tiles) // cols) * th), "white")
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", max(18, th // 12))
    draw = ImageDraw.Draw(sheet)
    for i, (im, label) in enumerate(tiles):
        x, y = (i % cols) * tw, (i // cols) * th
        sheet.paste(im, (x + (tw - im.width) // 2, y + (th - im.height) // 2))
        left, top, right, bottom = draw.textbbox((x + 5, y + 3), label, font=font)
        draw.rectangle([x + 2, y + 2, right + 3, bottom + 3], fill="black")  # as wide as the number
        draw.text((x + 5, y + 3), label, fill="yellow", font=font)
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/stanford_cars")
    p.add_argument("--split", choices=["dev", "train"], required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=24)
    p.add_argument("--first", type=int, default=1, help="draw the sample's tiles from this number on")
    p.add_argument("--grid", type=int, nargs=2, default=(COLS, ROWS), metavar=("COLS", "ROWS"))
    p.add_argument("--tile", type=int, nargs=2, default=(TILE_W, TILE_H), metavar=("W", "H"))
    p.add_argument("--pairs", action="store_true", help="each photo as stored beside it with red and blue swapped")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not 1 <= a.first <= a.n:
        p.error(f"--first must be a tile of the sample, 1 to --n ({a.n}); got {a.first}")
    root, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(root / f"{a.split}.csv", newline="") as f:
        sample = balanced_sample(list(csv.DictReader(f)), a.n, a.seed)
    with open(out / f"{a.split}_sample.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "file", "class_name"])
        for i, row in enumerate(sample, 1):
            w.writerow([i, row["file"], row["class_name"]])
    per = a.grid[1] if a.pairs else a.grid[0] * a.grid[1]
    for s in range(a.first - 1, len(sample), per):
        sheet = draw_sheet(root, sample[s:s + per], s + 1, a.grid[0], tuple(a.tile), a.pairs)
        sheet.save(out / f"{a.split}_{s + 1:04d}.png")


if __name__ == "__main__":
    main()
