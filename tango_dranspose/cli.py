"""The ``tango-dranspose`` command."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tango_dranspose import __version__
from tango_dranspose.core.capture import CaptureError
from tango_dranspose.core.parameters import ParameterError, load_parameter_file
from tango_dranspose.core.payload import PayloadError
from tango_dranspose.core.triggermap import TriggerMap, TriggerMapError
from tango_dranspose.runtime.replay import ReplayConfig, ReplaySummary, run_replay
from tango_dranspose.runtime.scheduler import ArmError
from tango_dranspose.runtime.serve import ConfigError

EXIT_OK, EXIT_PAYLOAD_ERRORS, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Input the user must fix; printed as one line, without a traceback."""


def _load_map(path: str, no_wrap: bool) -> TriggerMap:
    try:
        # Bytes: from_json decodes them, so a binary file is "not valid JSON", not a traceback.
        text = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the trigger map {path}: {exc.strerror}") from None
    try:
        return TriggerMap.from_json(text, wrap=False if no_wrap else None)
    except TriggerMapError as exc:
        raise UsageError(f"invalid trigger map {path}: {exc}") from None


def _print_summary(s: ReplaySummary, out: TextIO | None = None) -> None:
    def p(text: str) -> None:
        print(text, file=out or sys.stdout)

    p(f"events      {s.events}")
    p(f"results     {s.results}")
    p(f"errors      {s.failure_count}")
    p(f"time        {s.elapsed:.3f} s ({s.rate:,.0f} events/s)")
    if s.streams:
        p("streams     name: delivered / discarded / missing / unused / dropped")
        for name, led in sorted(s.streams.items()):
            p(
                f"            {name}: {led.delivered} / {led.discarded} / {led.missing} / "
                f"{led.unused} / {led.dropped}"
            )
    for reason, n in s.drop_reasons.items():
        p(f"dropped     {n} x {reason}")
    for warning in s.warnings:
        p(f"warning     {warning}")
    if s.unknown_parameters:
        p(f"note        parameters no payload describes: {', '.join(s.unknown_parameters)}")
    for f in s.failures[:5]:
        p(f"failure     {f.where} (event {f.event_number}): {f.error}")
    if s.failure_count > len(s.failures[:5]):
        p(f"            ... {s.failure_count - len(s.failures[:5])} more (tracebacks in the log)")
    if s.output:
        p(f"output      {s.output}")
    for name in s.skipped_in_output:
        p(f"not written {name}")


def cmd_replay(args: argparse.Namespace) -> int:
    params: dict[str, bytes] = {}
    if args.parameters:
        try:
            params = load_parameter_file(args.parameters, trust_pickle=args.trust_pickle)
        except ParameterError as exc:
            raise UsageError(str(exc)) from None
    if not args.files and not args.source:
        raise UsageError("nothing to replay: give capture or HDF5 files (-f) or a --source")
    if args.loop < 1:
        raise UsageError(f"--loop must be at least 1, got {args.loop}")
    tmap = _load_map(args.map, args.no_wrap) if args.map else None
    cfg = ReplayConfig(
        worker=args.worker,
        reducer=args.reducer,
        captures=args.files or [],
        parameters=params,
        trigger_map=tmap,
        workers=args.workers,
        output=Path(args.output) if args.output else None,
        search=[Path(p) for p in args.payload_path] or [Path.cwd()],
        trust_pickle=args.trust_pickle,
        source=args.source,
        loop=args.loop,
    )
    summary = run_replay(cfg)
    _print_summary(summary)
    if args.print_result:
        from tango_dranspose.core.treeview import describe_tree

        print(describe_tree(summary.publish))
    return EXIT_OK if summary.ok else EXIT_PAYLOAD_ERRORS


