"""dranspose's module paths over tango-dranspose's implementation.

Port a payload by replacing ``dranspose.`` with ``tango_dranspose.compat.`` in its imports.
Nothing here has logic of its own: every name is re-exported from the real modules.
"""
