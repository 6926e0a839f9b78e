from __future__ import annotations

import pytest

from tango_dranspose.core.assignment import Assigner, NotEnoughWorkers, WorkerSpec, check_workers
from tango_dranspose.core.triggermap import TriggerMap

G = frozenset({"generic"})
D = frozenset({"debug"})


def c(n: int | None, tag: str = "generic") -> dict:
    return {"constraint": n, "tags": [tag]}


def drive(assigner: Assigner, ready_order: list[str]) -> list:
    out = []
    order = list(ready_order)
    while not assigner.done:
        item = assigner.next()
        if item is None:
            if assigner.done:
                break
            assigner.ready(order.pop(0))
            continue
        out.append(item)
    return out


def worked_example_map() -> TriggerMap:
    return TriggerMap.from_json(
        {
            "eiger": [[c(1)], [c(1)], [c(3)], [c(3)], [c(5)]],
            "pcap": [[c(1)], [], [c(3)], [], [c(5), c(None, "debug")]],
            "slow": [None, None, [c(None)], None, None],
        }
    )


def test_worked_example_of_the_compat_reference() -> None:
    workers = [WorkerSpec("w1", G), WorkerSpec("w2", G), WorkerSpec("dbg", D)]
    got = drive(Assigner(worked_example_map(), workers, slots=1), ["w1", "w2", "dbg"] * 10)
    table = {a.event_number: {s: set(ws) for s, ws in a.streams.items()} for a in got}
    everyone = {"w1", "w2", "dbg"}
    assert table[0] == {"eiger": everyone, "pcap": everyone, "slow": everyone}
    assert table[1] == {"eiger": {"w1"}, "pcap": {"w1"}}
    assert table[2] == {"eiger": {"w1"}, "pcap": set()}
    assert table[3] == {"eiger": {"w2"}, "pcap": {"w2"}, "slow": {"w1", "w2"}}
    assert table[4] == {"eiger": {"w2"}, "pcap": set()}
    assert table[5] == {"eiger": {"w2"}, "pcap": {"w2", "dbg"}}
    assert table[6] == table[0]
    reads = {s: sum(1 for a in got if s in a.streams) for s in ("eiger", "pcap", "slow")}
    assert reads == {"eiger": 7, "pcap": 7, "slow": 3}
    assert sum(1 for a in got if a.streams.get("pcap") == ()) == 2


def test_pairs_reach_the_same_worker_and_each_worker_sees_increasing_events() -> None:
    n = 40
    m = TriggerMap.from_json({"cam": [[c(i // 2)] for i in range(n)]})
    got = list(Assigner(m, [WorkerSpec(f"w{i}") for i in range(3)], slots=2))
    owner = {a.event_number: a.streams["cam"] for a in got[1:-1]}
    for i in range(0, n, 2):
        assert owner[i + 1] == owner[i + 2]
    per_worker: dict[str, list[int]] = {}
    for a in got:
        for w in a.workers:
            per_worker.setdefault(w, []).append(a.event_number)
    assert all(v == sorted(v) for v in per_worker.values())
    assert len(per_worker) == 3


def test_bound_constraint_waits_for_its_busy_worker() -> None:
    m = TriggerMap.from_json({"cam": [[c(0)], [c(0)], [c(1)]]}, wrap=False)
    a = Assigner(m, [WorkerSpec("w1"), WorkerSpec("w2")], slots=1)
    first = a.next()
    assert first is not None and first.streams["cam"] == ("w1",)
    assert a.next() is None  # w1 busy; event 1 must wait for it rather than go elsewhere
    a.ready("w2")
    assert a.next() is None
    a.ready("w1")
    second = a.next()
    assert second is not None and second.streams["cam"] == ("w1",)


def test_constraints_rebind_per_occurrence() -> None:
    m = TriggerMap.from_json(
        {"parts": {"p": {"s": [[c(0)], [c(0)]]}}, "sequence": ["p", "p", "p"]}, wrap=False
    )
    got = list(Assigner(m, [WorkerSpec("a"), WorkerSpec("b")], slots=1))
    owners = [a.streams["s"][0] for a in got]
    assert owners[0] == owners[1] and owners[2] == owners[3] and owners[4] == owners[5]
    assert {owners[0], owners[2]} == {"a", "b"}


def test_refuses_too_few_workers_and_missing_tags() -> None:
    m = TriggerMap.from_json({"a": [[c(1), c(2), c(3)]]})
    with pytest.raises(NotEnoughWorkers, match=r"3 distinct constraints.*2 worker"):
        check_workers(m, [WorkerSpec("x"), WorkerSpec("y")])
    d = TriggerMap.from_json({"a": [[c(1, "debug")]]})
    with pytest.raises(NotEnoughWorkers, match=r"\['debug'\]"):
        check_workers(d, [WorkerSpec("x")])


def test_tags_are_checked_when_binding() -> None:
    m = TriggerMap.from_json({"a": [[c(1, "debug")], [c(2)]]}, wrap=False)
    got = list(Assigner(m, [WorkerSpec("gen", G), WorkerSpec("dbg", D | G)], slots=1))
    assert got[0].streams["a"] == ("dbg",)
    assert got[1].streams["a"] == ("gen",)
