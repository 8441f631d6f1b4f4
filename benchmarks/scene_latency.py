"""Latency of whole-photo recognition: predict_all on one-vehicle frames, the detector alone, and
predict on a tight 224 px dev photo (8 dev photos x 3 rounds, after a warm-up).

    python benchmarks/scene_latency.py           # CVT=1 runs OpenCV on one thread
"""
import sys, time, csv, os, statistics
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
from PIL import Image
from vericar._infra.runtime import tune_malloc
tune_malloc()
from vericar.artifacts import hub
import benchmarks.scenes as S
rec = hub.load("default")
import cv2; cv2.setNumThreads(int(os.environ.get("CVT", "2")))
rows = list(csv.DictReader(open("../shared/data/stanford_cars/dev.csv")))[:8]
rng = np.random.default_rng(0)
frames = [S.make_frame(rng, [(Image.open("../shared/data/stanford_cars/" + r["file"]).convert("RGB"), 1.8)])[0] for r in rows]
photos = [Image.open("../shared/data/stanford_cars/" + r["file"]).convert("RGB") for r in rows]
rec.predict_all(frames[0]); rec.predict(photos[0])
full, det, tight = [], [], []
for rep in range(3):
    for f, p in zip(frames, photos):
        t = time.perf_counter(); rec.detector.detect(f, min_score=0.05); det.append(time.perf_counter() - t)
        t = time.perf_counter(); rec.predict_all(f); full.append(time.perf_counter() - t)
        t = time.perf_counter(); rec.predict(p); tight.append(time.perf_counter() - t)
q = lambda xs: f"p50 {1000*statistics.median(xs):.0f} ms, p95 {1000*np.percentile(xs,95):.0f} ms (n={len(xs)})"
print("predict_all one-vehicle frame:", q(full)); print("detection alone:", q(det)); print("predict tight 224px dev photo (detector + recognition):", q(tight)); print("load", os.getloadavg())
