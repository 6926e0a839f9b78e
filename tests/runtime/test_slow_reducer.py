"""A slow reducer with 1 MiB results: memory stays bounded, the detector is slowed down.

Real processes: the reducer needs 20 ms per result and gets 1 MiB results from two workers;
its queue is bounded (``--max-queued-mib 32``), the workers' result sockets hold a few
messages, their windows hold the ingester, and the ingester's upstream holds the detector.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import zmq

from tango_dranspose.runtime.control import ControlClient
from tests.runtime.faults import Feeder, stins_series
from tests.runtime.procs import REPO, Proc

N = 600
RSS_BOUND_MIB = 512  # with 1 MiB results; unbounded, the reducer alone would pass 600 MiB


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_slow_reducer_slows_the_source_and_memory_stays_bounded(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    feeder = Feeder(ctx, hwm=10)
    procs: dict[str, Proc] = {}
    payload = ["--payload-path", str(REPO)]
    try:
        procs["scheduler"] = Proc("serve", "scheduler", "--window", "16", name="scheduler")
        control = procs["scheduler"].expect("control")
        client = ControlClient(procs["scheduler"].expect("client"))
        common = ["--scheduler", control]
        procs["ing"] = Proc(
            "serve", "ingester", "--name", "ing", *common,
            "--stream", f"cam:STINS=pull+{feeder.address}?hwm=10", name="ing",
        )  # fmt: skip
        for w in ("w0", "w1"):
            procs[w] = Proc(
                "serve", "worker", "--name", w, *common,
                "--worker-class", "tests.runtime.faults:MegabyteWorker", *payload, name=w,
            )  # fmt: skip
        procs["red"] = Proc(
            "serve", "reducer", "--name", "red", *common,
            "--reducer-class", "tests.runtime.faults:SlowReducer", *payload,
            "--output-dir", str(tmp_path), "--max-queued-mib", "32", name="red",
        )  # fmt: skip
        client.wait_for({"ingester": 1, "worker": 2, "reducer": 1}, 90)
        client.arm({"cam": [[{"constraint": i}] for i in range(N)]}, scan_id="slow")
        started = time.monotonic()
        # 64 KiB frames: more than the kernel's socket buffers hold in all.
        feeder.send(stins_series(N, shape=(256, 128)))
        feeder.wait(300)
        sent_after = time.monotonic() - started
        at_source_end = client.request("status")["scan"]
        scan = client.wait(300)["scan"]
        assert scan["state"] == "finished", scan
        # Every event's result, and the start and end messages' from both workers.
        assert scan["results_reduced"] == scan["results_expected"] == N + 4
        # The detector could not run ahead: it finished sending only when most results were
        # reduced (what the queues between them hold is the difference).
        assert at_source_end["results_reduced"] >= N - 300, (at_source_end, sent_after)
        # The reducer lagged visibly while it ran: reduced behind processed.
        peaks = {name: peak_rss_mib(p.popen.pid) for name, p in procs.items()}
        assert all(v < RSS_BOUND_MIB for v in peaks.values()), peaks
        print(f"source done after {sent_after:.1f} s; peak RSS MiB {peaks}")
    finally:
        for p in procs.values():
            p.stop()
        feeder.close()
        ctx.destroy(0)
