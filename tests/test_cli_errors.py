"""Mistakes on the command line give one readable line and exit status 2, never a traceback."""

from __future__ import annotations

import gzip
import io
import pickle
import random
from collections import Counter
from pathlib import Path

import cbor2
import pytest

from tango_dranspose.cli import main


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            [
                "serve",
                "ingester",
                "--name",
                "i",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--stream",
                "oops",
            ],
            "write it as NAME:PROTOCOL=URL",
        ),
        (
            [
                "serve",
                "ingester",
                "--name",
                "i",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--stream",
                "cam:NOPE=pull+tcp://127.0.0.1:1",
            ],
            "unknown protocol 'NOPE'",
        ),
        (
            [
                "serve",
                "worker",
                "--name",
                "w",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--worker-class",
                "no_such_pkg.mod:W",
            ],
            "cannot import 'no_such_pkg.mod'",
        ),
        (
            ["scan", "--client", "tcp://127.0.0.1:1", "--map", "/no/such/map.json"],
            "cannot read the trigger map",
        ),
        (["inspect", "/no/such/file.cbors"], "no such capture file"),
    ],
)
def test_one_clear_line(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_bad_raw_capture_protocol_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tango_dranspose.core.capture import write_raw_capture

    path = tmp_path / "x.cbors"
    write_raw_capture(path, [[b"{}"]])
    assert main(["inspect", f"s:NOPE={path}"]) == 2
    assert "unknown protocol 'NOPE'" in capsys.readouterr().err


# -- malformed captures, maps and parameter files --------------------------------------------

PAYLOAD = """
class Worker:
    def __init__(self, *args, **kwargs):
        pass

    def process_event(self, event, parameters=None, *args, **kwargs):
        return sum(len(sd.frames) for sd in event.streams.values())


class Reducer:
    def __init__(self, *args, **kwargs):
        self.publish = {"frames": 0}

    def process_result(self, result, parameters=None, *args, **kwargs):
        self.publish["frames"] += result.payload
"""


def one_error_line(err: str, command: str) -> str:
    """The single stderr line of a command that refused its input."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tango-dranspose {command}: error: ")
    return lines[0]


def record_spans(blob: bytes) -> list[tuple[int, int]]:
    """Start and end of every top-level CBOR item."""
    view = io.BytesIO(blob)
    decoder = cbor2.CBORDecoder(view)
    spans = []
    while view.tell() < len(blob):
        start = view.tell()
        decoder.decode()
        spans.append((start, view.tell()))
    return spans


def corrupt(rng: random.Random, record: bytes) -> bytes:
    """Flip a bit, overwrite a byte or cut a few bytes out, mostly where the structure is."""
    out = bytearray(record)
    # Record headers, tags, event numbers and stream names are in the first bytes.
    pos = rng.randrange(min(len(out), 64)) if rng.random() < 0.75 else rng.randrange(len(out))
    mode = rng.randrange(3)
    if mode == 0:
        out[pos] ^= 1 << rng.randrange(8)
    elif mode == 1:
        out[pos] = rng.randrange(256)
    else:
        del out[pos : pos + rng.randint(1, 16)]
    return bytes(out)


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """replay options for a payload that only counts frames: damage cannot make it raise."""
    # One directory for the module: a process loads one package of a name.
    directory = tmp_path_factory.mktemp("payload")
    (directory / "fuzzpayload.py").write_text(PAYLOAD)
    return [
        "-w",
        "fuzzpayload:Worker",
        "-r",
        "fuzzpayload:Reducer",
        "--payload-path",
        str(directory),
    ]


CORRUPTIONS_PER_FILE = 50


@pytest.mark.captures
def test_corrupt_records_of_every_shared_capture_give_one_line_and_exit_2(
    captures: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    payload: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seeded: the same corruptions every run; a failure names the file and the case."""
    from tango_dranspose import cli

    # Building the parser is half the time of a case here; one parser parses every case.
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    rng = random.Random(20250611)
    outcomes: Counter[int] = Counter()
    replays = 0
    files = sorted(captures.rglob("*.cbor*"))
    assert files
    for original in files:
        blob = original.read_bytes()
        packed = blob[:2] == b"\x1f\x8b"
        plain = gzip.decompress(blob) if packed else blob
        # The first records are enough to damage, and keep the large captures quick to read.
        spans = record_spans(plain)[:12]
        while len(spans) > 3 and spans[-1][1] > 600_000:
            spans.pop()
        plain = plain[: spans[-1][1]]
        target = tmp_path / original.name
        for case in range(CORRUPTIONS_PER_FILE):
            start, end = rng.choice(spans)
            damaged = plain[:start] + corrupt(rng, plain[start:end]) + plain[end:]
            target.write_bytes(gzip.compress(damaged, compresslevel=1) if packed else damaged)
            command = ["inspect", str(target)]
            if case % 10 == 0:
                command = ["replay", *payload, "-f", str(target)]
                replays += 1
            code = main(command)
            out, err = capsys.readouterr()
            where = f"{original.name} case {case}"
            assert code in (0, 2), f"{where}: exit {code}\n{out}\n{err}"
            if code == 2:
                one_error_line(err, command[0])
            else:  # the damage hit frame content, or the file now ends inside a record
                assert err == "" and "Traceback" not in out, where
            outcomes[code] += 1
    assert replays == len(files) * CORRUPTIONS_PER_FILE // 10
    # Most damage to a record's structure must be caught, not pass as content.
    assert outcomes[2] > 0.25 * sum(outcomes.values()), outcomes


def test_a_broken_record_start_in_a_dump_names_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: list[str]
) -> None:
    from tango_dranspose.core.capture import DumpWriter
    from tango_dranspose.core.events import StreamData

    clean = tmp_path / "clean.cbors"
    with DumpWriter(clean) as w:
        for i in range(6):
            w.write(i, {"cam": StreamData("STINS", [b'{"htype": "image"}', b"\x00" * 8])})
    blob = clean.read_bytes()
    spans = record_spans(blob)
    for index, (start, _) in enumerate(spans):
        bad = tmp_path / f"bad{index}.cbors.gz"
        bad.write_bytes(gzip.compress(blob[:start] + b"\xff" + blob[start + 1 :]))
        for command in (["inspect", str(bad)], ["replay", *payload, "-f", str(bad)]):
            assert main(command) == 2
            line = one_error_line(capsys.readouterr().err, command[0])
            assert f"{bad} record {index} (at byte {start} of the uncompressed data)" in line


