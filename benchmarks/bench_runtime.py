"""Throughput and latency of the distributed runtime, beside raw ZeroMQ, in one run.

    python -m benchmarks.bench_runtime [--quick] [--retention]

Deployment: a source process (PUSH, STINS uint16 frames), and as separate processes the
scheduler, one ingester, two workers (frame sum) and a reducer, all on 127.0.0.1. For each
frame size: events/s and GB/s as fast as it goes, latency (source send -> reducer receipt)
at a paced rate, peak RSS per process; and raw pyzmq PUSH -> PULL between two processes for
the same sizes, with the ratio. Finally RSS before and after a long 1 KiB scan (flat memory).

``--retention`` instead measures what surviving a worker's death costs an undisturbed scan:
two identical deployments, one whose ingester keeps frames for re-dispatch (the default) and
one that keeps none (``--retain-mib 0``), scanned alternately, median of the repetitions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zmq

from tango_dranspose.runtime.control import ControlClient

HERE = Path(__file__).resolve().parent
SIZES = [(1024, "1 KiB"), (64 * 1024, "64 KiB"), (1024 * 1024, "1 MiB"), (4 * 1024 * 1024, "4 MiB")]


# -- the detector ------------------------------------------------------------------------


def _source(port_q: Any, cmd_q: Any, done_q: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 1000)
    port_q.put(sock.bind_to_random_port("tcp://127.0.0.1"))
    while True:
        cmd = cmd_q.get()
        if cmd is None:
            break
        n, size, rate = cmd
        image = np.arange(size // 2, dtype=np.uint16)
        sock.send(json.dumps({"htype": "header", "filename": "", "msg_number": 0}).encode())
        period = 1.0 / rate if rate else 0.0
        start = time.perf_counter()
        for i in range(n):
            if period:
                delay = start + i * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)  # pacing the simulated detector, not waiting for state
            head = {
                "htype": "image",
                "frame": i,
                "shape": [size // 2],
                "type": "uint16",
                "compression": "none",
                "msg_number": i + 1,
                "t_send": time.time(),
            }
            sock.send_multipart([json.dumps(head).encode(), image], copy=size < 65536)
        sock.send(json.dumps({"htype": "series_end", "msg_number": n + 1}).encode())
        done_q.put(time.perf_counter() - start)
    sock.close(0)
    ctx.term()


def _raw_sender(port_q: Any, n: int, size: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(f"tcp://127.0.0.1:{port_q.get()}")
    buf = np.arange(size // 2, dtype=np.uint16)
    for _ in range(n):
        sock.send(buf, copy=size < 65536)
    sock.close(linger=-1)
    ctx.term()


def raw_zmq(n: int, size: int) -> float:
    """Messages/s of plain PUSH -> PULL between two processes."""
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    q: Any = mp.Queue()
    q.put(port)
    proc = mp.Process(target=_raw_sender, args=(q, n, size))
    proc.start()
    pull.recv(copy=False)
    start = time.perf_counter()
    for _ in range(n - 1):
        pull.recv(copy=False)
    elapsed = time.perf_counter() - start
    proc.join()
    pull.close(0)
    return (n - 1) / elapsed


# -- the deployment ----------------------------------------------------------------------


class Service:
    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tango_dranspose.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=HERE.parent,
        )
        self.announced: dict[str, str] = {}

    def expect(self, key: str, timeout: float = 60) -> str:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while key not in self.announced:
            if time.monotonic() > deadline:
                raise TimeoutError(key)
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"service exited before announcing {key}")
            what, _, rest = line.strip().partition(" ")
            self.announced[what] = rest
        return self.announced[key]

    def rss(self, field: str = "VmHWM") -> float:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu(self) -> float:
        """User + system CPU seconds used so far."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()


