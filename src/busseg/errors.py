"""Exceptions that busseg raises for problems a user can fix.

Every error names the file or parameter at fault and what to change, so that a
stage fails with one readable line instead of a traceback from inside a library.
"""
from __future__ import annotations

from pathlib import Path


class BussegError(Exception):
    """Base class of all errors a user can act on."""


class ConfigError(BussegError):
    """A parameter is missing, unknown or out of range."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"parameter '{key}': {problem}")

    def __reduce__(self):  # picklable: raised in a worker process, re-raised in the stage
        return type(self), (self.key, self.problem)


class DataError(BussegError):
    """An input file is missing, unreadable or of the wrong kind."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self._path_text = str(path)  # as given: the message keeps it
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable: raised in a worker process, re-raised in the stage
        return type(self), (self._path_text, self.problem)


class TrainingError(BussegError):
    """Training cannot go on (no data, non-finite loss, ...)."""
