"""VERICAR_MCP=1: the app also serves Gradio's MCP server; driven here with the real mcp SDK."""
from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest

from test_app import BASE, NEW, _launch, _photos, app_module, artifact, vehicle_photo  # noqa: F401 (fixtures)

pytest.importorskip("mcp", reason="the gradio[mcp] extra is not installed")
from mcp import ClientSession  # noqa: E402
try:  # mcp >= 1.2x; the older name is deprecated there
    from mcp.client.streamable_http import streamable_http_client  # noqa: E402
except ImportError:  # pragma: no cover - older mcp
    from mcp.client.streamable_http import streamablehttp_client as streamable_http_client  # noqa: E402

TOKEN = "correct horse battery staple"


def mcp_calls(url: str, calls: list[tuple[str, dict]]) -> tuple[list[str], list[tuple[bool, str]]]:
    """(the tool names, (is_error, text) of each call) over one MCP session with the app at ``url``."""

    async def run() -> tuple[list[str], list[tuple[bool, str]]]:
        async with streamable_http_client(url.rstrip("/") + "/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = [t.name for t in (await session.list_tools()).tools]
                out = []
                for name, arguments in calls:
                    res = await session.call_tool(name, arguments)
                    out.append((bool(res.isError), " ".join(getattr(c, "text", "") for c in res.content)))
                return tools, out

    return asyncio.run(run())


def upload(url: str, path: str) -> str:
    """``path`` uploaded to the app; the http URL it is served at (what `upload_file_to_gradio` returns)."""
    with open(path, "rb") as f:
        r = httpx.post(url.rstrip("/") + "/gradio_api/upload", files=[("files", (Path(path).name, f))], timeout=30)
    r.raise_for_status()
    return url.rstrip("/") + "/gradio_api/file=" + r.json()[0]


def data_url(path: str) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def test_mcp_tools_and_enroll(app_module, artifact, tmp_path, monkeypatch):  # noqa: F811
    """The tool schemas hold no dangling $ref (the MCP server checks every call against them), a list of
    photos as data: URLs really enrolls, and http URLs in a list are refused, never fetched."""
    monkeypatch.setenv("VERICAR_MCP", "1")
    assert app_module.launch_options()["mcp_server"] is True
    app, _ = _launch(app_module, artifact, tmp_path / "data")
    url = app.demo.local_url
    paths = _photos(tmp_path, 501, 3, "m")
    try:
        schema = httpx.get(url.rstrip("/") + "/gradio_api/mcp/schema", timeout=30).json()
        urls = [upload(url, p) for p in paths]
        tools, out = mcp_calls(url, [
            ("enroll", {"images": [data_url(p) for p in paths[:2]], "label": NEW}),
            ("identify", {"image": data_url(paths[2])}), ("remove", {"label": NEW}),
            ("enroll", {"images": [data_url(p) for p in paths], "label": NEW}),
            ("enroll", {"images": ["/etc/passwd"], "label": "Pathmake Car Sedan 2020"}),
            ("enroll", {"images": urls[:1], "label": "Urlmake Car Sedan 2020"}),
        ])
        assert app.store.summary() == [(NEW, 3)]  # the second data: URL enrolment stayed
    finally:
        app.demo.close()
    names = {t["name"] for t in schema}
    assert {"identify", "similar", "explain", "enroll", "remove"} <= names and "$ref" not in json.dumps(schema)
    assert set(tools) >= {"identify", "enroll"} and not any("admin" in t for t in tools)
    images = next(t for t in schema if t["name"] == "enroll")["inputSchema"]["properties"]["images"]
    assert images["type"] == "array" and images["items"]["type"] == "string" and "url" in images["items"]["format"]
    (e1, added), (e2, found), (e3, removed), (e4, again), (e5, path), (e6, url_item) = out
    assert not (e1 or e2 or e3 or e4), out
    assert "'added': 2" in added and NEW in found and "'removed': 2" in removed and "'added': 3" in again
    # the identify tool carries what the vehicle looks like (None here: the tiny model has no attribute heads)
    assert all(f"'{k}':" in found for k in ("colour", "colour_confidence", "viewpoint", "viewpoint_confidence", "plate"))
    assert e5 and "`images` must be a list of files" in path and "'/etc/passwd'" in path
    assert e6 and "data: URLs" in url_item and "http" in url_item
    monkeypatch.delenv("VERICAR_MCP")
    assert "mcp_server" not in app_module.launch_options()


def test_public_mcp_agents_cannot_add_or_remove(app_module, artifact, tmp_path, monkeypatch):  # noqa: F811
    """Gradio's MCP bridge sends every agent's calls through one gradio_client session: on the public
    demo they may read, never add or remove (another agent would see and remove them)."""
    from gradio_client import Client, handle_file

    from vericar.ui.handlers import MCP_SHARED

    for name, value in (("VERICAR_MCP", "1"), ("VERICAR_PUBLIC", "1"), ("VERICAR_ADMIN_TOKEN", TOKEN)):
        monkeypatch.setenv(name, value)
    app, _ = _launch(app_module, artifact, tmp_path / "data")
    url = app.demo.local_url
    vehicle_photo(0, 1).save(tmp_path / "known.png")  # one of BASE[0]'s gallery photos
    paths = [str(tmp_path / "known.png")] + _photos(tmp_path, 502, 2, "new")
    try:
        tools, out = mcp_calls(url, [
            ("enroll", {"images": [data_url(p) for p in paths[1:]], "label": NEW}), ("remove", {"label": NEW}),
            ("identify", {"image": data_url(paths[0])}), ("similar", {"image": data_url(paths[0]), "k": 3}),
            ("enroll", {"images": [upload(url, paths[1])], "label": NEW}),  # an http URL in a list: never fetched
        ])
        client = Client(url, verbose=False)  # gradio_client: a session of its own, so it may add
        added = client.predict([handle_file(p) for p in paths[1:]], NEW, api_name="/enroll")
        # The admin endpoints are hidden from the API page and the tools, yet callable by gradio_client.
        shared = client.predict(TOKEN, [handle_file(paths[1])], "Shared Car Sedan 2022", api_name="/admin_enroll")
        info = httpx.get(url.rstrip("/") + "/gradio_api/info", timeout=30).json()["named_endpoints"]
    finally:
        app.demo.close()
    assert not any("admin" in t for t in tools) and not any("admin" in e for e in info)
    (e1, enrolled), (e2, removed), (e3, found), (e4, similar), (e5, fetched) = out
    assert e1 and e2 and enrolled == removed == MCP_SHARED
    assert "gradio_client" in MCP_SHARED and "python app.py" in MCP_SHARED
    assert not e3 and not e4 and BASE[0] in found and BASE[0] in similar
    assert e5 and "`images` must be a list of files" in fetched and "data: URLs" in fetched
    assert added["enrolled"] == [NEW] and shared["added"] == 1
