"""``dranspose.event``."""

from tango_dranspose.core.events import (
    EventData,
    InternalWorkerMessage,
    ResultData,
    StreamData,
)

__all__ = ["EventData", "InternalWorkerMessage", "ResultData", "StreamData"]
