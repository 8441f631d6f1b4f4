"""app.py's settings come from arguments and the environment, never from sys.argv at import."""
from __future__ import annotations

import importlib
import sys

import gradio as gr
import pytest

from test_app import artifact  # noqa: F401 (fixture)
from vericar.core.errors import VericarError
from vericar.ui.webui import AppSettings


def test_settings_from_env_and_arguments():
    env = {"VERICAR_MODEL": "hf-hub:org/cars", "VERICAR_PUBLIC": "1", "VERICAR_WRITE_RATE": "8/60",
           "VERICAR_MCP": "yes", "VERICAR_CONCURRENCY": "3", "VERICAR_DELIVERY_S": "5"}
    s = AppSettings.from_env(env)
    assert (s.model, s.public, s.write_rate, s.mcp, s.concurrency, s.delivery_s) == (
        "hf-hub:org/cars", True, (8, 60.0), True, 3, 5.0)
    s = AppSettings.from_env(env, model="default", data_dir=None, concurrency=1)  # arguments win; None does not
    assert (s.model, s.data_dir, s.concurrency) == ("default", None, 1)
    assert AppSettings.from_env({}) == AppSettings()
    assert AppSettings.from_env({"SYSTEM": "spaces"}).public  # a Space is public unless told otherwise
    assert not AppSettings.from_env({"SYSTEM": "spaces", "VERICAR_PUBLIC": "0"}).public
    with pytest.raises(VericarError, match="N/SECONDS"):
        AppSettings.from_env({"VERICAR_READ_RATE": "often"})


def test_import_reads_the_environment_not_argv(artifact, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{artifact}")
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "argv", ["gradio", "--model", f"local-dir:{tmp_path / 'nothing'}"])
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app = importlib.import_module("app")
    assert isinstance(app.demo, gr.Blocks) and app.demo.title != app.ERROR_TITLE
    assert not hasattr(app.demo, "vericar_store") and not hasattr(app.demo, "vericar_vehicles")
    built = app.create_app(data_dir=tmp_path / "other", concurrency=1)  # the rest from the environment
    assert built.settings.model == f"local-dir:{artifact}" and built.store.dir.is_relative_to(tmp_path / "other")
    assert {f.concurrency_limit for f in built.demo.fns.values() if f.concurrency_id == "model"} == {1}
    monkeypatch.setenv("VERICAR_MODEL", f"local-dir:{tmp_path / 'nothing'}")
    monkeypatch.delitem(sys.modules, "app")
    assert importlib.import_module("app").demo.title == app.ERROR_TITLE  # a model that cannot load: a page
