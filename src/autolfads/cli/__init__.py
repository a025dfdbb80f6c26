"""The `autolfads` command: a thin layer over the Python API, one module per command family."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
