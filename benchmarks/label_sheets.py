"""Contact sheets for labelling colour and viewpoint by eye (docs/attributes.md, "Labelling rules").

Draws a fixed-seed, class-balanced sample of a split as numbered sheets of 5x4 tiles and writes the
sample's file list, so a labeller can fill in ``file,colour,viewpoint`` rows tile by tile:

    python benchmarks/label_sheets.py --split dev --n 200 --out /work/runs/attrs/sheets
    python benchmarks/label_sheets.py --split train --n 400 --out /work/runs/attrs/sheets
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


def draw_sheet(root: Path, rows: list[dict], first: int) -> Image.Image:
    """One sheet; tile i carries the number ``first + i`` (1-based over the sample)."""
    sheet = Image.new("RGB", (COLS * TILE_W, ROWS * TILE_H), "white")
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 18)
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        im = Image.open(root / row["file"]).convert("RGB")
        im.thumbnail((TILE_W - 6, TILE_H - 6))
        x, y = (i % COLS) * TILE_W, (i // COLS) * TILE_H
        sheet.paste(im, (x + (TILE_W - im.width) // 2, y + (TILE_H - im.height) // 2))
        draw.rectangle([x + 2, y + 2, x + 40, y + 24], fill="black")
        draw.text((x + 5, y + 3), str(first + i), fill="yellow", font=font)
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/stanford_cars")
    p.add_argument("--split", choices=["dev", "train"], required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=24)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    root, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(root / f"{a.split}.csv", newline="") as f:
        sample = balanced_sample(list(csv.DictReader(f)), a.n, a.seed)
    with open(out / f"{a.split}_sample.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "file", "class_name"])
        for i, row in enumerate(sample, 1):
            w.writerow([i, row["file"], row["class_name"]])
    per = COLS * ROWS
    for s in range(0, len(sample), per):
        draw_sheet(root, sample[s:s + per], s + 1).save(out / f"{a.split}_{s // per + 1:02d}.png")


if __name__ == "__main__":
    main()
