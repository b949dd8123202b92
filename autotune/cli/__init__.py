"""The thin command line: ``autotune run | export | report | dashboard | loadtest``."""

from autotune.cli._app import app, entry, main

__all__ = ["app", "entry", "main"]
