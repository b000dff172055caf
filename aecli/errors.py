"""Errors a user sees: the CLI prints their message as one line and exits with their code."""


class AecliError(Exception):
    """Base of every error `ae` reports to a user; the message is written for them."""

    exit_code = 1


class UsageError(AecliError):
    """The command line or a config file asks for something that cannot be (exit 2, as Typer)."""

    exit_code = 2


class InputError(AecliError):
    """An input path, image or array cannot be used."""


class ModelFileError(AecliError):
    """A model file is missing, foreign, damaged or from an unknown format version."""


class OutputError(AecliError):
    """An output cannot be written, or writing it would overwrite something it must not."""


class MissingExtra(AecliError):
    """An option needs an optional package that is not installed; the message says how to get it."""


class Diverged(AecliError):
    """Training's loss stopped being a finite number; the message says what was kept."""


class Interrupted(AecliError):
    """The user pressed Ctrl-C; the message says what was kept (exit 130, as shells expect)."""

    exit_code = 130
