"""Example payloads, written in dranspose style against ``tango_dranspose.compat``."""
