"""The project's exception types.

Every error a user can cause is one of these, with a message that says what failed,
shows the offending value, and says what to do. Layers translate third-party errors at
their boundary (``raise DataSourceError(msg) from exc``); the CLI prints the message in
one or two lines, the API maps each class to an HTTP status (see ``api/errors.py``).

    Mlaas4hepError
    ├── SpecError (ValueError)            invalid pipeline spec / settings
    ├── ExpressionError (ValueError)      bad user expression (with a caret)
    ├── DataSourceError (OSError)         cannot open / read input data
    │   ├── MissingFileError (FileNotFoundError)
    │   ├── NotRootFileError
    │   ├── TreeNotFoundError (KeyError)
    │   ├── BranchNotFoundError (KeyError)
    │   └── OutputWriteError              cannot write an output file (friend tree, Parquet)
    ├── DataQualityError (ValueError)     NaN/inf, empty splits, shape mismatch
    ├── TrainingError                     an engine failed or a model does not fit
    ├── UserCodeError                     user module missing / wrong function
    ├── AuthError                         missing / invalid credentials (401)
    │   └── PermissionDenied              valid identity, not allowed (403)
    ├── NotFound (LookupError)            resource does not exist (404)
    ├── Conflict                          state conflict (409)
    ├── PayloadTooLarge                   upload over the limit (413)
    ├── UnsafeArchiveError (ValueError)   tarball member rejected
    ├── InvalidInput (ValueError)         malformed inference request (400)
    └── Unavailable                       retry later (503 + Retry-After)
        ├── Overloaded                    a model's queue is full
        └── IssuerUnavailable             the token issuer cannot be reached

    SpecError
    └── DocumentError                     YAML/JSON refused: anchors, depth (documents.py)

The status of each class is written once, in ``http_status.py``, for both APIs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class Mlaas4hepError(Exception):
    """Base class of every error raised on purpose by mlaas4hep."""


class SpecError(Mlaas4hepError, ValueError):
    """The pipeline spec or a setting is invalid."""


class ExpressionError(Mlaas4hepError, ValueError):
    """A user expression cannot be parsed or evaluated safely."""


class DataSourceError(Mlaas4hepError, OSError):
    """Input data cannot be opened or read."""


class MissingFileError(DataSourceError, FileNotFoundError):
    """A named input file does not exist."""


class NotRootFileError(DataSourceError):
    """A file exists but is not a readable ROOT file (wrong format or truncated)."""


class TreeNotFoundError(DataSourceError, KeyError):
    """The requested tree is not in the file, or the choice is ambiguous."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BranchNotFoundError(DataSourceError, KeyError):
    """A requested branch is not in the tree."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class OutputWriteError(DataSourceError):
    """An output file (friend tree, Parquet) cannot be written: no space, no permission."""


class DataQualityError(Mlaas4hepError, ValueError):
    """The data cannot be used as is (NaN/inf, empty split, wrong shape)."""


class TrainingError(Mlaas4hepError):
    """Training failed or the model does not fit the features."""


class UserCodeError(Mlaas4hepError):
    """A user-provided module is missing or does not have the expected interface."""


class AuthError(Mlaas4hepError):
    """Credentials are missing or invalid."""


class PermissionDenied(AuthError):
    """The caller is authenticated but not allowed to do this."""


class NotFound(Mlaas4hepError, LookupError):
    """The requested resource does not exist (or is not visible to the caller)."""


class Conflict(Mlaas4hepError):
    """The request conflicts with the current state of a resource."""


class PayloadTooLarge(Mlaas4hepError):
    """An upload exceeds a configured limit."""


class UnsafeArchiveError(Mlaas4hepError, ValueError):
    """An archive member was rejected (link, absolute path, '..', size or count)."""


class DocumentError(SpecError):
    """A user document is not valid YAML/JSON or uses a refused feature (anchors, depth)."""


class InvalidInput(Mlaas4hepError, ValueError):
    """An inference request is malformed: bad JSON, unknown tensor, wrong shape or dtype."""


class UnsupportedEncoding(InvalidInput):
    """A request body's ``Content-Encoding`` is not one the service decodes (415)."""


class Unavailable(Mlaas4hepError):
    """Temporarily unable to answer; the client should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """A model's request queue is full."""


class IssuerUnavailable(Unavailable):
    """A trusted token issuer's discovery document or keys cannot be fetched.

    The message is shown to clients, so it names no URL; the log has the details.
    """


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a human hint listing the choices closest to *name* (or all, if few)."""
    options = sorted(set(choices))
    near = difflib.get_close_matches(name, options, n=n, cutoff=0.5)
    if near:
        return "closest: " + ", ".join(repr(c) for c in near)
    if len(options) <= 10:
        return "available: " + ", ".join(repr(c) for c in options)
    return f"{len(options)} available, e.g. " + ", ".join(repr(c) for c in options[:5])
