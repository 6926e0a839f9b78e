"""Message models per protocol, under dranspose's ``dranspose.data.<protocol>`` paths."""
