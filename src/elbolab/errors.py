"""User-facing errors: one base class, a message that says what to do.

The CLI catches :class:`ElbolabError`, prints its message on one line and
exits non-zero; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class ElbolabError(Exception):
    """Base of every error a user can cause (bad file, bad name, bad value)."""


class ConfigError(ElbolabError):
    """Unknown preset, unknown config key, or a value of the wrong type or range."""


class DataError(ElbolabError):
    """Missing, malformed or non-finite data."""


class ChecksumError(DataError):
    """A downloaded or cached file does not match its published sha256."""


class RunError(ElbolabError):
    """A run directory is missing, incomplete or incompatible."""


class TrainingError(ElbolabError):
    """Training cannot go on (for example a non-finite loss)."""
