"""The ``vericar`` command (also ``python -m vericar``):

    vericar identify PATH... --out results.csv|.jsonl|.parquet [--all-vehicles] [--engine ray [--address ADDR]]
    vericar enroll PHOTO... --label "Make Model Type Year" [--data-dir DIR]
    vericar remove LABEL [--data-dir DIR]
    vericar serve [app options]        # the Gradio app (vericar.ui.app; the same as python app.py [options])
    vericar evaluate [options]         # python -m vericar.evaluate [options]

``enroll`` / ``remove`` change the app's own store of added vehicles (vericar.ui.enrolled: the same data
dir, $VERICAR_DATA_DIR or ~/.cache/vericar, and the same lock, so they are refused while an app of that
model runs on it); ``identify`` answers with them, as the app does. Errors are one line saying what to do.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from vericar.core.errors import VericarError

COMMANDS = ("identify", "enroll", "remove", "serve", "evaluate")


def _model_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=os.environ.get("VERICAR_MODEL") or "default",
                    help="model spec: default, local-dir:PATH, hf-hub:ORG/NAME (default $VERICAR_MODEL or 'default')")
    ap.add_argument("--detector", default=os.environ.get("VERICAR_DETECTOR") or None,
                    help="vehicle detector: 'opencv-ssd:mobilenet_v2_coco', 'hf-hub:ORG/NAME' or 'none' "
                         "(default $VERICAR_DETECTOR or the model's own)")
    ap.add_argument("--data-dir", default=None, help="the app's folder of added vehicles (default "
                    "$VERICAR_DATA_DIR or ~/.cache/vericar)")


def parser() -> argparse.ArgumentParser:
    """The command's argument parser (``serve`` and ``evaluate`` pass their options on untouched)."""
    ap = argparse.ArgumentParser(prog="vericar", description="Open-world vehicle recognition from the command line.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    idf = sub.add_parser("identify", help="identify every photo of files, folders or CSVs into a table",
                         description="One row per photo (or per vehicle) with the app's /identify answer; "
                                     "re-run the same command to resume. See docs/batch.md.")
    idf.add_argument("paths", nargs="+", metavar="PATH", help="photo files, folders (searched recursively for "
                     "images) or CSVs with a 'file' column")
    idf.add_argument("--out", required=True, help="results.csv, results.jsonl or results.parquet (a folder of "
                     "parts); an existing one is resumed: photos already in it are skipped")
    _model_options(idf)
    idf.add_argument("--all-vehicles", action="store_true", help="one row per vehicle (every vehicle the "
                     "detector finds, largest first) instead of one per photo (its main vehicle)")
    idf.add_argument("--max-vehicles", type=int, default=10, help="with --all-vehicles: at most this many per "
                     "photo (default 10)")
    idf.add_argument("--batch-size", type=int, default=16, help="photos per batch (default 16)")
    idf.add_argument("--workers", type=int, default=None, help="plain engine: threads opening the next batch's "
                     "photos (default 1; 0: none); Ray: actors, each with its own model (default one per CPU)")
    idf.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray: Ray "
                     "Data, on this machine or the cluster at --address (pip install \"vericar[ray]\")")
    idf.add_argument("--address", default=None, help="with --engine ray: a running cluster (ray://HEAD:10001, "
                     "HEAD:6379 or auto); default: start Ray on this machine")
    idf.add_argument("--quiet", action="store_true", help="no progress bar (none either when stdout is not a "
                     "terminal)")
    enr = sub.add_parser("enroll", help="add a vehicle from a few photos (no retraining), as the app's Add tab")
    enr.add_argument("photos", nargs="+", metavar="PHOTO", help="2-10 photos of the vehicle work best (at most 32)")
    enr.add_argument("--label", required=True, help='its name, e.g. "Tesla Model 3 Sedan 2021"')
    _model_options(enr)
    rem = sub.add_parser("remove", help="remove a vehicle added with enroll or the app")
    rem.add_argument("label", metavar="LABEL")
    _model_options(rem)
    sub.add_parser("serve", help="run the app (python app.py; its options: vericar serve --help)", add_help=False)
    sub.add_parser("evaluate", help="evaluate on labelled photos (python -m vericar.evaluate; vericar evaluate "
                   "--help)", add_help=False)
    return ap


def _store(args: argparse.Namespace):  # noqa: ANN202 - an EnrolledStore; imported late (torch, faiss)
    """The app's store of added vehicles for ``--model`` in ``--data-dir`` (holds its lock until closed)."""
    from vericar.artifacts.hub import load
    from vericar.ui.enrolled import EnrolledStore, default_data_dir

    rec = load(args.model, **({"detector": args.detector} if args.detector else {}))
    return EnrolledStore(rec, Path(args.data_dir) if args.data_dir else default_data_dir())


def _identify(args: argparse.Namespace) -> None:
    from vericar.batch.run import identify

    stats = identify(args.paths, args.out, model=args.model, detector=args.detector, data_dir=args.data_dir,
                     engine=args.engine, address=args.address, batch_size=args.batch_size, workers=args.workers,
                     all_vehicles=args.all_vehicles, max_vehicles=args.max_vehicles,
                     progress=not args.quiet and sys.stdout.isatty())
    print(stats.summary(args.out))


def _serve(argv: Sequence[str]) -> None:
    """Serve the Gradio app (vericar.ui.app, the same as ``python app.py``) with ``argv`` as its options."""
    from vericar.ui.app import main as serve

    serve(argv, prog="vericar serve")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``vericar`` console script; exits 1 with one line on a usage error of vericar's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "serve":
            return _serve(argv[1:])
        if argv and argv[0] == "evaluate":
            from vericar.evaluate import main as evaluate

            evaluate(argv[1:])
            return None
        args = parser().parse_args(argv)
        from vericar._infra.runtime import tune_malloc

        tune_malloc()  # ~2x faster CPU embedding (vericar/_infra/runtime.py)
        if args.command == "identify":
            _identify(args)
        elif args.command == "enroll":
            with _store(args) as store:
                r = store.enroll(args.photos, args.label)
            print(f"added {r['label']!r} from {r['added']} photos; added vehicles now: {', '.join(r['enrolled'])}")
        else:
            with _store(args) as store:
                r = store.remove(args.label)
            print(f"removed {r['label']!r} ({r['removed']} photos); added vehicles left: "
                  f"{', '.join(r['enrolled']) or 'none'}")
    except VericarError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # the file system said no (permissions, a full disk): one line, not a traceback
        sys.exit(f"error: {e}; check the paths and that --out's folder can be written to.")
    except KeyboardInterrupt:
        sys.exit("interrupted: the rows written so far are kept; run the same command again to go on.")
    return None
