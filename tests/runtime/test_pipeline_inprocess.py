"""The distributed runtime in one process: real ZeroMQ sockets, all services in one loop."""

from __future__ import annotations

import numpy as np

from tango_dranspose.streams.stream1 import build_end, build_header, build_image
from tests.runtime.pipeline import pipeline, run

W = "tests.runtime.payloads:FrameSumWorker"
R = "tests.runtime.payloads:CollectReducer"


def stins_scan(n: int, seed: int = 0) -> tuple[list[list[bytes]], list[float]]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 100, size=(8, 8), dtype=np.uint16) for _ in range(n)]
    msgs = [build_header("x.h5", 0)] + [build_image(img, i, i + 1) for i, img in enumerate(images)]
    msgs.append(build_end(n + 1))
    return msgs, [float(img.sum()) for img in images]


def test_round_robin_scan_through_two_workers() -> None:
    async def go() -> None:
        async with pipeline([("cam", "STINS")], W, R) as p:
            msgs, sums = stins_scan(20)
            cells = [[{"constraint": i}] for i in range(20)]
            await p.scheduler.arm({"cam": cells}, scan_id="s1")
            await p.send("cam", msgs)
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished", p.scheduler.summary()
            with p.reducer.publish() as tree:
                results = tree["results"]
            data = sorted((r for r in results if "frame" in r), key=lambda r: r["frame"])
            assert [r["cam"] for r in data] == sums
            assert {r["worker"] for r in data} == {"w0", "w1"}
            assert tree["count"] == len(results) == 20 + 2 * 2  # start and end reach both workers
            summary = p.scheduler.summary()
            assert summary["completed_events"] == 22
            assert summary["ledger"]["cam"]["delivered"] == 22

    run(go())


