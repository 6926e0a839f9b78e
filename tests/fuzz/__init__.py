"""Fuzzing the protocol framers: nothing a detector sends may make ``Framer.feed`` raise.

Real messages from the recorded captures (and from the protocol builders, so that every
protocol has seeds even without the captures) are mutated by hypothesis: bit flips,
truncation, splicing, changed JSON fields, huge declared sizes, deep nesting, random bytes.
``test_fuzz.py`` runs a fast profile in the suite; ``python -m tests.fuzz --cases 5000``
runs a long one and prints what the framers did with the garbage.
"""

import os
import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps a cache of constants it found in our sources; not in the work tree.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tango-dranspose-hypothesis")