def cmd_demo(args: argparse.Namespace) -> int:
    from tango_dranspose.core.treeview import describe_tree
    from tango_dranspose.examples.demo_data import write_demo_scan

    with tempfile.TemporaryDirectory(prefix="tango-dranspose-demo-") as tmp:
        state = Path(args.state_dir) if args.state_dir else Path(tmp)
        state.mkdir(parents=True, exist_ok=True)
        capture = write_demo_scan(state / "demo-xrd.cbors", frames=args.frames)
        output = state / "demo-result.h5"
        print(f"demo: synthetic diffraction scan of {args.frames} frames -> {capture}")
        print("demo: replaying it through the ROI example payload on 2 workers")
        cfg = ReplayConfig(
            worker="tango_dranspose.examples.roi:RoiWorker",
            reducer="tango_dranspose.examples.roi:RoiReducer",
            captures=[str(capture)],
            parameters={"roi": b"[20, 44, 20, 44]"},
            workers=2,
            output=output if args.state_dir else None,
        )
        summary = run_replay(cfg)
        _print_summary(summary)
        print("reduced result:")
        print(describe_tree(summary.publish))
        if not args.state_dir:
            print("(pass --state-dir DIR to keep the capture and the HDF5 result)")
        return EXIT_OK if summary.ok else EXIT_PAYLOAD_ERRORS


def cmd_protocols(args: argparse.Namespace) -> int:
    from tango_dranspose.streams import protocols

    for typ, proto in sorted(protocols().items()):
        print(f"{typ:16} {proto.description}")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from tango_dranspose.sources.capture import open_captures

    for source in open_captures(args.files, trust_pickle=args.trust_pickle):
        events = 0
        frames: dict[str, int] = {}
        for _, streams in source.events():
            events += 1
            for name in streams:
                frames[name] = frames.get(name, 0) + 1
        proto = type(source.framer).typ if source.framer else "(from the dump)"
        print(f"{source.spec.path}: {source.kind}, protocol {proto}, {events} events")
        for name, n in sorted(frames.items()):
            print(f"  stream {name}: {n} frames")
        if source.truncated:
            print(f"  warning: {source.truncated}")
        for reason, n in source.drops.counts.items():
            print(f"  dropped {n} x {reason}: {source.drops.samples.get(reason, '')[:80]}")
    return EXIT_OK