def test_pairs_discards_gaps_and_a_debug_copy() -> None:
    async def go() -> None:
        workers = (("generic",), ("generic",), ("debug",))
        async with pipeline([("cam", "STINS"), ("slow", "STINS")], W, R, workers=workers) as p:
            n = 16
            cam: list = []
            slow: list = []
            for i in range(n):
                cell = [] if i % 8 == 7 else [{"constraint": i // 2}]
                if i % 4 == 0:
                    cell = [*cell, {"constraint": None, "tags": ["debug"]}]
                cam.append(cell)
                slow.append([{"constraint": i // 2}] if i % 4 == 1 else None)
            await p.scheduler.arm({"cam": cam, "slow": slow}, scan_id="pairs")
            msgs, _ = stins_scan(n)
            slow_msgs, _ = stins_scan(n // 4, seed=1)
            await p.send("cam", msgs)
            await p.send("slow", slow_msgs)
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished", p.scheduler.summary()
            with p.reducer.publish() as tree:
                rows = [r for r in tree["results"] if 1 <= r["event"] <= n]
            by_event: dict[int, list] = {}
            for r in rows:
                by_event.setdefault(r["event"], []).append(r)
            owner = {
                e: {r["worker"] for r in rs if r["worker"] != "w2"} for e, rs in by_event.items()
            }
            for i in range(0, n, 2):  # events i+1, i+2 hold frames i, i+1: same worker
                if i % 8 != 6:
                    assert owner[i + 1] == owner[i + 2]
            debug = sorted(r["frame"] for r in rows if r["worker"] == "w2")
            assert debug == list(range(0, n, 4))
            discarded = [i for i in range(n) if i % 8 == 7]
            assert all(i + 1 not in by_event for i in discarded)
            with_slow = sorted(r["event"] - 1 for r in rows if "slow" in r["streams"])
            assert with_slow == [i for i in range(n) if i % 4 == 1]
            summary = p.scheduler.summary()
            assert summary["ledger"]["cam"]["discarded"] == len(discarded)
            assert summary["ledger"]["slow"]["delivered"] == n // 4 + 2

    run(go())


def test_stop_mid_scan_then_a_second_scan_drops_leftovers() -> None:
    async def go() -> None:
        async with pipeline([("cam", "STINS")], W, R) as p:
            msgs, _ = stins_scan(30)
            cells = [[{"constraint": i}] for i in range(30)]
            await p.scheduler.arm({"cam": cells}, scan_id="first")
            await p.send("cam", msgs[:11])  # header + 10 images of 30
            await p.scheduler.wait_until(completed=11, timeout=20)
            await p.scheduler.stop()
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "stopped"
            with p.reducer.publish() as tree:
                assert tree["count"] >= 11  # finish ran with what there was
            # The rest of the first scan arrives late, then a complete second scan.
            await p.scheduler.arm(
                {"cam": [[{"constraint": i}] for i in range(5)]}, scan_id="second"
            )
            second, sums = stins_scan(5, seed=9)
            await p.send("cam", msgs[11:] + second)
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished", p.scheduler.summary()
            with p.reducer.publish() as tree:
                frames = sorted(r["cam"] for r in tree["results"] if "frame" in r)
            assert frames == sorted(sums)
            dropped = p.scheduler.summary()["ledger"]["cam"]["dropped"]
            # 20 late images and the first scan's end message, none delivered to the second.
            assert dropped == {"before the start message": 21}

    run(go())


def test_worker_errors_are_counted_and_the_scan_completes() -> None:
    from tests.runtime import payloads

    async def go() -> None:
        payloads.FAIL_ON.update({2, 5})
        try:
            async with pipeline([("cam", "STINS")], W, R) as p:
                msgs, _ = stins_scan(8)
                await p.scheduler.arm({"cam": [[{"constraint": i}] for i in range(8)]})
                await p.send("cam", msgs)
                scan = await p.scheduler.wait(20)
                assert scan is not None and scan.state == "finished"
                summary = p.scheduler.summary()
                assert summary["worker_errors"] == 2
                assert "cannot analyse frame" in (summary["last_error"] or "")
                with p.reducer.publish() as tree:
                    assert sorted(r["frame"] for r in tree["results"] if "frame" in r) == [
                        0,
                        1,
                        3,
                        4,
                        6,
                        7,
                    ]
        finally:
            payloads.FAIL_ON.clear()

    run(go())


def test_arming_refuses_unknown_streams_and_too_few_workers() -> None:
    from tango_dranspose.runtime.scheduler import ArmError

    async def go() -> None:
        async with pipeline([("cam", "STINS")], W, R) as p:
            try:
                await p.scheduler.arm({"eiger": [[{"constraint": 0}]]})
            except ArmError as exc:
                assert "no ingester serves stream(s) eiger" in str(exc)
            else:
                raise AssertionError("armed a map with an unknown stream")
            try:
                await p.scheduler.arm(
                    {"cam": [[{"constraint": 0}, {"constraint": 1}, {"constraint": 2}]]}
                )
            except ArmError as exc:
                assert "3 distinct constraints" in str(exc) and "2 worker" in str(exc)
            else:
                raise AssertionError("armed a map needing 3 workers with 2")
            # Still usable afterwards.
            msgs, _ = stins_scan(2)
            await p.scheduler.arm({"cam": [[{"constraint": 0}], [{"constraint": 1}]]})
            await p.send("cam", msgs)
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished"

    run(go())


def test_results_with_payload_dataclasses_and_stream_models_reach_the_reducer() -> None:
    async def go() -> None:
        async with pipeline(
            [("cam", "STINS")], "tests.runtime.payloads:ModelWorker", R, workers=(("generic",),)
        ) as p:
            msgs, sums = stins_scan(3)
            await p.scheduler.arm({"cam": [[{"constraint": 0}]] * 3})
            await p.send("cam", msgs)
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished"
            with p.reducer.publish() as tree:
                rows = sorted(
                    (r for r in tree["results"] if "point" in r), key=lambda r: r["point"].frame
                )
            assert [r["point"].total for r in rows] == sums
            assert [r["packet"].frame for r in rows] == [0, 1, 2]
            assert p.reducer.rejected == 0

    run(go())


def test_slow_workers_push_back_to_the_detector() -> None:
    import zmq

    async def go() -> None:
        async with pipeline(
            [("cam", "STINS")],
            "tests.runtime.payloads:SlowWorker",
            R,
            workers=(("generic",),),
            window=4,
            upstream_hwm=20,
            source_hwm=20,
        ) as p:
            total = 3000
            msgs, _ = stins_scan(total)
            await p.scheduler.arm({"cam": [[{"constraint": 0}]] * total})
            await p.send("cam", msgs[:1])
            await p.scheduler.wait_until(completed=1, timeout=10)
            detector = zmq.Socket.shadow(p.sources["cam"].underlying)
            sent = 1
            while sent < len(msgs):
                try:
                    detector.send_multipart(msgs[sent], zmq.NOBLOCK)
                except zmq.Again:
                    break  # the detector cannot send more: the pipeline pushed back
                sent += 1
            scan = p.scheduler.scan
            assert scan is not None
            # Queues are bounded: the detector stalled long before the end of the scan, and the
            # ingester read only what the assignments asked for (window + processed).
            assert sent < 200, sent
            assert p.ingesters[0].frames_total <= scan.completed + 4 + 1
            await p.scheduler.stop()
            assert (await p.scheduler.wait(20)) is not None

    run(go())


def test_malformed_upstream_messages_are_counted_and_the_scan_completes() -> None:
    async def go() -> None:
        async with pipeline([("cam", "STINS")], W, R) as p:
            msgs, sums = stins_scan(4)
            await p.scheduler.arm({"cam": [[{"constraint": i % 2}] for i in range(4)]})
            bad = [
                [b"not json at all"],
                [b'{"htype": "image", "frame": 9, "shape": [8, 8], "type": "uint16"}'],  # 1 part
                [
                    b'{"htype": "image", "frame": 9, "shape": [8, 8], "type": "uint16",'
                    b' "compression": "none"}',
                    b"\x00" * 7,
                ],  # truncated buffer
                [
                    b'{"htype": "image", "frame": 9, "shape": [8, 8], "type": "nonsense",'
                    b' "compression": "none"}',
                    b"\x00" * 128,
                ],  # unknown dtype
            ]
            await p.send("cam", [msgs[0], *bad, *msgs[1:]])
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished"
            with p.reducer.publish() as tree:
                assert sorted(r["cam"] for r in tree["results"] if "frame" in r) == sorted(sums)
            dropped = p.scheduler.summary()["ledger"]["cam"]["dropped"]
            assert sum(dropped.values()) == 4, dropped

    run(go())


def test_exactly_one_worker_gets_each_tick() -> None:
    async def go() -> None:
        async with pipeline([("cam", "STINS")], "tests.runtime.payloads:TickWorker", R) as p:
            msgs, _ = stins_scan(6)
            await p.scheduler.arm({"cam": [[{"constraint": i % 2}] for i in range(6)]})
            await p.send("cam", msgs)
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished"
            with p.reducer.publish() as tree:
                results = tree["results"]
            per_event: dict[int, list[bool]] = {}
            for r in results:
                per_event.setdefault(r["event"], []).append(r["tick"])
            # At most one event per interval ticks, on one worker only, even when the event
            # (start, end) goes to both workers.
            assert len(per_event[0]) == len(per_event[7]) == 2
            assert all(sum(ticks) <= 1 for ticks in per_event.values()), per_event
            assert sum(per_event[0]) == 1

    run(go())


def test_close_runs_at_shutdown_and_context_survives_scans() -> None:
    from tests.runtime import payloads

    async def go() -> None:
        payloads.CLOSED.clear()
        async with pipeline(
            [("cam", "STINS")],
            "tests.runtime.payloads:ClosingWorker",
            "tests.runtime.payloads:ClosingReducer",
            workers=(("generic",),),
        ) as p:
            for seed in (1, 2):
                msgs, _ = stins_scan(2, seed=seed)
                await p.scheduler.arm({"cam": [[{"constraint": 0}]] * 2})
                await p.send("cam", msgs)
                scan = await p.scheduler.wait(20)
                assert scan is not None and scan.state == "finished"
            assert payloads.CLOSED == []
        # One instance per scan, one context per process: the second scan saw the first's.
        assert sorted(payloads.CLOSED) == ["reducer", "worker opened=2"]

    run(go())


def test_late_acknowledgements_keep_their_own_scan_number() -> None:
    from tango_dranspose.runtime.messages import Done, Message
    from tango_dranspose.runtime.worker import WorkerService

    async def go() -> None:
        worker = WorkerService("w", "tcp://127.0.0.1:9", W)
        sent: list[Message] = []
        worker.send_nowait = sent.append  # type: ignore[method-assign]
        # A flush timed during scan 1 fires after scan 2's first events were done.
        worker._done = [(1, 7, True, 3), (2, 0, True, 0), (2, 1, False, -1)]
        worker._flush_done()
        assert [(m.scan, m.events) for m in sent if isinstance(m, Done)] == [
            (1, [(7, True, 3)]),
            (2, [(0, True, 0), (1, False, -1)]),
        ]
        worker.control.close(0)

    run(go())


def test_a_failing_change_callback_is_counted_and_the_scan_completes() -> None:
    async def go() -> None:
        async with pipeline([("cam", "STINS")], W, R) as p:

            def broken() -> None:
                raise RuntimeError("attribute push failed")

            p.scheduler.on_change = broken
            msgs, sums = stins_scan(4)
            await p.scheduler.arm({"cam": [[{"constraint": i % 2}] for i in range(4)]})
            await p.send("cam", msgs)
            scan = await p.scheduler.wait(20)
            assert scan is not None and scan.state == "finished"
            assert p.scheduler.summary()["internal_errors"] > 0
            with p.reducer.publish() as tree:
                assert sorted(r["cam"] for r in tree["results"] if "frame" in r) == sorted(sums)

    run(go())
