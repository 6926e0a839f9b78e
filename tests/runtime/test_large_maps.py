"""A large trigger map is compiled off the scheduler's loop: the services never look dead."""

from __future__ import annotations

import asyncio

import pytest

from tango_dranspose.core import triggermap
from tango_dranspose.runtime.scheduler import ArmError
from tests.runtime.pipeline import pipeline, run

WORKER = "tests.runtime.payloads:FrameSumWorker"
REDUCER = "tests.runtime.payloads:CollectReducer"


def test_a_million_cell_map_arms_while_every_service_stays_alive() -> None:
    cells = [[{"constraint": i // 2}] for i in range(1_000_000)]

    async def main() -> None:
        async with pipeline([("cam", "STINS")], WORKER, REDUCER) as p:
            sched = p.scheduler
            samples: list[bool] = []

            async def watch() -> None:
                while True:
                    samples.append(all(c.alive for c in sched.components.values()))
                    await asyncio.sleep(0.05)

            watcher = asyncio.ensure_future(watch())
            scan_id = await sched.arm({"cam": cells}, scan_id="big")
            watcher.cancel()
            assert scan_id == "big"
            assert sched.scan is not None and len(sched.scan.tmap) == 1_000_002
            # The loop kept running during the compile (it sampled), and nobody looked dead.
            assert len(samples) >= 3, samples
            assert all(samples)
            await sched.stop("aborted")

    run(main(), 180)


def test_a_map_beyond_the_limit_is_refused_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triggermap, "MAX_CELLS", 1000)

    async def main() -> None:
        async with pipeline([("cam", "STINS")], WORKER, REDUCER) as p:
            with pytest.raises(ArmError, match=r"1,001 cells, more than the 1,000 accepted"):
                await p.scheduler.arm({"cam": [[{"constraint": 0}]] * 1001})
            # and the pipeline is usable: a small map arms
            assert await p.scheduler.arm({"cam": [[{"constraint": 0}]]}, scan_id="small")
            await p.scheduler.stop("aborted")

    run(main(), 60)
