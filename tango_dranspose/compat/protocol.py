"""``dranspose.protocol``: the names payloads import from it.

``WorkerState`` and ``ReducerState`` are the states payloads are constructed with, which carry
dranspose's version fields (``dranspose_version``, ``mapreduce_version``) besides ours.
"""

from tango_dranspose.core.events import EventNumber, ParameterName, StreamName, WorkerName
from tango_dranspose.core.parameters import WorkParameter
from tango_dranspose.core.payload import PayloadReducerState as ReducerState
from tango_dranspose.core.payload import PayloadWorkerState as WorkerState
from tango_dranspose.core.states import IngesterState
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
