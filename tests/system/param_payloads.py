"""A reducer with a ``parameter_class`` (dranspose's newest form), for the parameter tests
(importable as tests.system.param_payloads).

It is :class:`tests.system.payloads.ScaleReducer` with its parameters as a pydantic model:
``scale`` and ``label`` as before, and ``roi``, a tuple, which the controller carries as JSON
text (``param_roi``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from tango_dranspose.core.parameters import WorkParameter
from tests.system.payloads import ScaleReducer


class Settings(BaseModel):
    scale: float = Field(1.0, description="factor applied to frames")
    label: str = "none"
    roi: tuple[int, int] = Field((0, 8), description="first and last row to sum")


class RoiScaleReducer(ScaleReducer):
    parameter_class = Settings

    def process_result(self, result: Any, parameters: Any = None) -> None:
        super().process_result(result, {"scale": WorkParameter("scale", parameters.scale)})
        self.publish["roi"] = list(parameters.roi)

    def finish(self, parameters: Any = None) -> None:
        super().finish()
