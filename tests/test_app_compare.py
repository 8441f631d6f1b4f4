"""/compare through the real app (gradio_client) and as an MCP tool: a good pair, and bad inputs
answered as /identify answers them (a photo missing, not an image, no vehicle in one)."""
from __future__ import annotations

import json

import pytest
from gradio_client import handle_file

from test_app import _launch, app_module, artifact, make_artifact  # noqa: F401  (fixtures)
from test_compare import calibration, with_compare
from test_detect import SSD, _real_photos, street
from vericar.artifacts import hub
from vericar.ui.present import prediction_dict


@pytest.fixture(scope="module")
def served(app_module, tmp_path_factory):  # noqa: F811
    """The tiny model with a comparison, the real vehicle detector, the MCP server on; real dev photos."""
    tmp = tmp_path_factory.mktemp("compare")
    artifact = with_compare(make_artifact(tmp / "model"), calibration())
    photos = {}
    for i, p in enumerate(_real_photos(2)):  # skips where ../shared/data/stanford_cars is not here
        photos[f"car{i}"] = str(tmp / f"car{i}.jpg")
        p.save(photos[f"car{i}"], quality=92)
    photos["street"] = str(tmp / "street.png")
    street().save(photos["street"])
    photos["text"] = str(tmp / "notes.jpg")
    (tmp / "notes.jpg").write_text("not a photo")
    mp = pytest.MonkeyPatch()
    mp.setenv("VERICAR_MCP", "1")
    app, client = _launch(app_module, artifact, tmp / "data", rec=hub.load(f"local-dir:{artifact}", detector=SSD))
    mp.undo()
    yield app, client, photos
    app.demo.close()


def test_compare_a_good_pair(served):
    app, client, photos = served
    out = client.predict(handle_file(photos["car0"]), handle_file(photos["car1"]), api_name="/compare")
    json.dumps(out, allow_nan=False)
    assert {"same_model", "probability", "same_make", "same_type", "threshold", "a", "b"} <= set(out)
    assert out["same_model"] in (True, False, None) and 0.0 <= out["probability"] <= 1.0
    rec = app.store.rec
    want = rec.compare(photos["car0"], photos["car1"])
    assert out["probability"] == pytest.approx(want.probability, abs=1e-6) and out["same_model"] == want.same_model
    for side, path in (("a", photos["car0"]), ("b", photos["car1"])):
        assert len(out[side]["box"]) == 4 and out[side]["label"] == prediction_dict(rec.predict(path))["label"]
        assert {"make", "model", "type", "year", "confidence", "unknown", "neighbours"} <= set(out[side])


@pytest.mark.parametrize("inputs, message", [
    (("car0", None), "Photo B is missing"),
    ((None, "car1"), "Photo A is missing"),
    (("car0", "text"), "notes.jpg"),
    (("car0", "street"), "No vehicle was found in photo B"),
])
def test_compare_bad_inputs_say_what_is_wrong(served, inputs, message):
    app, client, photos = served
    rec = app.store.rec
    threshold, rec.ood.threshold = rec.ood.threshold, -1.0  # the street does not look like a known vehicle
    try:
        with pytest.raises(Exception) as e:
            client.predict(*[handle_file(photos[k]) if k else None for k in inputs], api_name="/compare")
    finally:
        rec.ood.threshold = threshold
    assert message in str(e.value) and "/tmp" not in str(e.value)


def test_compare_is_an_mcp_tool(served):
    from test_mcp import data_url, mcp_calls

    app, _, photos = served
    tools, out = mcp_calls(app.demo.local_url, [
        ("compare", {"image_a": data_url(photos["car0"]), "image_b": data_url(photos["car1"])})])
    assert "compare" in tools
    (error, text), = out
    assert not error and "probability" in text and "same_model" in text
