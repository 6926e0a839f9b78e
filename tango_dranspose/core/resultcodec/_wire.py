"""What both sides of the result codec agree on: format version, tags, errors.

The format itself is described in :mod:`tango_dranspose.core.resultcodec`.
"""

from __future__ import annotations

FORMAT_VERSION = 1

# Private, unregistered tag numbers; chosen clear of every tag cbor2 decodes natively.
TAG_TUPLE = 41200
TAG_SET = 41201
TAG_FROZENSET = 41202
TAG_DICT = 41203
TAG_COMPLEX = 41204
TAG_BYTEARRAY = 41205
TAG_NDARRAY = 41206
TAG_NPSCALAR = 41207
TAG_DATETIME = 41208
TAG_DATE = 41209
TAG_TIME = 41210
TAG_TIMEDELTA = 41211
TAG_DATACLASS = 41212
TAG_MODEL = 41213


class ResultCodecError(Exception):
    """A result could not be encoded or decoded."""


class ResultEncodeError(ResultCodecError, TypeError):
    """The result holds something that cannot be sent (the message says what and where)."""


class ResultDecodeError(ResultCodecError, ValueError):
    """The frames are not a result :func:`encode` wrote, or name a class that is not allowed."""


def short_repr(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."
