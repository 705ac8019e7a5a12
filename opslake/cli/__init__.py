"""The ``opslake`` command line: one module per command group, the shared parts in
``_common``, the assembly and the one error handler in ``main``."""

from opslake.cli.main import app, main

__all__ = ["app", "main"]
