"""Every error bgpspeaker raises on purpose. Only the entry point turns them into exits."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BgpSpeakerError", "CommandValueError", "ConfigError", "ExabgpUnavailable"]


class BgpSpeakerError(Exception):
    """Base of all errors raised on purpose."""


class ConfigError(BgpSpeakerError):
    """The config is invalid; ``problems`` lists every problem, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class CommandValueError(BgpSpeakerError):
    """A value would not encode safely into one ExaBGP command line."""


class ExabgpUnavailable(BgpSpeakerError):
    """ExaBGP is not running, or its API connection was lost mid-command.

    ``results`` holds the acks received before the failure, one per line sent, in order;
    the lines after them are in an unknown state.
    """

    def __init__(self, message: str, results: Sequence[bool] = ()) -> None:
        super().__init__(message)
        self.results = tuple(results)
