"""Sardana orchestration: macros that arm the pipeline from the scan about to run.

The directory is a Sardana macro library: add it to the MacroServer's ``MacroPath``
(``docs/sardana.md``). Only ``dranspose_macros`` imports Sardana; ``mapping`` (the trigger map
and ``Arm`` request of a scan) and ``_pipeline`` (the controller as a Tango client) do not, so
they are tested and type-checked without a MacroServer. Files starting with ``_`` are skipped
by the MacroServer's library scan.
"""
