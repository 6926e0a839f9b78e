"""Sardana orchestration: macros that arm the pipeline from the scan about to run.

``macros/`` is the Sardana macro library: add it to the MacroServer's ``MacroPath``
(``docs/sardana.md``). Only the macro libraries import Sardana; ``mapping`` (the trigger map and
``Arm`` request of a scan) and ``_pipeline`` (the controller as a Tango client) do not, so they
are tested and type-checked without a MacroServer.
"""
