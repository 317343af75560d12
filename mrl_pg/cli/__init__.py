"""The ``mrl-pg`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

from ._app import main

__all__ = ["main"]
