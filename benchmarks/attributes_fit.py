"""Choose and fit the colour and viewpoint heads on labelled TRAIN photos (never dev).

Features are what the product computes for a vehicle: the main vehicle's crop as ``predict`` cuts
it; what the product's tap catches in the recogniser's pass (vericar/attributes/tap.py: the pooled
backbone features, the means of the left, centre and right thirds of the map they are pooled from,
the early stages' maps pooled over the body); and the CIELAB summaries of the body's pixels and of
the body against its scene (``vericar.attributes.colour.body_colour``, ``scene_light``). Candidates are compared by
5-fold cross-validation on the train labels; the best is refitted on all of them and written into
the model folder as safetensors + JSON:

    python benchmarks/attributes_fit.py --labels benchmarks/labels/attributes_train.csv \
        --data ../shared/data/stanford_cars --model default --cache /work/runs/attrs --out vericar/default

Photos marked ``swapped=1`` (red and blue channels swapped in the stored file, docs/attributes.md)
are swapped back first. Viewpoint heads are fitted on each photo and its mirror image (left and
right are one class) when cross-validation prefers it. ``--viewpoint-labels`` and ``--colour-labels``
add train photos labelled for one attribute only (benchmarks/labels/viewpoint_train.csv,
viewpoint_train_rare.csv, colour_train.csv) to that attribute's fit. The colour threshold is the
out-of-fold top probability below which ``--coverage-margin`` more than 10% of the photos fall (a
margin over the 90% coverage target).
Each photo is first made to look like what the product is given (``--views real-input``, the recipe
the confidences are calibrated with, train/realinput.py): fitted on the tight crops as stored, the
colour threshold answered 91.9% of train photos but 86.5% of dev photos.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vericar.attributes.colour import COLOURS, body_colour, coarse, scene_light  # noqa: E402
from vericar.attributes.head import LinearHead, fit_arrays  # noqa: E402
from vericar.attributes.stage import Attributes  # noqa: E402
from vericar.attributes.tap import EARLY_STAGES, PARTS, tapped_features  # noqa: E402
from vericar.attributes.viewpoint import VIEWPOINTS  # noqa: E402
from vericar.evaluation.data import TRAIN_CHANNELS  # noqa: E402

C_GRID = (0.03, 0.1, 0.3)
# Candidates compared (on a shared 2-core CPU each fit of the 1,280 backbone features takes long; a
# first backbone-only colour run, C=0.01, reached 0.39 coarse accuracy, far below the body summary).
COLOUR_KINDS = ("body", "body+scene", "body+early", "body+scene+early")
# (features, fitted with mirror images too). The column means need the mirror images: left and right swap there.
VIEW_KINDS = (("backbone", False), ("backbone", True), ("backbone+columns", True))


def feature_set() -> str:
    """What makes the cached features, for the cache key: the code of the pixel summaries and of the tap
    (a changed summary or stage list must not reuse old numbers)."""
    import hashlib

    import vericar.attributes.colour as colour
    import vericar.attributes.tap as tap

    code = b"".join(Path(m.__file__).read_bytes() for m in (colour, tap))
    return f"parts {PARTS} early {EARLY_STAGES} code {hashlib.sha1(code).hexdigest()[:12]}"
VIEW_C = (0.01, 0.03, 0.1)
VIEW_PCA = (64, 128, 256)  # wider projections, tried once 1,200 viewpoint labels made them worth fitting


def read_labels(path: str, channels: str = "rgb") -> list[dict]:
    """The rows of a label CSV, each marked to be swapped back (``swapped=1``, ``channels="bgr"``: every
    train photo is stored with red and blue swapped) or not (``"rgb"``: the photos as stored)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{**r, "swapped": "1" if channels == "bgr" else "0"} for r in rows]


def crops_of(rec, rows: list[dict], data: Path, whole: bool = False, views: str = "tight") -> list:
    """The main vehicle's crop of each labelled photo, as ``predict`` cuts it (swapped photos swapped back);
    ``views="real-input"``: from the photo made to look like what the product is given first
    (train/realinput.py, seeded by the file name); ``whole``: the photos without the detector's crop
    (Stanford Cars train photos are already cropped to the car's box)."""
    import zlib

    from train.realinput import real_input_view
    from vericar.vision.images import open_image, swap_red_blue
    from vericar.vision.scene import locate

    out = []
    for r in rows:
        photo = open_image(data / r["file"])
        if r.get("swapped") == "1":
            photo = swap_red_blue(photo)
        if views == "real-input":
            photo = real_input_view(photo, np.random.default_rng(zlib.crc32(r["file"].encode())))
        if whole:
            out.append(photo)
            continue
        regions = locate(rec.detector, photo, max_vehicles=1)
        out.append(regions[0].image(photo) if regions else photo)
    return out


