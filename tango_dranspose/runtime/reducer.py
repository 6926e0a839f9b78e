"""Reducer service: runs the user's ``process_result`` sequentially, ``timer`` periodically and
``finish`` once every result of the scan has been reduced (or at once when it was stopped).

Results are decoded (never unpickled) on the reducer's thread, so the event loop only moves
bytes. The publish tree is read under the payload's ``publish_rlock`` by whoever shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tango_dranspose.core.events import ResultData
from tango_dranspose.core.h5tree import write_file
from tango_dranspose.core.parameters import ParameterSet
from tango_dranspose.core.payload import ReducerPayload
from tango_dranspose.core.resultcodec import (
    ClassAllowList,
    ResultDecodeError,
)
from tango_dranspose.core.resultcodec import (
    decode as decode_result,
)
from tango_dranspose.core.scan import ArmRefused, check_scan_id
from tango_dranspose.runtime import transport
from tango_dranspose.runtime.messages import (
    Arm,
    Armed,
    Finish,
    Finished,
    Hello,
    Message,
    Reduced,
    SetParameters,
    decode_parameters,
)
from tango_dranspose.runtime.resultfile import ScanRecord, VersionRecord, write_record
from tango_dranspose.runtime.service import PayloadService
from tango_dranspose.runtime.stats import ByteBudget

REPORT_INTERVAL = 0.05
MAX_QUEUED_BYTES = 256 << 20  # results received and not reduced yet, at most (default)


@dataclass
class _Scan:
    number: int
    scan_id: str
    params: dict[str, Any]
    output: Path | None
    allow: ClassAllowList
    payload: ReducerPayload | None = None
    results: int = 0
    expected: int | None = None
    finishing: str | None = None
    finished: bool = False
    done: bool = False  # finish() ran and the file is written: the publish tree is final
    record: ScanRecord | None = None
    # Parameters of each version by hash, for results computed with it (thread-owned).
    by_hash: dict[str, dict[str, Any]] = field(default_factory=dict)
    written_at: float = 0.0
    # Events reduced, by origin (the worker first given the event): a result of an event sent
    # again after its worker died is reduced once, whoever computed it.
    seen: dict[str, set[int]] = field(default_factory=dict)
    duplicates: int = 0
    received: dict[str, int] = field(default_factory=dict)  # worker -> last results message


def result_path(
    metadata: dict[str, Any],
    scan_id: str,
    output_dir: Path | None,
    allowed: Sequence[Path] | None = None,
) -> Path | None:
    """Where a scan's result file goes: the scan's ``output`` (the Arm's ``output_file``) if it
    names one; else beside the raw data (``scan_dir``/``scan_file`` stem + ``_processed.h5``, as
    Sardana describes a scan); else ``output_dir``/SCANID_processed.h5; else nowhere.

    Raises ArmRefused, one sentence, when the scan id is not a name; when ``output`` or
    ``scan_dir`` does not resolve (symlinks followed) inside one of ``allowed`` (None: anywhere,
    for a caller that arms its own scans in-process, as the replay does; ``output_dir`` itself
    is the reducer's own configuration and needs no permission); or when the file exists and
    the metadata does not say ``"overwrite": true``.
    """
    check_scan_id(scan_id)
    target: Path | None = None
    scan_dir, scan_file = metadata.get("scan_dir"), metadata.get("scan_file")
    if isinstance(scan_file, list):
        scan_file = scan_file[0] if scan_file else None
    if metadata.get("output"):
        given = str(metadata["output"])
        path = Path(given)
        if not path.is_absolute():
            # Relative to the result directory: the working directory of a server is its
            # payload's repository, which means nothing to whoever armed the scan.
            path = (output_dir or Path.cwd()) / path
        target = _confined("output_file", given, path, allowed)
    elif scan_dir and scan_file:
        where = _confined("scan_dir", str(scan_dir), Path(str(scan_dir)), allowed, directory=True)
        target = where / f"{Path(str(scan_file)).stem}_{scan_id}_processed.h5"
        # The name itself may be a symlink out of the directory.
        _confined("the result file", str(target), target, allowed)
    elif output_dir is not None:
        target = output_dir / f"{scan_id}_processed.h5"
    if target is None:
        return None
    if os.path.isdir(target):
        raise ArmRefused(f"the result file {target} is a directory")
    if os.path.lexists(target) and metadata.get("overwrite") is not True:
        raise ArmRefused(
            f'the result file {target} exists already; arm with "overwrite": true in the '
            "metadata to replace it"
        )
    return target


def _confined(
    what: str, given: str, path: Path, allowed: Sequence[Path] | None, *, directory: bool = False
) -> Path:
    """``path`` (absolute), unless it resolves outside every directory of ``allowed`` (a file
    strictly inside one; a ``directory`` may be one of them)."""
    if "\x00" in str(path):
        raise ArmRefused(f"{what} {given!r} is refused: it contains a NUL character")
    if allowed is None:
        return path
    real = Path(os.path.realpath(path))
    for permitted in allowed:
        top = Path(os.path.realpath(permitted))
        if real.is_relative_to(top) and (directory or real != top):
            return path
    where = given if str(real) == given else f"{given} (which resolves to {real})"
    if not allowed:
        raise ArmRefused(
            f"{what} {where} is refused: this reducer allows no result directory (its "
            "AllowedResultDirs property, or --allowed-result-dir)"
        )
    dirs = ", ".join(str(d) for d in allowed)
    raise ArmRefused(f"{what} {where} is outside the reducer's allowed result directories ({dirs})")


class ReducerService(PayloadService):
    kind = "reducer"
    data_hwm = 8  # result batches waiting in the socket: the byte budget is the real bound

    def __init__(
        self,
        name: str,
        scheduler: str,
        reducer_class: str,
        *,
        bind: str = "tcp://127.0.0.1:0",
        search: list[str] | None = None,
        output_dir: str | None = None,
        write_interval: float | None = 10.0,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        allowed_result_dirs: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            name, scheduler, reducer_class, bind=bind, search=search, queue_size=10_000
        )
        self.budget = ByteBudget(max_queued_bytes)
        # Absolute now: a server may make the payload's repository its working directory.
        self.output_dir = Path(output_dir).absolute() if output_dir else None
        # Where an Arm's output_file or scan_dir may place the result file; None: anywhere
        # (only for a caller that arms its own scans in-process; servers always pass a list).
        self.allowed_result_dirs = (
            None
            if allowed_result_dirs is None
            else tuple(Path(d).absolute() for d in allowed_result_dirs)
        )
        self.write_interval = write_interval  # seconds between rewrites of the file mid-scan
        self.scan: _Scan | None = None
        self.results = 0
        self.errors = 0
        self.rejected = 0
        self.stale = 0
        self.last_error: str | None = None
        self.last_output: str | None = None
        self._last_report = 0.0

    def hello(self) -> Hello:
        return Hello(kind="reducer", **self.hello_fields())

    @property
    def scan_active(self) -> bool:
        return self.scan is not None and not self.scan.done

    def counters(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "errors": self.errors,
            "rejected": self.rejected,
            "stale": self.stale,
            "last_error": self.last_error,
            "scan": self.scan.number if self.scan else None,
            "output": self.last_output,
            "duplicates": self.scan.duplicates if self.scan else 0,
            "queued_bytes": self.budget.used,
            "queued_bytes_peak": self.budget.peak,
        }

    @contextlib.contextmanager
    def publish(self) -> Iterator[Any]:
        """The current publish tree, held under the payload's lock while the caller reads."""
        scan = self.scan
        if scan is None or scan.payload is None:
            yield None
            return
        with scan.payload.reading() as tree:
            yield tree

    # -- control -------------------------------------------------------------------------

    async def handle(self, msg: Message) -> None:
        if isinstance(msg, Arm):
            raw = decode_parameters(msg.parameters)
            self.learn_descriptions(msg.descriptions)
            try:
                params = ParameterSet(self.all_descriptions, raw).as_dict()
            except ValueError as exc:
                await self.send(Armed(scan=msg.scan, ok=False, error=str(exc)))
                return
            try:
                output = result_path(
                    msg.metadata, msg.scan_id, self.output_dir, self.allowed_result_dirs
                )
            except ArmRefused as exc:
                self.log.warning("refusing scan %r: %s", msg.scan_id, exc)
                await self.send(Armed(scan=msg.scan, ok=False, error=str(exc)))
                return
            # Results may carry dataclasses and models of the payload packages, and our own
            # message models and event containers; nothing else is ever instantiated.
            specs = [self.payload_spec, *msg.metadata.get("worker_payloads", [])]
            packages = {spec.split(":")[0].split(".")[0] for spec in specs if isinstance(spec, str)}
            allow = ClassAllowList(
                prefixes=(
                    *sorted(packages),
                    "tango_dranspose.streams",
                    "tango_dranspose.core.events",
                )
            )
            scan = _Scan(msg.scan, msg.scan_id, params, output, allow)
            scan.by_hash[msg.parameters_hash] = params
            scan.record = ScanRecord(msg.scan_id, dict(msg.metadata))
            scan.record.versions[msg.parameters_hash] = VersionRecord(
                msg.parameters_version, msg.parameters_hash, raw
            )
            done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._work.put(("arm", scan, done))
            error = await done
            if error is None:
                self.scan = scan
            await self.send(Armed(scan=msg.scan, ok=error is None, error=error))
        elif isinstance(msg, SetParameters):
            current = self.scan
            if current is not None and msg.scan == current.number:
                self._work.put(("params", current, msg))
        elif isinstance(msg, Finish):
            current = self.scan
            if current is None or msg.scan != current.number:
                return
            if current.record is not None:
                current.record.ledger = dict(msg.ledger)
                current.record.accounting = dict(msg.accounting)
            self._work.put(("finish", current, msg.reason, msg.expected_results))

    # -- data ----------------------------------------------------------------------------

    async def _data_loop(self) -> None:
        data = transport.FastSocket(self.data)
        while True:
            for frames in await data.recv_batch():
                await self._receive(frames)

    async def _receive(self, frames: list[Any]) -> None:
        scan = self.scan
        try:
            scan_no, worker, phash, table, seq = transport.unpack_result_header(frames[0].buffer)
            if sum(n for _, n, _ in table) != len(frames) - 1:
                raise ValueError("frame count does not match the header")
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            self.rejected += 1
            self.log.warning("dropping malformed result message: %s", exc)
            return
        if scan is None or scan_no != scan.number or scan.finished:
            self.stale += len(table)
            return
        if seq > scan.received.get(worker, -1):
            # Confirmed to the scheduler with the next report: these results need not be
            # computed again if their worker dies now.
            scan.received[worker] = seq
        results = []
        pos = 1
        for event, count, origin in table:
            results.append((event, origin, frames[pos : pos + count]))
            pos += count
        size = sum(len(f.buffer) for f in frames[1:])
        item = ("results", scan, worker, phash, results, size)
        loop = asyncio.get_running_loop()
        if not self.budget.try_take(size):
            # The reducer is behind: wait without blocking the loop, which stops reading and
            # lets the workers' sockets fill up (back-pressure all the way to the detector).
            await loop.run_in_executor(None, self.budget.take, size)
        try:
            self._work.put_nowait(item)
        except queue.Full:
            await loop.run_in_executor(None, self._work.put, item)

    # -- reducing thread -----------------------------------------------------------------

    def _thread_main(self) -> None:
        next_timer = time.monotonic() + 1.0
        # A report skipped for its rate limit is sent when due: the scheduler completes a scan
        # only once the last results are confirmed received.
        report_due: float | None = None
        while True:
            wake = next_timer if report_due is None else min(next_timer, report_due)
            try:
                item = self._work.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                if report_due is not None and time.monotonic() < next_timer:
                    report_due = None
                    self._report(self.scan, force=True)
                    continue
                item = ("timer",)
            if item is None:
                self.close_payload(self.scan.payload if self.scan else None)
                break
            scan = self.scan
            what = item[0]
            if what == "arm":
                self.call_soon(item[2].set_result, self._construct(item[1]))
                next_timer = time.monotonic()
                continue
            if what == "timer":
                if (
                    scan is not None
                    and scan.payload is not None
                    and not scan.finished
                    and scan.payload.has_timer
                ):
                    next_timer = time.monotonic() + self._run(
                        "timer", scan, lambda s=scan: s.payload.timer(s.params), 1.0
                    )
                else:
                    next_timer = time.monotonic() + 1.0
                report_due = None if self._report(scan, force=False) else report_due
                self._write_periodically(scan)
                continue
            if what == "params":
                self._add_version(item[1], item[2])
                continue
            if what == "results":
                _, rscan, worker, phash, results, size = item
                for event, origin, frames in results:
                    if rscan.finished:
                        break
                    seen = rscan.seen.setdefault(origin, set())
                    if event in seen:
                        rscan.duplicates += 1
                        continue
                    seen.add(event)
                    self._reduce(rscan, event, worker, phash, frames)
                self.budget.give(size)
            elif what == "finish":
                _, fscan, reason, expected = item
                fscan.finishing = reason
                fscan.expected = expected
            for s in (scan, item[1]):
                if s is not None:
                    self._maybe_finish(s)
            if self._report(scan, force=False):
                report_due = None
            elif report_due is None:
                report_due = self._last_report + REPORT_INTERVAL

    def _construct(self, scan: _Scan) -> str | None:
        try:
            scan.payload = ReducerPayload(
                self.cls, parameters=scan.params, context=self.context, state=None
            )
        except Exception as exc:
            return f"{self.payload_spec}: {exc}"
        return None

    def _run(self, what: str, scan: _Scan, fn: Any, default: Any = None) -> Any:
        try:
            return fn()
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{what}: {type(exc).__name__}: {exc}"
            self.log.error("%s failed\n%s", what, traceback.format_exc())
            return default

    def _reduce(self, scan: _Scan, event: int, worker: str, phash: str, frames: list[Any]) -> None:
        assert scan.payload is not None
        scan.results += 1
        self.results += 1
        try:
            payload = decode_result(frames, scan.allow)
        except ResultDecodeError as exc:
            self.rejected += 1
            self.last_error = f"event {event} from {worker}: {exc}"
            self.log.error("rejected a result: %s", self.last_error)
            return
        result = ResultData(event, worker, payload, phash)
        # A result is reduced with the parameters it was computed with.
        params = scan.by_hash.get(phash, scan.params)
        if scan.record is not None and phash in scan.record.versions:
            scan.record.versions[phash].count(event)
        self._run(
            f"process_result (event {event})",
            scan,
            lambda: scan.payload.process_result(result, params),
        )

    def _add_version(self, scan: _Scan, msg: SetParameters) -> None:
        raw = decode_parameters(msg.parameters)
        try:
            params = ParameterSet(self.all_descriptions, raw).as_dict()
        except ValueError as exc:
            self.errors += 1
            self.last_error = f"parameters version {msg.version}: {exc}"
            self.log.error("cannot use %s", self.last_error)
            return
        scan.by_hash[msg.hash] = params
        scan.params = params  # timer and finish see the newest values
        if scan.record is not None:
            scan.record.versions[msg.hash] = VersionRecord(
                msg.version, msg.hash, raw, from_event=msg.from_event
            )

    def _write(self, scan: _Scan, complete: bool) -> str | None:
        """Write the result file (publish tree and record); returns its path."""
        payload = scan.payload
        if scan.output is None or payload is None:
            return None
        record = scan.record
        if record is not None:
            record.end_reason = scan.finishing if complete else None
        with payload.reading() as tree:
            if tree is None:
                return None
            extra = None if record is None else (lambda f: write_record(f, record, complete))
            write_file(scan.output, tree, extra=extra)
        scan.written_at = time.monotonic()
        return str(scan.output)

    def _write_periodically(self, scan: _Scan | None) -> None:
        if scan is None or scan.finished or not self.write_interval or scan.results == 0:
            return
        if time.monotonic() - scan.written_at < self.write_interval:
            return
        try:
            self._write(scan, complete=False)
        except Exception as exc:
            self.errors += 1
            self.last_error = f"writing {scan.output}: {exc}"
            self.log.exception("writing the result file failed")
        scan.written_at = time.monotonic()  # a failing disk is retried at the same pace

    def _maybe_finish(self, scan: _Scan) -> None:
        if scan.finished or scan.finishing is None:
            return
        if (
            scan.finishing == "complete"
            and scan.expected is not None
            and scan.results < scan.expected
        ):
            return
        scan.finished = True
        payload = scan.payload
        if payload is not None:
            if payload.has_timer:
                self._run("timer", scan, lambda: payload.timer(scan.params))
            self._run("finish", scan, lambda: payload.finish(scan.params))
        written = None
        if scan.output is not None and payload is not None:
            try:
                written = self._write(scan, complete=True)
            except Exception as exc:
                self.errors += 1
                self.last_error = f"writing {scan.output}: {exc}"
                self.log.exception("writing the result file failed")
        self.last_output = written
        scan.done = True
        self._report(scan, force=True)
        summary = {
            "results": scan.results,
            "errors": self.errors,
            "output": written,
            "reason": scan.finishing,
            "duplicates": scan.duplicates,
        }
        self.call_soon(
            self.send_nowait, Finished(scan=scan.number, kind="reducer", summary=summary)
        )
        self.call_soon(self.changed)  # the final publish tree and result file are there now

    def _report(self, scan: _Scan | None, force: bool) -> bool:
        """Tell the scheduler how far the reducer got; False when the rate limit held it."""
        if scan is None:
            return True
        now = time.monotonic()
        if not force and now - self._last_report < REPORT_INTERVAL:
            return False
        self._last_report = now
        msg = Reduced(
            scan=scan.number,
            results=scan.results,
            errors=self.errors,
            last_error=self.last_error,
            received=dict(scan.received),
        )
        self.call_soon(self.send_nowait, msg)
        self.call_soon(self.changed)
        return True
