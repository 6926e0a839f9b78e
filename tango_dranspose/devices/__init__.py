"""Tango device classes: thin adapters from device properties to runtime services and from
runtime state to attributes (DESIGN.md section 3)."""
