"""Errors a user can cause. The CLI turns each into one line on stderr and exit status 2."""


class LrlError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""

    exit_code = 2


class UnknownPluginError(LrlError):
    pass


class InvalidProblemError(LrlError):
    pass


class ConfigError(LrlError):
    pass


class ResultsFileError(LrlError):
    pass


class BackendUnavailableError(LrlError):
    """A backend cannot run here (missing package, no CUDA, GPU too old...)."""


class CacheMissError(LrlError):
    """``--cache-only`` was asked for and a request is not in the cache."""
