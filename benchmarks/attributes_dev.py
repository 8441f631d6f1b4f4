"""Colour and viewpoint figures on labelled photos, with confusion tables (docs/attributes.md).

The photos go through the whole product path (``Recognizer.predict_batch``: detector, crop, one
embedding pass, attribute heads), scored by ``vericar.evaluation.attributes`` as ``python -m
vericar.evaluate --attributes CSV`` scores them, without the recognition figures around them:

    python benchmarks/attributes_dev.py --labels benchmarks/labels/attributes_dev.csv \
        --data ../shared/data/stanford_cars --json /work/runs/attrs/dev.json
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vericar.attributes.colour import COLOURS, coarse  # noqa: E402
from vericar.attributes.viewpoint import VIEWPOINTS  # noqa: E402
from vericar.evaluation.attributes import confusion_markdown, evaluate_attributes, table_rows  # noqa: E402
from vericar.evaluation.data import Sample  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", default="benchmarks/labels/attributes_dev.csv")
    p.add_argument("--data", default="../shared/data/stanford_cars")
    p.add_argument("--model", default="default")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    import vericar
    from vericar._infra.runtime import tune_malloc

    tune_malloc()
    with open(a.labels, newline="") as f:
        rows = list(csv.DictReader(f))
    samples = [Sample(str(Path(a.data) / r["file"]), -1, "", colour=r.get("colour") or None,
                      viewpoint=r.get("viewpoint") or None) for r in rows]
    r = evaluate_attributes(vericar.load(a.model), samples)
    print("| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in table_rows(r)))
    groups = sorted({coarse(c) for c in COLOURS}, key=lambda g: COLOURS.index(g))
    grouped: dict[str, dict[str, int]] = {}
    for t, row in r["colour"]["confusion"].items():
        for answer, n in row.items():
            g = grouped.setdefault(coarse(t), {})
            key = answer if answer == "null" else coarse(answer)
            g[key] = g.get(key, 0) + n
    print("\nColour, 15 names (rows: label, columns: answer)\n")
    print(confusion_markdown(r["colour"]["confusion"], COLOURS))
    print("\nColour, coarse groups\n")
    print(confusion_markdown(grouped, groups))
    print("\nViewpoint\n")
    print(confusion_markdown(r["viewpoint"]["confusion"], VIEWPOINTS))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
