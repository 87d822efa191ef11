"""The ``wds`` command line.

:mod:`wds.cli.main` builds the argument parser from one module per command group; each such module
has a ``register(subparsers)`` function that adds its commands and points them at a handler
``(args) -> int``. Handlers raise :class:`wds.errors.WdsError` for user mistakes; ``main`` turns
those into a one-line message and the error's exit code, never a traceback.
"""
