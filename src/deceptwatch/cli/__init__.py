"""The ``deceptwatch`` command line."""

from deceptwatch.cli._app import app, main

__all__ = ["app", "main"]