def deploy(
    source_port: int, out: Path, ingester_args: tuple[str, ...] = ()
) -> tuple[dict[str, Service], ControlClient]:
    svc: dict[str, Service] = {"scheduler": Service("serve", "scheduler", "--window", "64")}
    control = svc["scheduler"].expect("control")
    client = ControlClient(svc["scheduler"].expect("client"))
    svc["ingester"] = Service(
        "serve",
        "ingester",
        "--name",
        "ing",
        "--scheduler",
        control,
        "--stream",
        f"cam:STINS=pull+tcp://127.0.0.1:{source_port}",
        *ingester_args,
    )
    for w in ("w0", "w1"):
        svc[w] = Service(
            "serve",
            "worker",
            "--name",
            w,
            "--scheduler",
            control,
            "--worker-class",
            "payloads:FrameSumWorker",
            "--payload-path",
            str(HERE),
        )
    svc["reducer"] = Service(
        "serve",
        "reducer",
        "--name",
        "red",
        "--scheduler",
        control,
        "--reducer-class",
        "payloads:LatencyReducer",
        "--payload-path",
        str(HERE),
        "--output-dir",
        str(out),
    )
    for s in svc.values():
        s.expect("ready" if s is not svc["scheduler"] else "client")
    client.wait_for({"ingester": 1, "worker": 2, "reducer": 1}, 60)
    return svc, client