def features(rec, rows: list[dict], data: Path, cache: Path | None, views: str = "tight") -> dict[str, np.ndarray]:
    """What the product's tap catches for each photo's crop and its mirror image (vericar.attributes.tap:
    backbone, columns, early; ``_flip``: the mirror image's), and the crop's pixel summaries (body, scene)
    (``views``:
    see ``crops_of``); cached by the photos, which of them are swapped back (a relabelled swap changes
    the pixels the features come from) and the views."""
    import hashlib

    from PIL import ImageOps

    from vericar.models.embed_cache import weights_digest

    swaps = "".join("1" if r.get("swapped") == "1" else "0" for r in rows)
    # the model's weights and preprocessing too: another model (or the same one fixed) gives other features
    from train.realinput import RECIPE

    views_key = "" if views == "tight" else views + repr(RECIPE)  # the recipe makes the pixels too
    tag = hashlib.sha1((swaps + weights_digest(rec.model) + repr(rec.model.pretrained_cfg)
                        + views_key + feature_set()).encode()).hexdigest()[:8]
    key = cache / f"attr-feats-{len(rows)}-{rows[0]['file'].replace('/', '_')}-{tag}.npz" if cache else None
    if key is not None and key.is_file():
        got = dict(np.load(key))
        if list(got["files"]) == [r["file"] for r in rows]:
            return got
    crops = crops_of(rec, rows, data, views=views)
    got = {"files": np.array([r["file"] for r in rows]), "body": np.stack([body_colour(c) for c in crops]),
           "scene": np.stack([scene_light(c) for c in crops])}
    for side, views_of in (("", crops), ("_flip", [ImageOps.mirror(c) for c in crops])):
        got.update({part + side: x for part, x in tapped_features(rec.model, views_of).items()})
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        np.savez(key, **got)
    return got


def design(f: dict[str, np.ndarray], kind: str, flip: bool = False) -> np.ndarray:
    """The feature matrix a head of ``kind`` reads (``flip``: from the mirror images)."""
    side = "_flip" if flip else ""  # the pixel summaries (body, scene) have no mirror version: colour is colour
    return np.concatenate([f[k + side] if k in PARTS else f[k] for k in kind.split("+")], 1)


PCA_DIMS = 64  # features wider than this are projected first (fits in seconds on a shared CPU)


