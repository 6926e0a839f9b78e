"""The Taurus GUI of a pipeline (``tango-dranspose gui``).

``pipeline`` finds a pipeline's devices in the Tango DB and reads the reducer's ``Results``
list (no Qt); ``widgets`` holds the panels (Taurus, PyQt5); ``app`` builds the TaurusGui from
``taurus_gui/config.py`` and lays it out; ``command`` is the subcommand. Only ``command`` is
imported by the CLI, and it imports Qt only when the GUI opens.
"""
