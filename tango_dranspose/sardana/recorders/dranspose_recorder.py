"""DransposeRecorder: the scan's records into the pipeline's ``sardana`` stream, live.

Enable it with the MacroServer's ``RecorderPath`` holding this directory and
``senv DataRecorder "['DransposeRecorder']"``. It posts only for scans the pre-scan hook armed
with the Sardana stream (it leaves every other scan alone), to the ingester that serves that
stream: the DataDescription at the scan's start, one RecordData per point, the RecordEnd.
A post that fails stops the posting for that scan with one warning: the scan goes on, and the
pipeline's ledger shows the records as missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sardana.macroserver.scan.recorder.datarecorder import DataRecorder

from tango_dranspose.sardana.records import (
    Poster,
    PostError,
    data_description,
    record_data,
    record_end,
)


class DransposeRecorder(DataRecorder):
    """Posts the scan's records to the pipeline armed for the scan (``sardana`` stream)."""

    def __init__(self, macro: Any = None, **kwargs: Any) -> None:
        DataRecorder.__init__(self, **kwargs)
        self.macro = macro
        self.poster: Poster | None = None

    def _url(self) -> str | None:
        armed = getattr(self.macro, "_dranspose", None)
        url = getattr(armed, "sardana_url", None)
        return str(url) if url else None

    def _startRecordList(self, recordlist: Any) -> None:
        url = self._url()
        if url is None:
            return
        self.poster = Poster(url)
        self._post(lambda: data_description(recordlist.getEnviron()))

    def _writeRecord(self, record: Any) -> None:
        if self.poster is not None:
            self._post(lambda: record_data(record.data))

    def _endRecordList(self, recordlist: Any) -> None:
        if self.poster is not None:
            self._post(lambda: record_end(recordlist.getEnviron()))
        if self.poster is not None:
            self.poster.close()
            self.poster = None

    def _post(self, make: Callable[[], dict[str, Any]]) -> None:
        """Post what ``make`` builds; any failure stops the posting with one warning (the
        user's scan goes on: the pipeline's ledger shows the missing records)."""
        assert self.poster is not None
        try:
            self.poster.post(make())
        except Exception as exc:
            posted = self.poster.posted
            self.poster.close()
            self.poster = None
            reason = str(exc) if isinstance(exc, PostError) else f"{type(exc).__name__}: {exc}"
            message = (
                f"dranspose: the Sardana records stop reaching the pipeline after {posted} "
                f"posts: {reason}"
            )
            try:
                self.macro.warning(message)
            except Exception:
                self.warning(message)
