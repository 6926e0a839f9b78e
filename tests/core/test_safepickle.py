from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from tango_dranspose.core.safepickle import UnsafePickleError, restricted_loads


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_round_trips(protocol: int) -> None:
    value = collections.OrderedDict(
        a=np.arange(4, dtype=np.uint32), b=[1.5, "x", (1, 2)], c={"d": None}
    )
    back = restricted_loads(pickle.dumps(value, protocol=protocol))
    assert list(back) == ["a", "b", "c"]
    assert back["a"].dtype == np.uint32 and back["a"].tolist() == [0, 1, 2, 3]
    assert back["b"] == [1.5, "x", (1, 2)]


def test_code_is_refused() -> None:
    with pytest.raises(UnsafePickleError, match="system"):
        restricted_loads(pickle.dumps(Evil()))
