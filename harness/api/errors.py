"""Errors a user can cause, and failures of the work itself. The CLI turns each into one line on
stderr: exit status 2 for bad input (``LrlError``), 1 for work that failed (``WorkError``)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lrl_harness.api.contract import Completion


class LrlError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""

    exit_code = 2


class WorkError(LrlError):
    """The input was fine but the work failed (a server down, a converter crash, a full disk)."""

    exit_code = 1


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


class RunLockedError(LrlError):
    """Another ``lrl run`` holds the output folder."""


class TeacherError(LrlError):
    """A teacher failed for good (retries exhausted, bad key, broken response).

    ``completed`` maps the index of each request of the failed ``complete()`` call that was
    answered before the failure to its completion, so a cache can keep them. The work failed, not
    the input: exit status 1.
    """

    exit_code = 1

    def __init__(self, message: str, completed: dict[int, Completion] | None = None):
        super().__init__(message)
        self.completed = dict(completed or {})


class ConversionError(LrlError):
    """The converter could not be obtained or failed on a model (the work failed: exit status 1)."""

    exit_code = 1


class GGUFError(LrlError):
    """A file that should be a loadable GGUF is not."""


class TokenMismatchError(LrlError):
    """Two backends feed different token ids for the same prompt."""


class ServerError(LrlError):
    """The server answered with an error (``status``), or not at all (``status`` None)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


# A path the user chose that cannot be used is bad input; anything else the disk does is a failure.
_INPUT_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                 errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP}


def path_error(path, exc: OSError, doing: str = "write") -> LrlError:
    """One line for an OSError met while reading or writing ``path``, with what to do about it."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "choose a writable location" if doing == "write" else "check its permissions"
    elif exc.errno == errno.ENOSPC:
        hint = "free some disk space and re-run"
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "check the path"
    else:
        hint = "check the path and the disk"
    error = LrlError if exc.errno in _INPUT_ERRNOS else WorkError
    return error(f"cannot {doing} {path}: {reason}; {hint}")
