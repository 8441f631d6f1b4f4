"""Do tight photos still go through as they did? The main region (what is cropped and embedded) of
every photo in a CSV with the detector's second look and without it (one network pass).

    python benchmarks/tight_routing.py --csv ../shared/data/stanford_cars/dev.csv

Same regions for every photo means the same embeddings, so the same `vericar.evaluate` figures.
"""
import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.vision.detect import create_detector  # noqa: E402
from vericar.vision.images import open_image  # noqa: E402
from vericar.vision.scene import locate  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--csv", default="../shared/data/stanford_cars/dev.csv")
ap.add_argument("--detector", default="opencv-ssd:mobilenet_v2_coco")
args = ap.parse_args()
root = Path(args.csv).parent
rows = list(csv.DictReader(open(args.csv)))
one, two = create_detector(args.detector, zoom_looks=0), create_detector(args.detector)
differ, whole, none = [], 0, 0
for i, r in enumerate(rows):
    photo = open_image(root / r["file"])
    a, b = locate(one, photo, max_vehicles=1), locate(two, photo, max_vehicles=1)
    if [(x.crop, x.whole) for x in a] != [(x.crop, x.whole) for x in b]:
        differ.append(r["file"])
    whole += bool(b and b[0].whole and not b[0].tentative)
    none += not b or b[0].tentative  # no sure vehicle box: none at all, or only faint ones
    if (i + 1) % 200 == 0:
        print(f"{i + 1} photos, {len(differ)} differ", file=sys.stderr, flush=True)
print(json.dumps({"photos": len(rows), "main_region_differs": differ, "whole": whole, "nothing_found": none,
                  "passes_per_photo_one_look": one.passes / len(rows),
                  "passes_per_photo_second_look": two.passes / len(rows)}, indent=1))
