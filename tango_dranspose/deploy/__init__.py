"""Deployments: Tango database servers, dsconfig registration, device-server processes and
the demo. Imports tango only as a client (never the device classes)."""
