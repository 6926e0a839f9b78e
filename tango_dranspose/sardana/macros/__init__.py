"""The Sardana macro library: this directory goes into the MacroServer's ``MacroPath``.

Only macro libraries live here (the MacroServer loads every ``*.py`` not starting with ``_``);
what they use is in the package above, importable and tested without Sardana.
"""