def fit_lr(x: np.ndarray, y: np.ndarray, c: float, dims: int = PCA_DIMS):
    """Standardise, project wide features on their first ``dims`` principal axes, logistic regression;
    the projection is folded into the weights, so the head stays one standardise + linear map."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    pca = PCA(dims, random_state=0).fit(z) if z.shape[1] > dims else None
    lr = LogisticRegression(C=c, max_iter=3000)
    lr.fit(pca.transform(z) if pca is not None else z, y)
    if pca is not None:  # logits = W P (z - m) + b
        w = lr.coef_ @ pca.components_
        lr.intercept_ = lr.intercept_ - w @ pca.mean_
        lr.coef_ = w
    return lr, mean, scale


def oof_proba(x: np.ndarray, y: np.ndarray, c: float, classes: list[str], seed: int = 0,
              x_aug: np.ndarray | None = None, dims: int = PCA_DIMS) -> np.ndarray:
    """Out-of-fold class probabilities (5 folds); ``x_aug``: extra rows (mirror images) added to each training fold."""
    from sklearn.model_selection import KFold

    p = np.zeros((len(y), len(classes)))
    for tr, te in KFold(5, shuffle=True, random_state=seed).split(x):
        xt, yt = x[tr], y[tr]
        if x_aug is not None:
            xt, yt = np.concatenate([xt, x_aug[tr]]), np.concatenate([yt, yt])
        lr, mean, scale = fit_lr(xt, yt, c, dims)
        cols = [classes.index(k) for k in lr.classes_]
        a = fit_arrays(list(lr.classes_), mean, scale, lr.coef_, lr.intercept_)
        p[np.ix_(te, cols)] = LinearHead(list(lr.classes_), a["mean"], a["scale"], a["weight"], a["bias"]).proba(x[te])
    return p


def scores(y: np.ndarray, p: np.ndarray, classes: list[str], threshold: float = 0.0) -> dict:
    top = p.argmax(1)
    ans = p.max(1) >= threshold
    pred = np.array(classes)[top]
    right = pred == y
    cright = np.array([coarse(a) == coarse(b) for a, b in zip(pred, y)])
    n = max(1, ans.sum())
    return {"coverage": float(ans.mean()), "accuracy": float(right[ans].sum() / n),
            "coarse_accuracy": float(cright[ans].sum() / n)}


def choose_colour(f: dict, rows: list[dict], margin: float) -> dict:
    keep = np.array([bool(r["colour"]) for r in rows])
    y = np.array([r["colour"] for r in rows])[keep]
    classes = [c for c in COLOURS if c in set(y)]
    best = None
    for kind in [k for k in COLOUR_KINDS if all(p in f for p in k.split("+"))]:
        x = design(f, kind)[keep]
        for c in C_GRID:
            p = oof_proba(x, y, c, classes)
            thr = float(np.quantile(p.max(1), 0.10 - margin))
            s_all, s_thr = scores(y, p, classes), scores(y, p, classes, thr)
            print(f"colour {kind:14s} C={c:<5} all: acc {s_all['accuracy']:.3f} coarse {s_all['coarse_accuracy']:.3f} | "
                  f"threshold {thr:.3f}: coverage {s_thr['coverage']:.3f} acc {s_thr['accuracy']:.3f} "
                  f"coarse {s_thr['coarse_accuracy']:.3f}")
            cand = {"kind": kind, "C": c, "threshold": thr, "cv_all": s_all, "cv_at_threshold": s_thr}
            if best is None or s_thr["coarse_accuracy"] > best["cv_at_threshold"]["coarse_accuracy"]:
                best = cand
    best.update(x=design(f, best["kind"])[keep], y=y, classes=classes, n=int(keep.sum()))
    return best


def with_extra(f: dict, rows: list[dict], g: dict, extra: list[dict]) -> tuple[dict, list[dict]]:
    """Features and rows of the colour-and-viewpoint labels followed by those of one attribute only."""
    seen = {r["file"] for r in rows}
    dup = [r["file"] for r in extra if r["file"] in seen]
    if dup:
        sys.exit(f"{len(dup)} photos are labelled twice ({dup[0]}): keep each photo in one label file")
    return ({k: np.concatenate([f[k], g[k]]) for k in f if k != "files" and k in g},
            rows + [{"colour": "", "viewpoint": "", **r} for r in extra])


def read_extra(rec, paths: list[str], field: str, a) -> tuple[list[dict], dict | None]:
    """Rows labelled for ``field`` only (``none`` read as no label) and their features."""
    extra = [r for path in paths for r in read_labels(path, a.train_channels)]
    for r in extra:
        if r[field] == "none":
            r[field] = ""
    return extra, (features(rec, extra, Path(a.data), Path(a.cache) if a.cache else None, a.views) if extra else None)


def choose_viewpoint(f: dict, rows: list[dict]) -> dict:
    keep = np.array([bool(r["viewpoint"]) for r in rows])
    y = np.array([r["viewpoint"] for r in rows])[keep]
    classes = [v for v in VIEWPOINTS if v in set(y)]
    best = None
    for kind, flip in [(k, m) for k, m in VIEW_KINDS if all(p in f for p in k.split("+"))]:
        x = design(f, kind)[keep]
        aug = design(f, kind, flip=True)[keep] if flip else None
        for c, dims in ((c, d) for d in VIEW_PCA for c in VIEW_C):
            s = scores(y, oof_proba(x, y, c, classes, x_aug=aug, dims=dims), classes)
            print(f"viewpoint {kind:10s} mirror={flip!s:5s} C={c:<5} pca={dims:<4} accuracy {s['accuracy']:.3f}",
                  flush=True)
            cand = {"kind": kind, "mirror": flip, "C": c, "pca": dims, "cv": s}
            if best is None or s["accuracy"] > best["cv"]["accuracy"]:
                best = cand
    x = design(f, best["kind"])[keep]
    if best["mirror"]:
        x, y = np.concatenate([x, design(f, best["kind"], flip=True)[keep]]), np.concatenate([y, y])
    best.update(x=x, y=y, classes=classes, n=int(keep.sum()))
    return best


def head_of(choice: dict, threshold: float, info: dict) -> LinearHead:
    lr, mean, scale = fit_lr(choice["x"], choice["y"], choice["C"], choice.get("pca", PCA_DIMS))
    classes = list(lr.classes_)
    a = fit_arrays(classes, mean, scale, lr.coef_, lr.intercept_)
    return LinearHead(classes, a["mean"], a["scale"], a["weight"], a["bias"], threshold, info)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", default="benchmarks/labels/attributes_train.csv")
    p.add_argument("--data", default="../shared/data/stanford_cars")
    p.add_argument("--model", default="default")
    p.add_argument("--viewpoint-labels", nargs="*", default=["benchmarks/labels/viewpoint_train.csv",
                                                             "benchmarks/labels/viewpoint_train_rare.csv"],
                   help="train photos labelled for viewpoint only (file,viewpoint; 'none' or empty: unsure)")
    p.add_argument("--colour-labels", nargs="*", default=["benchmarks/labels/colour_train.csv"],
                   help="train photos labelled for colour only (file,colour,swapped; 'none' or empty: unsure)")
    p.add_argument("--train-channels", choices=("bgr", "rgb"), default="bgr",
                   help="how the train photos are stored: 'bgr' (the Stanford Cars train split in ../shared has red "
                        "and blue swapped, docs/attributes.md) swaps every photo back before anything is computed")
    p.add_argument("--views", choices=("real-input", "tight"), default="real-input",
                   help="fit on each train photo made to look like what the product is given (train/realinput.py: "
                        "the calibration's recipe; a threshold fitted on tight crops answered fewer dev photos) "
                        "or on the tight crops as stored")
    p.add_argument("--cache", default=None, help="folder for the features (recomputed when absent)")
    p.add_argument("--coverage-margin", type=float, default=0.02)
    p.add_argument("--out", default=None, help="model folder to write the heads into (default: only report)")
    a = p.parse_args()
    import vericar

    if any(s in path for path in (a.labels, *a.viewpoint_labels, *a.colour_labels) for s in ("dev", "test")):
        sys.exit("refusing to fit on dev/test labels: fit on train labels only")
    rec = vericar.load(a.model, attributes=False)
    if (a.train_channels == "bgr") != (rec.meta.get(TRAIN_CHANNELS) == "bgr"):
        sys.exit(f"--train-channels {a.train_channels} needs a network that takes the train photos "
                 + ("put right: run train/fix_channels.py on it first." if a.train_channels == "bgr" else
                    "as stored, but train/fix_channels.py ran on it (or give --train-channels bgr)."))
    rows = read_labels(a.labels, a.train_channels)
    f = features(rec, rows, Path(a.data), Path(a.cache) if a.cache else None, a.views)
    (fc, crows), (fv, vrows) = [with_extra(f, rows, g, extra) if extra else (f, rows)
                                for extra, g in (read_extra(rec, a.colour_labels, "colour", a),
                                                 read_extra(rec, a.viewpoint_labels, "viewpoint", a))]
    col, vp = choose_colour(fc, crows, a.coverage_margin), choose_viewpoint(fv, vrows)
    common = {"labels": a.labels, "views": a.views, "command": " ".join(["python", "benchmarks/attributes_fit.py", *sys.argv[1:]])}
    colour = head_of(col, col["threshold"], {**common, "colour_labels": a.colour_labels, "features": col["kind"],
                                             "C": col["C"], "n": col["n"], "cv_all": col["cv_all"],
                                             "cv_at_threshold": col["cv_at_threshold"]})
    view = head_of(vp, 0.0, {**common, "viewpoint_labels": a.viewpoint_labels, "features": vp["kind"],
                              "mirror": vp["mirror"], "C": vp["C"], "pca": vp["pca"], "n": vp["n"],
                              "cv": vp["cv"]})
    print(json.dumps({"colour": colour.info, "viewpoint": view.info}, indent=1))
    if a.out:
        Attributes(colour, view).save(a.out)
        print(f"wrote the heads into {a.out}")


if __name__ == "__main__":
    main()
