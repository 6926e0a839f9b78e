"""``dranspose.parameters``."""

from tango_dranspose.core.parameters import (
    BinaryParameter,
    BoolParameter,
    FileParameter,
    FloatParameter,
    IntParameter,
    Parameter,
    ParameterBase,
    ParameterList,
    ParameterType,
    StrParameter,
)

__all__ = [
    "BinaryParameter",
    "BoolParameter",
    "FileParameter",
    "FloatParameter",
    "IntParameter",
    "Parameter",
    "ParameterBase",
    "ParameterList",
    "ParameterType",
    "StrParameter",
]