def cmd_port(args: argparse.Namespace) -> int:
    from tango_dranspose.compat.port import port_tree, write

    root = Path(args.dir)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    report = port_tree(root)
    changed = report.changed
    if args.dry_run:
        for port in changed:
            sys.stdout.write(port.diff())
    else:
        write(report, root)
    verb = "would port" if args.dry_run else "ported"
    for port in changed:
        print(f"{verb} {port.path} ({port.imports} import statement(s))")
    for problem in report.problems:
        print(problem)
    people = f"{len(report.problems)} thing(s) need a person" if report.problems else "all ported"
    print(f"{len(changed)} file(s) {verb}; {people}")
    return EXIT_OK if report.ok else EXIT_PAYLOAD_ERRORS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tango-dranspose",
        description="Live analysis for synchrotron beamlines, compatible with dranspose payloads.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rp = sub.add_parser(
        "replay",
        help="run a worker and reducer payload on recorded captures, in one process",
        description=(
            "Run a dranspose-style worker and reducer on capture files and write the reducer's "
            "publish tree to HDF5. Captures are ingester dumps (*.cbors, events tagged with "
            "their stream names) or raw upstream captures; name a raw capture's stream and "
            "protocol as STREAM:PROTOCOL=PATH (the protocol is detected when left out, see "
            "'tango-dranspose protocols'). Detector and scan HDF5/NeXus files replay as streams: "
            "STREAM:hdf5=FILE.h5?dataset=/entry/data/data (docs/sources.md). "
            "Exit status: 0 ok, 1 payload errors, 2 bad input."
        ),
    )
    rp.add_argument("-w", "--worker", required=True, metavar="MODULE:CLASS", help="worker class")
    rp.add_argument("-r", "--reducer", required=True, metavar="MODULE:CLASS", help="reducer class")
    rp.add_argument(
        "-f",
        "--files",
        nargs="+",
        action="extend",
        metavar="[STREAM[:PROTOCOL]=]PATH",
        help="capture files (repeatable); several dumps of one scan are merged by event number; "
        "HDF5 as STREAM:hdf5=FILE.h5?dataset=PATH[&dataset=...][&protocol=NAME]",
    )
    rp.add_argument(
        "-s",
        "--source",
        metavar="MODULE:CLASS",
        help="a coded source, as for dranspose: Class().get_source_generators() returns "
        "generators of InternalWorkerMessage (merged with the files by event number)",
    )
    rp.add_argument(
        "--loop",
        type=int,
        default=1,
        metavar="N",
        help="read the input N times over, event numbers increasing (a long simulated scan)",
    )
    rp.add_argument(
        "-p",
        "--parameters",
        metavar="FILE",
        help='parameter file: [{"name": ..., "data": ...}] as JSON, CBOR, or a pickle with '
        "--trust-pickle (told by content, not by name)",
    )
    rp.add_argument(
        "--map",
        metavar="FILE",
        help="trigger map (JSON); default: the first event to every worker, data round-robin",
    )
    rp.add_argument("--no-wrap", action="store_true", help="with --map: no extra start/end events")
    rp.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker instances (default 1)"
    )
    rp.add_argument(
        "-o", "--output", metavar="FILE.h5", help="write the publish tree to this HDF5 file"
    )
    rp.add_argument(
        "--payload-path",
        action="append",
        default=[],
        metavar="DIR",
        help="where to find payload modules not installed (repeatable; default: current directory)",
    )
    rp.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickle dumps (*.pkls) and pickle parameter files; they can run code",
    )
    rp.add_argument("--print-result", action="store_true", help="print the publish tree")
    rp.set_defaults(func=cmd_replay)

    from tango_dranspose.deploy.commands import add_demo_parser, add_register_parser

    add_demo_parser(sub, cmd_demo)
    add_register_parser(sub)

    from tango_dranspose.gui.command import add_gui_parser

    add_gui_parser(sub)

    pp = sub.add_parser("protocols", help="list the upstream protocols and their typ tags")
    pp.set_defaults(func=cmd_protocols)

    ip = sub.add_parser(
        "inspect",
        help="count the events and frames of capture files",
        description="Read capture files as the replay would and report events, frames and drops.",
    )
    ip.add_argument("files", nargs="+", metavar="[STREAM[:PROTOCOL]=]PATH")
    ip.add_argument("--trust-pickle", action="store_true", help="allow pickle dumps (*.pkls)")
    ip.set_defaults(func=cmd_inspect)

    port = sub.add_parser(
        "port",
        help="rewrite a dranspose payload repository's imports to tango_dranspose.compat",
        description=(
            "Rewrite 'dranspose.' imports to 'tango_dranspose.compat.' in every .py file under "
            "DIR, in place, and list what cannot be ported that way (modules or names not "
            "provided, dranspose internals, Redis/HTTP plumbing, a dependency on dranspose), "
            "one line each. Exit status: 0 all ported, 1 something needs a person, 2 bad input."
        ),
    )
    port.add_argument("dir", metavar="DIR", help="the payload repository")
    port.add_argument(
        "--dry-run", action="store_true", help="show the changes as a diff, write nothing"
    )
    port.set_defaults(func=cmd_port)

    from tango_dranspose.runtime.serve import add_scan_parser, add_serve_parser
    from tango_dranspose.sources.simulate_cli import add_simulate_parser

    add_serve_parser(sub)
    add_scan_parser(sub)
    add_simulate_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
        return code
    except (
        UsageError,
        CaptureError,
        PayloadError,
        TriggerMapError,
        ParameterError,
        ConfigError,
        ArmError,
        TimeoutError,
    ) as exc:
        print(f"tango-dranspose {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
