"""tango-dranspose: live analysis for synchrotron beamlines as Tango device servers."""

__version__ = "0.1.0"
