"""Errors a user can act on. The CLI prints their message and exits non-zero, never a traceback."""

import difflib
from collections.abc import Iterable


def did_you_mean(key: str, candidates: Iterable[str]) -> str:
    """' (did you mean CLOSEST?)' for an unknown key, or '' when nothing is close."""
    close = difflib.get_close_matches(key, sorted(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class AutoLFADSError(Exception):
    """Base class: the message names the file, key, shape or value and what was expected."""


class ConfigError(AutoLFADSError):
    """A configuration file, key or value is invalid."""


class DataError(AutoLFADSError):
    """A data file is missing, unreadable, or does not hold what the model needs."""


class CheckpointError(AutoLFADSError):
    """A checkpoint folder is missing, corrupt, or belongs to a different model."""


class TrainingDiverged(AutoLFADSError):
    """Every member's loss became NaN or infinite."""


class ReportError(AutoLFADSError):
    """A folder cannot be reported on: not a run folder or search workdir, or its tables are unreadable."""


class EvaluationError(AutoLFADSError):
    """Rates or evaluation targets that cannot be scored (NaN or negative rates, missing trials or keys)."""


class MissingDependency(AutoLFADSError):
    """An optional package a command needs is not installed; the message gives the install command."""