@pytest.mark.parametrize(
    ("frames", "words"),
    [("text", "are not byte strings"), (["text"], "are not byte strings"), (-3, "not byte")],
)
def test_well_formed_cbor_of_the_wrong_shape_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], frames: object, words: str
) -> None:
    path = tmp_path / "d.cbors"
    path.write_bytes(
        cbor2.dumps(cbor2.CBORTag(42877, [0, {"s": cbor2.CBORTag(42878, ["STINS", frames])}]))
    )
    assert main(["inspect", str(path)]) == 2
    assert words in one_error_line(capsys.readouterr().err, "inspect")


def deep_json(depth: int) -> str:
    return '{"cam": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [70, 200_000])
def test_a_deeply_nested_map_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: list[str], depth: int
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(deep_json(depth))
    # scan reads the map before it connects: nothing listens on port 1.
    assert main(["scan", "--client", "tcp://127.0.0.1:1", "--map", str(deep)]) == 2
    assert "nested more than 64 levels deep" in one_error_line(capsys.readouterr().err, "scan")
    capture = tmp_path / "x.cbors"
    capture.write_bytes(b"")
    args = ["replay", *payload, "-f", str(capture), "--map", str(deep)]
    assert main(args) == 2
    assert "nested more than 64 levels deep" in one_error_line(capsys.readouterr().err, "replay")


def test_a_binary_map_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: list[str]
) -> None:
    bad = tmp_path / "map.json"
    bad.write_bytes(b"\xff\xfe\xfd\x00\x01")
    capture = tmp_path / "x.cbors"
    capture.write_bytes(b"")
    for args in (
        ["replay", *payload, "-f", str(capture), "--map", str(bad)],
        ["scan", "--client", "tcp://127.0.0.1:1", "--map", str(bad)],
    ):
        assert main(args) == 2
        assert "not valid JSON" in one_error_line(capsys.readouterr().err, args[0])


def test_parameter_files_by_content_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: list[str]
) -> None:
    from tango_dranspose.examples.demo_data import write_demo_scan

    scan = write_demo_scan(tmp_path / "scan.cbors", frames=4)
    base = ["replay", *payload, "-f", str(scan)]
    items = [{"name": "roi", "data": "[1, 2, 3, 4]"}]
    cbor_named_pkl = tmp_path / "cbor.pkl"
    cbor_named_pkl.write_bytes(cbor2.dumps(items))
    for trust in ([], ["--trust-pickle"]):
        assert main([*base, "-p", str(cbor_named_pkl), *trust]) == 0
        assert "Traceback" not in capsys.readouterr().err
    real_pickle = tmp_path / "params.json"
    real_pickle.write_bytes(pickle.dumps(items))
    assert main([*base, "-p", str(real_pickle)]) == 2
    assert "--trust-pickle" in one_error_line(capsys.readouterr().err, "replay")
    assert main([*base, "-p", str(real_pickle), "--trust-pickle"]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps(items)[:-9])
    assert main([*base, "-p", str(broken), "--trust-pickle"]) == 2
    assert "not a readable pickle" in one_error_line(capsys.readouterr().err, "replay")
