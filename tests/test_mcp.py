"""VERICAR_MCP=1: the app also serves Gradio's MCP server, whose tools include identify and similar."""
from __future__ import annotations

import httpx
import pytest

from test_app import _launch, app_module, artifact  # noqa: F401 (fixtures)

pytest.importorskip("mcp", reason="the gradio[mcp] extra is not installed")


def test_mcp_tools_listed(app_module, artifact, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VERICAR_MCP", "1")
    assert app_module.launch_options()["mcp_server"] is True
    app, _ = _launch(app_module, artifact, tmp_path / "data")
    try:
        schema = httpx.get(app.demo.local_url.rstrip("/") + "/gradio_api/mcp/schema", timeout=30).json()
    finally:
        app.demo.close()
    names = {t["name"] for t in schema}
    assert any(n.endswith("identify") for n in names) and any(n.endswith("similar") for n in names), names
    monkeypatch.delenv("VERICAR_MCP")
    assert "mcp_server" not in app_module.launch_options()