def run_scan(
    client: ControlClient,
    cmd_q: Any,
    done_q: Any,
    out: Path,
    n: int,
    size: int,
    rate: float,
    scan_id: str,
    during: Any = None,
) -> dict[str, Any]:
    cells = {
        "parts": {"p": {"cam": [[{"constraint": 0}], [{"constraint": 1}]]}},
        "sequence": ["p"] * (n // 2),
    }
    client.arm(cells, scan_id=scan_id)
    cmd_q.put((n, size, rate))
    if during is not None:
        during()
    status = client.wait(600)["scan"]
    done_q.get(timeout=60)
    with h5py.File(out / f"{scan_id}_processed.h5") as f:
        lat = f["latency"][()]
        to_worker = f["to_worker"][()]
    return {"status": status, "latency": lat, "to_worker": to_worker}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    ap.add_argument("--long", type=int, default=100_000, help="events of the memory-flatness scan")
    ap.add_argument(
        "--retention",
        action="store_true",
        help="compare an undisturbed scan with and without frames kept for re-dispatch",
    )
    ap.add_argument("--repeat", type=int, default=3, help="--retention: scans per mode and size")
    args = ap.parse_args(argv)
    if args.retention:
        return retention(args)
    counts = {1024: 20_000, 65536: 10_000, 1 << 20: 1_000, 4 << 20: 400}
    if args.quick:
        counts = {k: max(v // 20, 40) for k, v in counts.items()}
        args.long = min(args.long, 10_000)
    port_q: Any = mp.Queue()
    cmd_q: Any = mp.Queue()
    done_q: Any = mp.Queue()
    source = mp.Process(target=_source, args=(port_q, cmd_q, done_q), daemon=True)
    source.start()
    port = port_q.get(timeout=30)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        svc, client = deploy(port, out)
        try:
            for size, label in SIZES:
                n = counts[size]
                res = run_scan(client, cmd_q, done_q, out, n, size, 0, f"fast{size}")
                st = res["status"]
                rate = st["completed_events"] / st["elapsed"]
                paced_rate = 1000.0 if size <= 65536 else 20.0
                paced_n = 2000 if size <= 65536 else 100
                if args.quick:
                    paced_n //= 10
                paced = run_scan(
                    client, cmd_q, done_q, out, paced_n, size, paced_rate, f"paced{size}"
                )
                lat = paced["latency"] * 1e3
                tw = paced["to_worker"] * 1e3
                print(
                    f"{label}: source->worker p50 {np.percentile(tw, 50):.2f} p99 "
                    f"{np.percentile(tw, 99):.2f} ms; total p50 {np.percentile(lat, 50):.2f} "
                    f"p99 {np.percentile(lat, 99):.2f} ms",
                    file=sys.stderr,
                )
                raw = raw_zmq(max(n, 200), size)
                rows.append(
                    (
                        label,
                        rate,
                        rate * size / 1e9,
                        raw,
                        raw * size / 1e9,
                        paced_rate,
                        float(np.percentile(lat, 50)),
                        float(np.percentile(lat, 99)),
                    )
                )
            peak = {name: s.rss() for name, s in svc.items()}
            before: dict[str, float] = {}
            cpu0 = {name: s.cpu() for name, s in svc.items()}

            def sample() -> None:
                status = client.wait_until(args.long // 10, 300)
                del status
                before.update({name: s.rss("VmRSS") for name, s in svc.items()})

            long_scan = run_scan(
                client, cmd_q, done_q, out, args.long, 1024, 0, "long", during=sample
            )
            after = {name: s.rss("VmRSS") for name, s in svc.items()}
            cpu = {name: (s.cpu() - cpu0[name]) / args.long * 1e6 for name, s in svc.items()}
            long_rate = long_scan["status"]["completed_events"] / long_scan["status"]["elapsed"]
        finally:
            for s in svc.values():
                s.stop()
            cmd_q.put(None)
    print(
        f"\ndistributed runtime on {os.cpu_count()} cores: "
        "source, scheduler, ingester, 2 workers, reducer"
    )
    print(
        f"{'frame':>7} {'events/s':>10} {'GB/s':>7} {'raw zmq msg/s':>14} {'raw GB/s':>9} "
        f"{'ratio':>6} {'paced Hz':>9} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for label, rate, gbs, raw, raw_gbs, paced_rate, p50, p99 in rows:
        print(
            f"{label:>7} {rate:>10,.0f} {gbs:>7.3f} {raw:>14,.0f} {raw_gbs:>9.3f} "
            f"{rate / raw:>6.1%} {paced_rate:>9,.0f} {p50:>7.2f} {p99:>7.2f}"
        )
    print("\npeak RSS per process (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    print(
        f"long scan: {args.long:,} events of 1 KiB at {long_rate:,.0f} events/s; "
        "RSS MiB at 10% -> end: "
        + ", ".join(f"{k} {before.get(k, float('nan')):.0f}->{after[k]:.0f}" for k in after)
    )
    print(
        "CPU per event in the long scan (µs): " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
    )
    return 0


def retention(args: argparse.Namespace) -> int:
    port_q: Any = mp.Queue()
    cmd_q: Any = mp.Queue()
    done_q: Any = mp.Queue()
    source = mp.Process(target=_source, args=(port_q, cmd_q, done_q), daemon=True)
    source.start()
    port = port_q.get(timeout=30)
    counts = {1024: 20_000, 4 << 20: 400}
    if args.quick:
        counts = {k: max(v // 10, 40) for k, v in counts.items()}
    modes = {"kept (default)": (), "none kept": ("--retain-mib", "0")}
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        crews = {m: deploy(port, Path(tmp), extra) for m, extra in modes.items()}
        try:
            for rep in range(args.repeat):
                for size, n in counts.items():
                    for mode, (_, client) in crews.items():
                        res = run_scan(
                            client, cmd_q, done_q, Path(tmp), n, size, 0, f"r{rep}{size}"
                        )
                        st = res["status"]
                        rates.setdefault((mode, size), []).append(
                            st["completed_events"] / st["elapsed"]
                        )
        finally:
            for svc, _ in crews.values():
                for s in svc.values():
                    s.stop()
            cmd_q.put(None)
    print(f"\nre-dispatch buffers, undisturbed scans, median of {args.repeat} (one run)")
    print(f"{'frame':>7} {'kept ev/s':>10} {'none ev/s':>10} {'kept/none':>10}")
    for size, label in SIZES:
        if size not in counts:
            continue
        kept = float(np.median(rates[("kept (default)", size)]))
        none = float(np.median(rates[("none kept", size)]))
        print(f"{label:>7} {kept:>10,.0f} {none:>10,.0f} {kept / none:>10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
