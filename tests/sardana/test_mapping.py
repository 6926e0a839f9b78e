"""The trigger map and Arm request of a Sardana scan, without Sardana."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tango_dranspose.core.triggermap import TriggerMap
from tango_dranspose.runtime.armrequest import parse_arm_request
from tango_dranspose.sardana.mapping import (
    Channel,
    MappingError,
    Motor,
    PipelineSettings,
    ScanInfo,
    StreamSpec,
    count_events,
    mesh_shape,
    parse_bool,
    parse_streams,
    plan_arm,
    scan_kind,
    scan_points,
    select_streams,
    trigger_map,
)

CT = [Channel("ct01", "tango://h:1/expchan/ctctrl01/1"), Channel("ct02", "tango://h:1/e/c/2")]
CAM = Channel("cam", "tango://h:1/expchan/ctctrl01/3")


def ascan(n: int = 10, channels: list[Channel] | None = None, **kw: Any) -> ScanInfo:
    return ScanInfo(
        macro="ascan",
        nb_points=n + 1,
        scan_id=7,
        title=f"ascan mot01 0.0 10.0 {n} 0.1",
        motors=[Motor("mot01", 0.0, 10.0)],
        integ_time=0.1,
        scan_dir="/data/scans",
        scan_file=["scans.h5"],
        measurement_group="mg01",
        channels=[*CT, CAM] if channels is None else channels,
        **kw,
    )


def events(tmap: dict[str, Any]) -> list[dict[str, Any]]:
    """Every event of the compiled map: stream -> constraint list (None: no frame)."""
    compiled = TriggerMap.from_json(tmap)
    out = []
    for ev in compiled.iter_events():
        out.append(
            {
                s: None if c is None else [vw.constraint for vw in c]
                for s, c in ev.items()
                if c is not None
            }
        )
    return out


# --- the scan --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("macro", "kind"),
    [
        ("ascan", "step"),
        ("a2scan", "step"),
        ("dscan", "step"),
        ("fscan", "step"),
        ("mesh", "mesh"),
        ("dmesh", "mesh"),
        ("ascanct", "continuous"),
        ("a2scanct", "continuous"),
        ("meshct", "continuous-mesh"),
        ("timescan", "time"),
        ("ascanc", "unknown-length"),
        ("meshc", "unknown-length"),
    ],
)
def test_scan_kind_from_the_macro_name(macro: str, kind: str) -> None:
    assert scan_kind(macro) == kind


def test_points_of_step_mesh_and_continuous_scans() -> None:
    assert scan_points(ascan(10)) == 11
    mesh = ScanInfo("mesh", nb_points=12, nr_intervs=[3, 2])
    assert scan_points(mesh) == 12
    assert mesh_shape(mesh) == [3, 4]
    # meshct gives nb_points per line; the lines are m2 intervals + 1.
    meshct = ScanInfo("meshct", nb_points=5, nr_intervs=[4, 2])
    assert scan_points(meshct) == 15
    assert mesh_shape(meshct) == [3, 5]
    assert scan_points(ScanInfo("ascanct", nb_points=101)) == 101
    assert mesh_shape(ascan()) is None


def test_a_scan_whose_length_is_unknown_is_refused_readably() -> None:
    with pytest.raises(MappingError, match=r"ascanc records as many points .* \.\.\.ct"):
        scan_points(ScanInfo("ascanc", nb_points=None))
    with pytest.raises(MappingError, match="does not say how many points"):
        scan_points(ScanInfo("myscan", nb_points=None))
    with pytest.raises(MappingError, match="no point"):
        scan_points(ScanInfo("ascan", nb_points=0))


# --- which channels are streams -----------------------------------------------------------


def test_by_default_channels_named_as_served_streams_are_streams() -> None:
    found = select_streams([*CT, CAM], None, ["cam", "sardana"])
    assert found == [StreamSpec("cam", 1, "cam")]
    assert select_streams([*CT, CAM], None, None) == []


def test_configured_streams_match_label_full_name_or_device_name() -> None:
    by_label = parse_streams({"cam": "eiger"})
    assert select_streams([*CT, CAM], by_label, None) == [StreamSpec("eiger", 1, "cam")]
    by_full = parse_streams({"tango://h:1/expchan/ctctrl01/3": {"stream": "eiger"}})
    assert select_streams([CAM], by_full, None)[0].stream == "eiger"
    by_device = parse_streams({"expchan/ctctrl01/3": {"stream": "e", "frames_per_point": 4}})
    assert select_streams([CAM], by_device, None) == [StreamSpec("e", 4, "cam")]


def test_the_streams_variable_accepts_lists_dicts_and_their_text() -> None:
    assert parse_streams(None) is None
    assert parse_streams("") is None
    assert parse_streams(["cam"]) == {"cam": StreamSpec("cam", 1, "cam")}
    assert parse_streams("cam, pcap") == {
        "cam": StreamSpec("cam", 1, "cam"),
        "pcap": StreamSpec("pcap", 1, "pcap"),
    }
    assert parse_streams('{"twod01": {"stream": "cam", "frames_per_point": 2}}') == {
        "twod01": StreamSpec("cam", 2, "twod01")
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "must be a dict"),
        ({"cam": {"frames_per_point": 0}}, "positive integer"),
        ({"cam": {"frames_per_point": True}}, "positive integer"),
        ({"cam": {"stream": "x", "frames": 2}}, "unknown keys"),
        ({"cam": 3}, "expected a stream name"),
        ([""], "not a channel name"),
    ],
)
def test_bad_streams_settings_say_what_is_wrong(value: Any, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_streams(value)


def test_two_channels_cannot_feed_one_stream() -> None:
    with pytest.raises(MappingError, match="ct01 and ct02 are both stream x"):
        select_streams(CT, {"ct01": StreamSpec("x"), "ct02": StreamSpec("x")}, None)


def test_parse_bool() -> None:
    assert parse_bool("W", None, True) is True
    assert parse_bool("W", "False", True) is False
    assert parse_bool("W", "yes", False) is True
    with pytest.raises(MappingError, match="W must be True or False"):
        parse_bool("W", "maybe", True)


# --- the map ------------------------------------------------------------------------------


def test_one_frame_per_point_and_the_sardana_record_make_one_event_per_point() -> None:
    tmap = trigger_map(3, [StreamSpec("cam")], sardana_stream="sardana")
    assert tmap["sequence"] == ["point"] * 3
    assert "wrap" not in tmap  # on by default, as dranspose maps
    assert count_events(tmap) == 5
    evs = events(tmap)
    assert len(evs) == 5
    for ev in evs[1:-1]:
        assert ev == {"cam": [0], "sardana": [0]}
    # The start and end events give every stream to every worker.
    assert set(evs[0]) == set(evs[-1]) == {"cam", "sardana"}


def test_several_frames_per_point_stay_on_one_worker_and_sardana_is_in_the_first() -> None:
    tmap = trigger_map(
        2, [StreamSpec("eiger", 4), StreamSpec("pcap", 2), StreamSpec("xsp", 1)], wrap=False
    )
    assert count_events(tmap) == 8
    evs = events(tmap)
    assert [sorted(ev) for ev in evs[:4]] == [
        ["eiger", "pcap", "xsp"],
        ["eiger"],
        ["eiger", "pcap"],
        ["eiger"],
    ]
    assert all(c == [0] for ev in evs for c in ev.values())
    compiled = TriggerMap.from_json(tmap)
    assert compiled.frames_per_stream() == {"eiger": 8, "pcap": 4, "xsp": 2}
    assert compiled.min_workers() == 1


def test_event_constraints_spread_the_frames_of_a_point() -> None:
    tmap = trigger_map(1, [StreamSpec("eiger", 3)], wrap=False, constraint="event")
    assert [ev["eiger"] for ev in events(tmap)] == [[0], [1], [2]]


def test_frame_counts_that_do_not_divide_are_refused() -> None:
    with pytest.raises(MappingError, match="3 frames per point and another 4"):
        trigger_map(2, [StreamSpec("a", 4), StreamSpec("b", 3)])


def test_tags_go_into_every_cell() -> None:
    tmap = trigger_map(2, [StreamSpec("cam")], tags=["gpu", "generic"], wrap=False)
    assert tmap["parts"]["point"]["cam"] == [[{"constraint": 0, "tags": ["generic", "gpu"]}]]
    with pytest.raises(MappingError, match="tags"):
        trigger_map(2, [StreamSpec("cam")], tags=[])


def test_a_long_scan_is_a_short_map() -> None:
    tmap = trigger_map(100_000, [StreamSpec("cam")], sardana_stream="sardana")
    assert len(tmap["parts"]["point"]["cam"]) == 1
    assert count_events(tmap) == 100_002
    assert len(json.dumps(tmap)) < 1_200_000


# --- the Arm request ------------------------------------------------------------------------


def test_an_ascan_arms_n_plus_2_events_with_the_scan_metadata() -> None:
    settings = PipelineSettings(available=["cam", "sardana"], parameters={"gain": 2})
    plan = plan_arm(ascan(10), settings)
    assert plan.armed
    assert (plan.points, plan.events) == (11, 13)
    assert [s.stream for s in plan.streams] == ["cam", "sardana"]
    assert plan.sardana_stream == "sardana"
    assert plan.reason == "11 points, 13 events, streams cam, sardana"
    req = parse_arm_request(plan.request_json())
    assert req.scan_id == "7"
    assert req.title == "ascan mot01 0.0 10.0 10 0.1"
    assert req.parameters == {"gain": 2}
    meta = req.metadata
    assert meta["macro"] == "ascan"
    assert meta["kind"] == "step"
    assert meta["motors"] == [{"name": "mot01", "start": 0.0, "final": 10.0}]
    assert meta["points"] == 11
    assert meta["integ_time"] == 0.1
    assert meta["scan_dir"] == "/data/scans" and meta["scan_file"] == ["scans.h5"]
    assert meta["measurement_group"] == "mg01"
    assert meta["channels"] == ["ct01", "ct02", "cam"]
    assert set(meta["streams"]) == {"cam", "sardana"}
    assert len(TriggerMap.from_json(req.map)) == 13


def test_a_mesh_arms_every_point_and_records_its_shape() -> None:
    info = ScanInfo(
        "mesh",
        nb_points=12,
        scan_id=3,
        nr_intervs=[3, 2],
        motors=[Motor("mot01", 0, 3), Motor("mot02", 0, 2)],
        channels=[CAM],
    )
    plan = plan_arm(info, PipelineSettings(available=["cam"]))
    assert plan.events == 14
    assert plan.request is not None
    assert plan.request["metadata"]["shape"] == [3, 4]
    assert [s.stream for s in plan.streams] == ["cam"]  # no Sardana stream served
    assert plan.sardana_stream is None


def test_a_measurement_group_without_pipeline_streams_arms_nothing_and_says_so() -> None:
    plan = plan_arm(ascan(channels=CT), PipelineSettings(available=["cam", "sardana"]))
    assert not plan.armed
    assert "measurement group mg01 has no pipeline stream (channels: ct01, ct02)" in plan.reason
    assert "serves (cam, sardana)" in plan.reason
    assert "DransposeStreams" in plan.reason
    configured = PipelineSettings(streams={"twod01": StreamSpec("cam")}, available=["cam"])
    plan = plan_arm(ascan(channels=CT), configured)
    assert not plan.armed and "DransposeStreams names none of them (twod01)" in plan.reason
    with pytest.raises(MappingError, match="not armed"):
        plan.request_json()


def test_a_configured_stream_the_pipeline_does_not_serve_is_an_error() -> None:
    settings = PipelineSettings(streams={"cam": StreamSpec("eiger")}, available=["cam"])
    with pytest.raises(MappingError, match=r"serves no stream eiger \(it serves: cam\)"):
        plan_arm(ascan(), settings)


def test_without_the_wrap_and_without_the_sardana_stream() -> None:
    settings = PipelineSettings(
        streams=parse_streams({"cam": {"stream": "cam", "frames_per_point": 2}}),
        sardana_stream=None,
        wrap=False,
        record_dir="/tmp/dumps",
    )
    plan = plan_arm(ascan(4), settings)
    assert plan.events == 10
    assert plan.request is not None
    assert plan.request["map"]["wrap"] is False
    assert plan.request["record_dir"] == "/tmp/dumps"
    assert "cam (2/point)" in plan.reason


def test_extra_scan_info_lands_in_the_metadata_without_overriding() -> None:
    info = ascan(2, extra={"macro_id": "-12", "door": "door/x/1", "points": 999})
    plan = plan_arm(info, PipelineSettings(available=["cam"]))
    assert plan.request is not None
    meta = plan.request["metadata"]
    assert meta["macro_id"] == "-12" and meta["door"] == "door/x/1"
    assert meta["points"] == 3


def test_a_relabelled_channel_is_still_found_by_its_alias() -> None:
    relabelled = Channel("Camera", "tango://h:1/expchan/ctctrl01/3", alias="cam")
    assert select_streams([relabelled], None, ["cam"]) == [StreamSpec("cam", 1, "Camera")]
    configured = parse_streams({"cam": "eiger"})
    assert select_streams([relabelled], configured, None) == [StreamSpec("eiger", 1, "Camera")]
