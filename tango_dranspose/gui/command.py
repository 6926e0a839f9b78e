"""``tango-dranspose gui``: the Taurus GUI of a running pipeline."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _error(text: str) -> int:
    print(f"tango-dranspose gui: error: {text}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_gui(args: argparse.Namespace) -> int:
    from tango_dranspose.gui.pipeline import ENV_PIPELINE, ENV_TANGO_HOST, GuiError, resolve

    tango_host = args.tango_host or os.environ.get(ENV_TANGO_HOST)
    try:
        pipeline = resolve(tango_host, args.pipeline)
    except GuiError as exc:
        return _error(str(exc))
    config = Path(args.config) if args.config else None
    if config is not None and not config.is_file():
        return _error(f"no TaurusGui config file {config}")
    shot = Path(args.screenshot) if args.screenshot else None
    # The config module finds the pipeline again from these (in this process).
    os.environ[ENV_TANGO_HOST] = pipeline.tango_host
    os.environ[ENV_PIPELINE] = pipeline.name
    if shot is not None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QT_API", "pyqt5")
    try:
        from tango_dranspose.gui import app
    except ImportError as exc:
        return _error(f"the GUI needs Taurus and PyQt5 ({exc}): pip install 'tango-dranspose[gui]'")
    if config is None:
        config = app.CONFIG
        if not config.is_file():
            return _error(
                f"{config} is missing (it ships with the repository); pass --config FILE.py"
            )
    return app.run(config, shot, args.timeout)


def add_gui_parser(sub: Any) -> None:
    gp = sub.add_parser(
        "gui",
        help="open the Taurus GUI of a running pipeline",
        description="Open a TaurusGui on a pipeline registered in the Tango DB: the "
        "controller's state, progress and ledger, one row per ingester, worker and reducer, "
        "the controller's parameters as a form, and live plots of the reducer's published "
        "values. Exit status: 0 ok, 1 the GUI failed (or, with --screenshot, values were "
        "missing), 2 no Tango DB, DB unreachable, or no such pipeline.",
    )
    gp.add_argument(
        "--pipeline",
        metavar="NAME",
        help="the devices' Pipeline property (default: the only pipeline in the DB)",
    )
    gp.add_argument("--tango-host", metavar="HOST:PORT", help="default: $TANGO_HOST")
    gp.add_argument(
        "--screenshot",
        metavar="FILE.png",
        help="render offscreen, wait until live values arrived, save a PNG and exit",
    )
    gp.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with --screenshot: longest wait for live values (default 30)",
    )
    gp.add_argument(
        "--config",
        metavar="FILE.py",
        help="a TaurusGui config module (default: taurus_gui/config.py of this repository)",
    )
    gp.set_defaults(func=cmd_gui)
