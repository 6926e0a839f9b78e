"""Console scripts: each device server is ``CLASSNAME INSTANCE`` like any Tango server."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tango.server import run


def _run(cls: Any) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run((cls,))


def controller() -> None:
    from tango_dranspose.devices.controller import DransposeController

    _run(DransposeController)


def ingester() -> None:
    from tango_dranspose.devices.ingester import DransposeIngester

    _run(DransposeIngester)


def worker() -> None:
    from tango_dranspose.devices.worker import DransposeWorker

    _run(DransposeWorker)


def reducer() -> None:
    from tango_dranspose.devices.reducer import DransposeReducer

    _run(DransposeReducer)
