"""When is a photo "no vehicle"? What the detector sees in real car photos and in real photos of
other things, and what the recogniser then answers.

    python benchmarks/no_vehicle.py --csv ../shared/data/stanford_cars/train.csv  # car crops with no box at all
    python benchmarks/no_vehicle.py --photos DIR_OR_FILES...                       # other photos: named as a car?

With no ``--photos``, the non-vehicle photos that ship with installed packages are used: scikit-learn's
two (china.jpg, flower.jpg), matplotlib's grace_hopper.jpg and, if scikit-image is installed
(``pip install scikit-image``, ~15 MB), its 26 sample images (astronaut, coffee, coins, grass, ...;
two are motorcycles, not in the gallery either).
"""
import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.errors import cli  # noqa: E402
from vericar.artifacts.hub import load  # noqa: E402
from vericar.vision.images import open_image  # noqa: E402
from vericar.vision.scene import locate  # noqa: E402

IMAGE_TYPES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def packaged_photos() -> list[Path]:
    """Real photos of things other than cars that ship with installed packages."""
    import matplotlib
    import sklearn.datasets

    found = [Path(sklearn.datasets.__file__).parent / "images" / n for n in ("china.jpg", "flower.jpg")]
    found.append(Path(matplotlib.__file__).parent / "mpl-data/sample_data/grace_hopper.jpg")
    try:
        import skimage

        found += sorted(p for p in (Path(skimage.__file__).parent / "data").iterdir() if p.suffix in IMAGE_TYPES)
    except ImportError:
        print("scikit-image is not installed: its sample photos are left out", file=sys.stderr)
    return [p for p in found if p.is_file()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--csv", help="photos of cars (a CSV with a `file` column): counts those with no box at all")
    ap.add_argument("--photos", nargs="*", help="photos (or folders of them) that show no car")
    args = ap.parse_args()
    rec = load(args.model)
    if args.csv:
        root, rows = Path(args.csv).parent, list(csv.DictReader(open(args.csv)))
        blank, faint = [], []
        for i, r in enumerate(rows):
            regions = locate(rec.detector, open_image(root / r["file"]), max_vehicles=1)
            (blank if not regions else faint if regions[0].tentative else []).append(r["file"])
            if (i + 1) % 500 == 0:
                print(f"{i + 1} photos: {len(blank)} without a box, {len(faint)} only faint", file=sys.stderr,
                      flush=True)
        print(json.dumps({"csv": args.csv, "photos": len(rows), "no_box_at_all": blank, "only_faint_boxes": faint},
                         indent=1))
        return
    missing = [p for p in args.photos or [] if not Path(p).exists()]
    if missing:
        ap.error(f"--photos: {', '.join(missing)} not found; give photo files or folders of them.")
    paths = [q for p in map(Path, args.photos) for q in (sorted(p.iterdir()) if p.is_dir() else [p])
             if q.suffix.lower() in IMAGE_TYPES] if args.photos else packaged_photos()
    out = []
    for p in paths:
        found = rec.predict_all(open_image(p))
        main_one = found[0] if found else None
        out.append({"photo": p.name, "answer": "no vehicle" if not found else "unknown vehicle" if main_one.unknown
                    else main_one.label, "confidence": round(main_one.confidence["model"], 3) if found else None})
        print(f"{p.name:28s} {out[-1]['answer']} {out[-1]['confidence'] or ''}", file=sys.stderr)
    named = [o for o in out if o["answer"] not in ("no vehicle", "unknown vehicle")]
    print(json.dumps({"photos": len(out), "named_as_a_car": len(named), "answers": out}, indent=1))


if __name__ == "__main__":
    cli(main)  # an unreadable photo or CSV: its message, no traceback
