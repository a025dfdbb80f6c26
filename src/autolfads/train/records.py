"""TEMPORARY (issue 14, branch r-cli): part A's train/records.py replaces this re-export at merge."""

from .run import RunLog

__all__ = ["RunLog"]
