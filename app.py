"""vericar demo: identify a vehicle, add new ones without retraining, read the model card.

    python app.py [--model SPEC] [--data-dir DIR] [--gallery-images DIR] [--detector SPEC] [--plates read|blur|off]
    gradio app.py -- [same options]        # reloads on edits; or a Hugging Face Space

Every option has an environment variable (vericar.ui.webui.AppSettings): $VERICAR_MODEL ("default",
"local-dir:PATH", "hf-hub:ORG/NAME"), $VERICAR_DETECTOR (default: the model's; see vericar/vision/detect.py),
$VERICAR_DATA_DIR (enrolled vehicles; default ~/.cache/vericar), $VERICAR_GALLERY_IMAGES,
$VERICAR_PLATES (read | blur | off; default blur on a public demo, read locally: docs/plates.md),
$VERICAR_CONCURRENCY (model calls at once across all events, default 2), $VERICAR_MAX_UPLOAD (default
25mb), $VERICAR_PUBLIC=1 (the default on a Space: each visitor's vehicles stay in their session,
vericar.ui.visitors), $VERICAR_MCP=1 (also serve Gradio's MCP server; in public mode its agents
may not add or remove vehicles, vericar.ui.handlers.MCP_SHARED). GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT are honoured by ``launch()``. API (gradio_client): /identify, /similar, /explain,
/compare, /enroll, /remove; public mode also /admin_enroll, /admin_remove (undocumented). Uploads and the
files written for an answer are removed once no request or open page uses them; an API answer's
files stay $VERICAR_DELIVERY_S (30) s to be fetched (vericar.ui.tempfiles).

Run as a script, ``demo`` is built from the options and the environment, then launched; imported,
from the environment (a page saying why, if the model or the data folder cannot be used);
``create_app(...)`` builds one from arguments. The app itself is vericar.ui.app (``vericar serve`` runs
the same); this file is its entry point for ``python app.py``, ``gradio app.py`` and a Space.
"""
from __future__ import annotations

import sys

from vericar.core.errors import VericarError
from vericar.ui.app import (ERROR_TITLE, AppSettings, VericarApp, build_app, create_app, error_demo,
                            from_command_line, launch_options, load_demo)

__all__ = ["ERROR_TITLE", "AppSettings", "VericarApp", "build_app", "create_app", "demo", "error_demo",
           "launch_options"]

# `demo` at module level in both cases: `gradio app.py` (reload mode) runs this file as __main__ and
# looks `demo` up there after each reload.
if __name__ == "__main__":
    # `gradio app.py` runs this file again, in this process, after each edit: the page is rebuilt over the
    # model and store already loaded (the store holds the data dir; a second one there is refused).
    previous = globals().get("served")
    try:
        served = (from_command_line() if previous is None
                  else build_app(previous.store.rec, previous.settings, store=previous.store))
    except VericarError as e:
        sys.exit(f"error: {e}")
    demo = served.demo
    served.launch()  # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by gradio itself
else:  # importers (tests, Python callers) get the app configured by the environment
    demo = load_demo()
