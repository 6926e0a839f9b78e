"""The ``demo`` (Tango suite) and ``register`` commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tango_dranspose.deploy.registration import (
    BadConfigFile,
    RegistrationError,
    load_config,
    register,
)


def cmd_register(args: argparse.Namespace) -> int:
    try:
        load_config(Path(args.file))  # the file's mistakes first: they need no DB to find
    except BadConfigFile as exc:
        print(f"tango-dranspose register: error: {exc}", file=sys.stderr)
        return 2
    tango_host = args.tango_host or os.environ.get("TANGO_HOST")
    if not tango_host:
        print(
            "tango-dranspose register: error: no Tango DB: set TANGO_HOST or pass --tango-host",
            file=sys.stderr,
        )
        return 2
    try:
        result = register(
            Path(args.file),
            tango_host,
            apply=not args.dry_run,
            update=args.update,
            colors=sys.stdout.isatty(),
        )
    except BadConfigFile as exc:
        print(f"tango-dranspose register: error: {exc}", file=sys.stderr)
        return 2
    except RegistrationError as exc:
        print(f"tango-dranspose register: error: {exc}", file=sys.stderr)
        return 1
    print(result.diff)
    if not result.changed:
        print(f"{args.file}: the Tango DB at {tango_host} already matches")
    elif result.applied:
        print(f"{args.file}: applied to the Tango DB at {tango_host}")
    else:
        print(f"{args.file}: dry run, nothing written (run without --dry-run to apply)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tango_dranspose.deploy.demo import run_demo

    return run_demo(
        Path(args.state_dir) if args.state_dir else None,
        frames=args.frames,
        keep=args.keep,
        config=Path(args.config) if args.config else None,
    )


def add_register_parser(sub: Any) -> None:
    rp = sub.add_parser(
        "register",
        help="register a deployment (dsconfig JSON) in the Tango DB: show the diff, apply it",
        description="Compare a dsconfig JSON file (see tango-db/) with the Tango DB of "
        "TANGO_HOST, print the differences and write them (dsconfig's json2tango). Without "
        "--update, properties of the file's devices that the file does not name are removed. "
        "Exit status: 0 applied or nothing to change (or a dry run), 1 dsconfig failed, "
        "2 bad file or no TANGO_HOST.",
    )
    rp.add_argument("file", metavar="FILE.json", help="dsconfig JSON, e.g. tango-db/demo.json")
    rp.add_argument("--dry-run", action="store_true", help="only show the differences")
    rp.add_argument(
        "--update", action="store_true", help="only add and change, never remove properties"
    )
    rp.add_argument("--tango-host", metavar="HOST:PORT", help="default: $TANGO_HOST")
    rp.set_defaults(func=cmd_register)


def add_demo_parser(sub: Any, local_demo: Any) -> None:
    dp = sub.add_parser(
        "demo",
        help="see it work: Tango DB, device servers, a simulated camera, one scan, the result",
        description="Start an embedded Tango DB (pytango-db, sqlite), register the demo "
        "deployment (tango-db/demo.json), start the controller, ingester, two workers and "
        "reducer as device servers and a simulated STINS camera, arm a scan through the "
        "controller device, show its progress and the reduced result, and shut everything "
        "down. With --local: replay a synthetic scan in one process instead (no Tango).",
    )
    dp.add_argument("--frames", type=int, default=200, help="frames in the scan (default 200)")
    dp.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the Tango DB, logs and results here (default: a temporary directory)",
    )
    dp.add_argument(
        "--keep",
        action="store_true",
        help="leave everything running after the scan and print the TANGO_HOST (Ctrl-C stops)",
    )
    dp.add_argument(
        "--config",
        metavar="FILE.json",
        help="a variant of tango-db/demo.json with the same device names (the default)",
    )
    dp.add_argument(
        "--local", action="store_true", help="replay through the ROI example in one process"
    )

    def dispatch(args: argparse.Namespace) -> int:
        if args.local:
            code: int = local_demo(args)
            return code
        return cmd_demo(args)

    dp.set_defaults(func=dispatch)
