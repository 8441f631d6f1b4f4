"""Detection recall / precision at several SSD score thresholds on the frames of benchmarks/scenes.py.

    python benchmarks/scene_thresholds.py --source train --photos 150   # how SCORE_THRESHOLD was chosen
    python benchmarks/scene_thresholds.py --source train --photos 300 --zoom-looks 0   # without the second look
"""
import sys, json, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import benchmarks.scenes as S
from vericar.vision.detect import create_detector, iou
from vericar.vision.scene import main_first
ap = argparse.ArgumentParser(); ap.add_argument("--source", default="train"); ap.add_argument("--photos", type=int, default=150)
ap.add_argument("--zoom-looks", type=int, default=None, help="second looks per photo (default: the detector's)")
args = ap.parse_args()
data = Path("../shared/data/stanford_cars")
import csv
rows = list(csv.DictReader(open(data / f"{args.source}.csv")))
rng = np.random.default_rng(0)
rows = [rows[i] for i in sorted(rng.choice(len(rows), args.photos, replace=False))]
if args.source == "dev":
    asp = S.class_aspects(data)
    for r in rows: r["aspect"] = asp[r["class_name"]]
else:
    from PIL import Image
    for r in rows:
        with Image.open(data / r["file"]) as im: r["aspect"] = im.width / im.height
det = create_detector("opencv-ssd:mobilenet_v2_coco", **({} if args.zoom_looks is None else {"zoom_looks": args.zoom_looks}))
frames = 0
ths = [0.2, 0.3, 0.4, 0.5, 0.6]
stats = {t: [0, 0, 0] for t in ths}
for kind, frame, boxes, _, _ in S.frames_of(rows, data, 0):
    found = det.detect(frame, min_score=0.05)
    frames += 1
    for t in ths:
        sure = [b for b in found if b.score >= t]
        used = set(); hit = 0
        for g in boxes:
            c = [i for i, b in enumerate(sure) if i not in used and iou(b, g) >= 0.5]
            if c: used.add(max(c, key=lambda i: iou(sure[i], g))); hit += 1
        stats[t][0] += len(boxes); stats[t][1] += hit; stats[t][2] += len(sure)
out = {t: {"recall": 100 * h / n, "precision": 100 * h / max(1, d), "vehicles": n, "detections": d} for t, (n, h, d) in stats.items()}
print(json.dumps({"source": args.source, "photos": args.photos, "zoom_looks": det.zoom_looks,
                  "network_passes_per_frame": det.passes / frames, **{str(k): v for k, v in out.items()}}, indent=1))
