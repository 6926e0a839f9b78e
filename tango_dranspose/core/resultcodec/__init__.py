"""Results of ``process_event`` as ZeroMQ frames, without pickle.

Workers send what user code returns to the reducer. dranspose pickles it, which lets whoever can
reach the reducer's socket run code there. Here frame 0 is a CBOR header describing the result
and frames 1.. are the raw bytes of its numpy arrays, sent and received without copying.

Header (frame 0): the CBOR array ``[1, n_buffers, root]``. ``1`` is the format version,
``n_buffers`` must equal ``len(frames) - 1``. ``root`` is the result: ``str``, ``int`` (big ones
as CBOR bignums), ``float``, ``bool``, ``None``, ``bytes``, lists and str-keyed dicts are native
CBOR; everything else is one of the private tags below (they mean something only between
:func:`encode` and :func:`decode`).

===============  ======================================================================
tag              value
===============  ======================================================================
TAG_TUPLE        array of items
TAG_SET          array of items
TAG_FROZENSET    array of items
TAG_DICT         array ``[k0, v0, k1, v1, ...]``; dicts whose keys are not all ``str``
TAG_COMPLEX      ``[real, imag]``
TAG_BYTEARRAY    byte string
TAG_NDARRAY      ``[frame_index, dtype, shape, fortran]``: ``frames[frame_index]`` holds the
                 ``prod(shape) * itemsize`` bytes, in Fortran order when ``fortran`` is true
TAG_NPSCALAR     ``[dtype, bytes]``
TAG_DATETIME     ``datetime.isoformat()`` text (also TAG_DATE, TAG_TIME)
TAG_TIMEDELTA    ``[days, seconds, microseconds]``
TAG_DATACLASS    ``["module:qualname", {field: value}]``
TAG_MODEL        ``["module:qualname", {field: value}, {extra: value} | null, [fields set]]``
===============  ======================================================================

``dtype`` is ``dtype.str`` (``"<f8"``, ``"|b1"``, ``"<M8[ns]"``...); structured dtypes are
``{"names", "formats", "offsets", "itemsize"}`` and sub-array fields ``[base, shape]``.

Decoding builds only these types. CBOR tags that cbor2 would turn into other Python objects
(regex, MIME, decimal, shared references...) are refused, classes are looked up in
``sys.modules`` (never imported) and only under the prefixes of a :class:`ClassAllowList`.
"""

from tango_dranspose.core.resultcodec._classes import ClassAllowList, allow_list_for
from tango_dranspose.core.resultcodec._decode import FrameLike, decode
from tango_dranspose.core.resultcodec._encode import encode
from tango_dranspose.core.resultcodec._wire import (
    FORMAT_VERSION,
    TAG_BYTEARRAY,
    TAG_COMPLEX,
    TAG_DATACLASS,
    TAG_DATE,
    TAG_DATETIME,
    TAG_DICT,
    TAG_FROZENSET,
    TAG_MODEL,
    TAG_NDARRAY,
    TAG_NPSCALAR,
    TAG_SET,
    TAG_TIME,
    TAG_TIMEDELTA,
    TAG_TUPLE,
    ResultCodecError,
    ResultDecodeError,
    ResultEncodeError,
)

__all__ = [
    "FORMAT_VERSION",
    "TAG_BYTEARRAY",
    "TAG_COMPLEX",
    "TAG_DATACLASS",
    "TAG_DATE",
    "TAG_DATETIME",
    "TAG_DICT",
    "TAG_FROZENSET",
    "TAG_MODEL",
    "TAG_NDARRAY",
    "TAG_NPSCALAR",
    "TAG_SET",
    "TAG_TIME",
    "TAG_TIMEDELTA",
    "TAG_TUPLE",
    "ClassAllowList",
    "FrameLike",
    "ResultCodecError",
    "ResultDecodeError",
    "ResultEncodeError",
    "allow_list_for",
    "decode",
    "encode",
]
