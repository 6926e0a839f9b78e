"""``dranspose.protocol``: the names payloads import from it."""

from tango_dranspose.core.events import EventNumber, ParameterName, StreamName, WorkerName
from tango_dranspose.core.parameters import WorkParameter
from tango_dranspose.core.states import IngesterState, ReducerState, WorkerState
from tango_dranspose.core.triggermap import VirtualWorker

__all__ = [
    "EventNumber",
    "IngesterState",
    "ParameterName",
    "ReducerState",
    "StreamName",
    "VirtualWorker",
    "WorkParameter",
    "WorkerName",
    "WorkerState",
]
