"""The ``simulate`` command: serve a capture file or a synthetic scan as a detector would.

``tango-dranspose simulate`` registers :func:`add_simulate_parser`; ``python -m
tango_dranspose.sources.simulate_cli`` runs the same command on its own. Standard output is
for machines: one ``listening URL`` (or ``posting URL``) line as soon as the socket is bound,
and one ``done ...`` line at the end; everything for people goes to standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tango_dranspose.core.capture import CaptureError
from tango_dranspose.sources.messages import (
    GENERATORS,
    MessageSource,
    capture_source,
    pcap_source,
    positioncap_source,
    sardana_source,
    stins_source,
)
from tango_dranspose.sources.sim_transports import SimulatorError
from tango_dranspose.sources.simulator import (
    DEFAULT_ADDRESS,
    TRANSPORTS,
    Simulator,
    default_transport,
)
from tango_dranspose.sources.upstream import DEFAULT_HWM

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

DESCRIPTION = """\
Serve upstream data as a detector, PandA or Sardana recorder would, for tests, demos and
benchmarks. SOURCE is a capture file (a raw upstream capture: each record is one message; an
ingester dump: one stream's frames per event, one message per event) or a synthetic generator:
  stins        STINS camera: header, N images with a diffraction ring, series_end
  pcap         PandA PCAP over ZMQ: series-start, N rows in vectorised messages, series-end
  positioncap  PandA position capture (ASCII over TCP): header, N value lines, END
  sardana      Sardana recorder: DataDescription, N RecordData, RecordEnd
Transports: push (bind a ZMQ PUSH), pub (bind a ZMQ PUB), tcp (PandA data port: waits for a
client, reads its newline, answers OK, then streams), http (POST each record to the recorder
endpoints of --post-to). The default follows the protocol: STINS/Eiger push, position capture
tcp, Sardana http, other protocols pub.
"""

EPILOG = """\
Standard output: "listening URL" (push, pub, tcp; the port filled in when binding port 0) or
"posting URL" (http), printed and flushed as soon as the simulator is ready, then at the end
"done messages=N bytes=N seconds=S". Exit status: 0 everything sent, 1 a transport failure or
rejected posts, 2 bad arguments or an unreadable capture, 128+N when stopped by signal N
(SIGINT, SIGTERM).
"""


def _shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxCOLS, e.g. 512x512") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError("image sides must be at least 1")
    return rows, cols


def _at_least(kind: type[Any], minimum: float) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is less than {minimum:g}")
        return value

    convert.__name__ = kind.__name__
    return convert


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the simulate arguments to ``parser``."""
    count, positive, seconds = _at_least(int, 0), _at_least(int, 1), _at_least(float, 0)
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help=f"a capture file, or one of {', '.join(GENERATORS)}",
    )
    where = parser.add_argument_group("transport")
    where.add_argument(
        "-t",
        "--transport",
        choices=TRANSPORTS,
        help="how to serve (default: the protocol's own, see above)",
    )
    where.add_argument(
        "-b",
        "--bind",
        default=DEFAULT_ADDRESS,
        metavar="URL",
        help=f"address to bind for push, pub and tcp (default {DEFAULT_ADDRESS}: a free port)",
    )
    where.add_argument(
        "--post-to", metavar="URL", help="http: the ingester's http://host:port to post to"
    )
    where.add_argument(
        "--connect-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="http: how long to retry connecting to --post-to before giving up (default 10)",
    )
    where.add_argument(
        "--hwm",
        type=positive,
        default=DEFAULT_HWM,
        metavar="N",
        help=f"push, pub: ZMQ send high-water mark, messages queued per peer (default "
        f"{DEFAULT_HWM}); beyond it push waits and pub drops",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--stream", metavar="NAME", help="ingester dumps: the stream to serve (if it holds several)"
    )
    data.add_argument(
        "-n",
        "--count",
        type=count,
        default=10,
        metavar="N",
        help="generators: images (stins), rows (pcap, positioncap), points (sardana); default 10",
    )
    data.add_argument(
        "--shape",
        type=_shape,
        default=(128, 128),
        metavar="ROWSxCOLS",
        help="stins: image shape (default 128x128)",
    )
    data.add_argument("--dtype", default="uint16", help="stins: pixel type (default uint16)")
    data.add_argument(
        "--compression",
        default="none",
        help="stins: none (default), bslz4, lz4 or lz4-h5 (those need the codecs extra)",
    )
    data.add_argument(
        "--rows-per-message",
        type=positive,
        default=15,
        metavar="N",
        help="pcap: rows per vectorised data message (default 15)",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "-i",
        "--interval",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="time between messages (default 0: as fast as the transport takes them)",
    )
    timing.add_argument(
        "-r",
        "--repeat",
        type=count,
        default=1,
        metavar="N",
        help="serve the whole sequence N times, e.g. several scans (default 1)",
    )
    timing.add_argument(
        "--delay",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long after binding (and after --wait-for-peer) before the first message",
    )
    timing.add_argument(
        "--per-connection",
        action="store_true",
        help="with --repeat: serve each repetition to a new reader (push, pub: wait until the "
        "reader of the last one left, i.e. its scan ended, and a new one connected), so that "
        "every scan gets a whole sequence; tcp always does",
    )
    timing.add_argument(
        "--wait-for-peer",
        type=count,
        metavar="N",
        help="wait for N peers before sending: pub subscribers, push PULL sockets, tcp clients "
        "(also before each repetition), http a connection; default 1, push 0",
    )
    timing.add_argument(
        "--warmup",
        type=count,
        default=0,
        metavar="N",
        help='send N throw-away messages ("{}", which every framer drops) before the first; '
        "for pub subscribers that join late",
    )
    timing.add_argument(
        "--linger",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="at the end, wait up to this long for queued messages to be delivered (tcp: for "
        "the client to hang up); default 5",
    )
    parser.set_defaults(func=run_simulate)
    return parser


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``simulate`` on an ``add_subparsers()`` object; returns its parser."""
    parser = subparsers.add_parser(
        "simulate",
        help="serve a capture or a synthetic scan as a detector would (push, pub, tcp, http)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure_parser(parser)


def source_from_args(args: argparse.Namespace) -> MessageSource:
    name = args.source
    if name in GENERATORS and not Path(name).is_file():
        if args.stream:
            raise SimulatorError("--stream selects a stream of a capture file, not a generator")
        if name == "stins":
            return stins_source(
                args.count, args.shape, dtype=args.dtype, compression=args.compression
            )
        if name == "pcap":
            return pcap_source(args.count, args.rows_per_message)
        if name == "positioncap":
            return positioncap_source(args.count)
        return sardana_source(args.count)
    return capture_source(name, args.stream)


def run_simulate(args: argparse.Namespace) -> int:
    """The handler of ``simulate``; returns the exit status."""
    try:
        source = source_from_args(args)
        transport = args.transport or default_transport(source.typ)
        if transport == "http" and not args.post_to:
            raise SimulatorError("the http transport needs --post-to http://host:port")
        simulator = Simulator(
            source,
            transport,
            args.post_to if transport == "http" else args.bind,
            interval=args.interval,
            repeat=args.repeat,
            delay=args.delay,
            wait_for_peer=args.wait_for_peer,
            per_connection=args.per_connection,
            warmup=args.warmup,
            hwm=args.hwm,
            linger=args.linger,
            connect_timeout=args.connect_timeout,
        )
    except (SimulatorError, CaptureError, ValueError, OSError) as exc:
        print(f"tango-dranspose simulate: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return asyncio.run(_serve(simulator))


async def _serve(simulator: Simulator) -> int:
    task = asyncio.current_task()
    assert task is not None
    stopped_by: list[int] = []
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        stopped_by.append(signum)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        url = await simulator.start()
        print(f"{'posting' if simulator.transport == 'http' else 'listening'} {url}", flush=True)
        print(
            f"simulate: {simulator.source.name} over {simulator.transport} {url}",
            file=sys.stderr,
            flush=True,
        )
        stats = await simulator.run()
    except asyncio.CancelledError:
        await simulator.close(0.0)
        if not stopped_by:
            raise
        name = signal.Signals(stopped_by[0]).name
        print(
            f"simulate: stopped by {name} after {simulator.stats.messages} messages",
            file=sys.stderr,
        )
        return 128 + stopped_by[0]
    except SimulatorError as exc:
        await simulator.close(0.0)
        print(f"tango-dranspose simulate: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"done messages={stats.messages} bytes={stats.bytes} seconds={stats.seconds:.3f}",
        flush=True,
    )
    if stats.rejected:
        print(f"simulate: {stats.rejected} posts were rejected", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tango-dranspose simulate",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    configure_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run_simulate(args)


if __name__ == "__main__":
    sys.exit(main())
