"""Sub-command groups of the ``kmedssl`` command (SPEC §7), registered on ``kmedssl.cli.main``."""
