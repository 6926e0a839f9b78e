"""Sardana's records as the sardana stream's posts, posted to the ingester's own HTTP upstream."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tango_dranspose.sardana.records import (
    MAX_ARRAY,
    Poster,
    PostError,
    data_description,
    plain,
    record_data,
    record_end,
)
from tango_dranspose.sources.http_upstream import HttpUpstream
from tango_dranspose.streams import sardana


class Column:
    """Stands for Sardana's ColumnDesc (it has shape and dtype too, and toDict)."""

    shape = ()
    dtype = "float64"

    def __init__(self, name: str, label: str) -> None:
        self.name, self.label = name, label

    def toDict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "dtype": "float64", "shape": []}


CT = "tango://h:1/expchan/ctctrl01/1"
START = datetime.datetime(2026, 11, 24, 1, 46, 6)
ENV = {
    "serialno": 7,
    "ScanDir": "/data",
    "ScanFile": ["scans.h5"],
    "title": "ascan mot01 0.0 2.0 2 0.1",
    "datadesc": [Column("point_nb", "#Pt No"), Column("mot01", "mot01"), Column(CT, "ct01")],
    "ref_moveables": ["mot01"],
    "estimatedtime": np.float64(1.5),
    "total_scan_intervals": 2,
    "starttime": START,
    "counters": [CT],
    "endtime": START + datetime.timedelta(seconds=3),
    "deadtime": 0.25,
}


def test_plain_values() -> None:
    assert plain(np.float32(1.5)) == 1.5
    assert plain(np.int64(3)) == 3
    assert plain(float("nan")) is None
    assert plain(np.arange(3)) == [0, 1, 2]
    big = np.zeros(MAX_ARRAY + 1)
    assert plain(big) == {"shape": [MAX_ARRAY + 1], "dtype": "float64"}
    assert plain(Column("a", "b"))["label"] == "b"
    assert plain({"t": START}) == {"t": "2026-11-24 01:46:06"}


def test_the_posts_are_what_the_sardana_stream_parses() -> None:
    desc = data_description(ENV)
    parsed = sardana.SardanaPacket.validate_python(desc)
    assert isinstance(parsed, sardana.SardanaDataDescription)
    assert parsed.serialno == 7 and parsed.scandir == "/data"
    assert parsed.labels == {"#Pt No": "point_nb", "mot01": "mot01", "ct01": CT}
    assert parsed.scanfile == ["scans.h5"]
    assert parsed.starttime == START.ctime()
    rec = record_data(
        {"point_nb": np.int64(1), "mot01": np.float64(1.0), CT: 0.1, "timestamp": 0.2}
    )
    parsed_rec = sardana.SardanaPacket.validate_python(rec)
    assert isinstance(parsed_rec, sardana.SardanaRecordData)
    assert parsed_rec.point_nb == 1 and parsed_rec[CT] == 0.1 and parsed_rec["mot01"] == 1.0
    end = sardana.SardanaPacket.validate_python(record_end(ENV))
    assert isinstance(end, sardana.SardanaRecordEnd) and end.deadtime == 0.25
    json.dumps([desc, rec, record_end(ENV)], allow_nan=False)


@pytest.fixture
def upstream() -> Iterator[tuple[HttpUpstream, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    up = HttpUpstream("http://127.0.0.1:0", "127.0.0.1", 0, queue=8)
    asyncio.run_coroutine_threadsafe(up.open(), loop).result(10)
    yield up, loop
    asyncio.run_coroutine_threadsafe(up.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_scan_posted_to_the_ingester_upstream(
    upstream: tuple[HttpUpstream, asyncio.AbstractEventLoop],
) -> None:
    up, loop = upstream
    poster = Poster(up.bound_url)
    posts = [data_description(ENV)]
    posts += [
        record_data({"point_nb": i, "mot01": float(i), "timestamp": i / 10}) for i in range(3)
    ]
    posts.append(record_end(ENV))
    for obj in posts:
        poster.post(obj)
    poster.close()
    assert poster.posted == 5
    framer = sardana.SardanaFramer()
    kinds = []
    for _ in posts:
        message = asyncio.run_coroutine_threadsafe(up.receive(), loop).result(10)
        for framed in framer.feed(message):
            kinds.append(framed.kind.name)
            packet = sardana.parse(framed.data)
            if isinstance(packet, sardana.SardanaRecordData):
                assert packet["mot01"] == float(packet.point_nb)
    assert kinds == ["START", "DATA", "DATA", "DATA", "END"]


def test_a_poster_says_where_and_why_it_failed() -> None:
    with pytest.raises(PostError, match="not an http://host:port"):
        Poster("tcp://127.0.0.1:1")
    from tango_dranspose.deploy.database import free_port

    poster = Poster(f"http://127.0.0.1:{free_port()}", connect_for=0.3)
    with pytest.raises(PostError, match="/v1/data_desc: the ingester does not answer"):
        poster.post(data_description(ENV))
