"""The ``bridge`` command line (contract section 5): one module per command family."""

from bridge.cli.commands import main

__all__ = ["main"]
