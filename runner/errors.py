"""Domain errors. Each message says what was received, what is allowed, and what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RunnerError(Exception):
    """An error the user can fix; printed as one line (set RUNNER_TRACEBACK=1 for the traceback)."""

    exit_code = 2


class ConfigError(RunnerError):
    pass


class BackendUnavailable(RunnerError):
    pass


class EnvBuildError(RunnerError):
    pass


def suggest(word: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class DataError(RunnerError):
    """A dataset file that does not hold what the run expects; the message names the file."""
