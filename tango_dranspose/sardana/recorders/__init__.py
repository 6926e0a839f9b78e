"""The Sardana recorder library: this directory goes into the MacroServer's ``RecorderPath``."""
