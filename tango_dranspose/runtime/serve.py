"""Running one service as its own process: ``tango-dranspose serve KIND ...``.

Each prints one machine-readable line per bound endpoint as soon as it is bound (e.g.
``control tcp://127.0.0.1:40123``), so whoever started it can pass the port on, and exits
cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def _announce(what: str, address: str) -> None:
    print(f"{what} {address}", flush=True)


async def _until_signal(
    setup: Callable[[asyncio.Event], Awaitable[Callable[[], Awaitable[None]]]],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    cleanup = await setup(stop)
    try:
        await stop.wait()
    finally:
        await cleanup()


async def _scheduler(
    args: argparse.Namespace, stop: asyncio.Event
) -> Callable[[], Awaitable[None]]:
    from tango_dranspose.runtime.control import ControlServer
    from tango_dranspose.runtime.scheduler import Scheduler

    sched = Scheduler(args.bind, window=args.window, on_new_series=args.on_new_series)
    await sched.start()
    server = ControlServer(sched, args.client_bind)
    server.start()
    _announce("control", sched.address)
    _announce("client", server.address)

    async def cleanup() -> None:
        await server.close()
        await sched.close()

    return cleanup


async def _service(args: argparse.Namespace, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
    from tango_dranspose.core.payload import enter_payload_root
    from tango_dranspose.runtime.ingester import IngesterService, StreamConfig
    from tango_dranspose.runtime.reducer import ReducerService
    from tango_dranspose.runtime.worker import WorkerService

    service: Any
    if args.kind == "ingester":
        try:
            streams = [StreamConfig.parse(s) for s in args.stream]
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        service = IngesterService(
            args.name, args.scheduler, streams, retain_bytes=args.retain_mib << 20
        )
    elif args.kind == "worker":
        tags = [t for t in args.tags.split(",") if t]
        service = WorkerService(
            args.name,
            args.scheduler,
            args.worker_class,
            tags=tags,
            bind=args.bind,
            search=args.payload_path,
        )
    else:
        service = ReducerService(
            args.name,
            args.scheduler,
            args.reducer_class,
            bind=args.bind,
            search=args.payload_path,
            output_dir=args.output_dir,
            max_queued_bytes=args.max_queued_mib << 20,
            # As the device's AllowedResultDirs: by default the output directory alone.
            allowed_result_dirs=args.allowed_result_dir
            or ([args.output_dir] if args.output_dir else []),
        )
    if args.kind in ("worker", "reducer"):
        # One payload per process: run it from its repository, as dranspose payloads expect
        # (they open data files relative to it).
        enter_payload_root(service.cls)
    await service.start()
    if getattr(service, "address", ""):
        _announce("data", service.address)
    _announce("ready", service.name)
    return service.close


class ConfigError(ValueError):
    """A service cannot start with the configuration it was given."""


def cmd_serve(args: argparse.Namespace) -> int:
    run = _scheduler if args.kind == "scheduler" else _service

    async def main() -> None:
        await _until_signal(lambda stop: run(args, stop))

    asyncio.run(main())
    return 0


def add_serve_parser(sub: Any) -> None:
    sp = sub.add_parser(
        "serve",
        help="run one pipeline service (scheduler, ingester, worker, reducer) as a process",
        description="Run one service of the distributed pipeline. Each prints the endpoints it "
        "bound ('control ADDR', 'client ADDR', 'data ADDR') and 'ready NAME' on stdout.",
    )
    kinds = sp.add_subparsers(dest="kind", required=True, metavar="KIND")

    s = kinds.add_parser("scheduler", help="the scheduler (assignment, ledger, scan control)")
    s.add_argument(
        "--bind", default="tcp://127.0.0.1:0", help="control endpoint services connect to"
    )
    s.add_argument(
        "--client-bind", default="tcp://127.0.0.1:0", help="endpoint for 'tango-dranspose scan'"
    )
    s.add_argument(
        "--window", type=int, default=32, help="events a worker may hold pending (default 32)"
    )
    s.add_argument(
        "--on-new-series",
        choices=("end", "fail"),
        default="end",
        help="an upstream that starts a new series inside a scan: end that stream and let the "
        "scan end 'interrupted' (default), or fail the scan",
    )
    s.set_defaults(func=cmd_serve)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", required=True, help="unique name of this service")
        p.add_argument(
            "--scheduler", required=True, metavar="ADDR", help="the scheduler's control endpoint"
        )

    i = kinds.add_parser("ingester", help="reads upstream streams and sends events to workers")
    common(i)
    i.add_argument(
        "--stream",
        action="append",
        required=True,
        metavar="NAME:PROTOCOL=URL",
        help="a stream and its upstream, e.g. orca:STINS=pull+tcp://det:9999 (repeatable); "
        "URL schemes: pull+tcp, sub+tcp, tcp, http, file (see docs/sources.md)",
    )
    i.add_argument(
        "--retain-mib",
        type=int,
        default=512,
        metavar="MIB",
        help="frames kept to send again if a worker dies, at most (MiB, default 512)",
    )
    i.set_defaults(func=cmd_serve)

    w = kinds.add_parser("worker", help="runs the worker payload on events")
    common(w)
    w.add_argument("--worker-class", required=True, metavar="MODULE:CLASS")
    w.add_argument("--tags", default="generic", help="comma-separated tags (default generic)")
    w.add_argument(
        "--bind", default="tcp://127.0.0.1:0", help="data endpoint (default a free port)"
    )
    w.add_argument("--payload-path", action="append", default=[], metavar="DIR")
    w.set_defaults(func=cmd_serve)

    r = kinds.add_parser("reducer", help="runs the reducer payload on results")
    common(r)
    r.add_argument("--reducer-class", required=True, metavar="MODULE:CLASS")
    r.add_argument(
        "--bind", default="tcp://127.0.0.1:0", help="data endpoint (default a free port)"
    )
    r.add_argument("--payload-path", action="append", default=[], metavar="DIR")
    r.add_argument(
        "--output-dir", metavar="DIR", help="write SCANID_processed.h5 here at the end of each scan"
    )
    r.add_argument(
        "--allowed-result-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory an arm's output_file or scan_dir may place the result file in "
        "(repeatable; symlinks resolved); elsewhere the arm is refused. Default: the "
        "--output-dir alone, or none without it",
    )
    r.add_argument(
        "--max-queued-mib",
        type=int,
        default=256,
        metavar="MIB",
        help="results received and not reduced yet, at most (MiB, default 256); beyond it the "
        "workers wait, and the ingesters and detectors behind them",
    )
    r.set_defaults(func=cmd_serve)


def cmd_scan(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from tango_dranspose.core.parameters import load_parameter_file
    from tango_dranspose.core.paramfiles import NestingError, loads_json
    from tango_dranspose.runtime.control import ControlClient

    try:
        text = Path(args.map).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the trigger map {args.map}: {exc.strerror}") from None
    try:
        # Bounded: the map is re-encoded to go to the scheduler, and a deeply nested one would
        # fail there with a RecursionError instead of a line saying what is wrong.
        tmap = loads_json(text)
    except NestingError as exc:
        raise ConfigError(f"invalid trigger map {args.map}: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"invalid trigger map {args.map}: not valid JSON: {exc}") from None
    client = ControlClient(args.client)
    params = {}
    if args.parameters:
        params = {
            k: v.decode("utf-8", "replace") for k, v in load_parameter_file(args.parameters).items()
        }
    scan_id = client.arm(tmap, scan_id=args.scan_id, parameters=params, record_dir=args.record_dir)
    print(f"armed scan {scan_id}", flush=True)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        status = client.request("status")["scan"]
        bar = "#" * int(status.get("progress", 0) / 5)
        # Processed and reduced apart: a lagging reducer is visible while it lags.
        print(
            f"\r[{bar:<20}] {status.get('completed_events', 0)}/{status.get('total_events', 0)} "
            f"processed, {status.get('reduced_progress', 0):.0f}% reduced, "
            f"{status.get('event_rate', 0):,.0f} ev/s {status.get('state')}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if (
            status.get("state") not in ("arming", "running", "finishing")
            or time.monotonic() > deadline
        ):
            break
        client.request("wait", timeout=1.5, seconds=0.5)
    print(file=sys.stderr)
    print(json.dumps(status, indent=2, default=str))
    return 0 if status.get("state") == "finished" else 1


def add_scan_parser(sub: Any) -> None:
    sp = sub.add_parser(
        "scan",
        help="arm a scan on a running scheduler (and wait for it)",
        description="Arm a scan with a trigger map on a scheduler started with 'serve scheduler'.",
    )
    sp.add_argument(
        "--client", required=True, metavar="ADDR", help="the scheduler's client endpoint"
    )
    sp.add_argument("--map", required=True, metavar="FILE", help="trigger map (JSON)")
    sp.add_argument("-p", "--parameters", metavar="FILE", help='JSON [{"name": ..., "data": ...}]')
    sp.add_argument("--scan-id", help="scan id (default: a random one)")
    sp.add_argument("--record-dir", metavar="DIR", help="ingesters write dumps of this scan here")
    sp.add_argument("--wait", action="store_true", help="show progress until the scan ends")
    sp.add_argument(
        "--timeout", type=float, default=3600.0, help="with --wait: give up after this many seconds"
    )
    sp.set_defaults(func=cmd_scan)
