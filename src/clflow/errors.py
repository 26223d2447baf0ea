"""User-facing errors: one readable line naming the file and the field."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class ClflowError(Exception):
    """A user error (bad input, bad config): printed as one line, exit status 2."""

    def __init__(self, message: str, *, file: object | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        super().__init__(self.line())

    def __reduce__(self):
        # keyword-only file/field survive pickling (an error raised in a worker process)
        return (_rebuild, (type(self), self.message, self.file, self.field))

    def line(self) -> str:
        where = ": ".join(
            p for p in (self.file, f"field '{self.field}'" if self.field else None) if p
        )
        return f"{where}: {self.message}" if where else self.message


def _rebuild(cls: type[ClflowError], message: str, file: str | None, field: str | None):
    return cls(message, file=file, field=field)


class StreamError(ClflowError):
    """A stream directory that breaks the stream contract."""


class ConfigError(ClflowError):
    """A params.yaml that breaks its schema."""


# a tracking server's refusals (MlflowException.error_code), worded for the person at the prompt
ACCESS_REFUSED = {
    "UNAUTHENTICATED": "refused the credentials of user {user} (401): set "
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (clflow team user add makes them)",
    "PERMISSION_DENIED": "denied this to user {user} (403): {detail}",
}


def access_refused(err: BaseException, server: str | None = None) -> ClflowError | None:
    """One line for an MLflow server's 401 or 403, naming the server (default: the tracking
    URI) and the user; None for any other error. Duck-typed on `error_code`, so this module
    needs no MLflow import."""
    code = getattr(err, "error_code", None) or ""
    template = ACCESS_REFUSED.get(code)
    if template is None:
        return None
    mlflow = sys.modules.get("mlflow")
    server = server or os.environ.get("MLFLOW_TRACKING_URI")
    server = server or (mlflow.get_tracking_uri() if mlflow else "")
    user = repr(os.environ.get("MLFLOW_TRACKING_USERNAME") or "(none)")
    message = str(getattr(err, "message", err))
    detail = message.split("Response body: ", 1)[-1].strip(" '").removeprefix(f"{code}: ")
    detail = " ".join(detail.split()) or "permission denied"
    return ClflowError(
        f"the MLflow server {template.format(user=user, detail=detail)}",
        file=server or "MLFLOW_TRACKING_URI",
    )


@contextmanager
def refusals_named(server: str | None = None) -> Iterator[None]:
    """A 401 or 403 of the MLflow server at `server` (default: the tracking URI), raised in the
    block, as one line (a ClflowError)."""
    try:
        yield
    except ClflowError:
        raise
    except Exception as err:
        refused = access_refused(err, server)
        if refused is None:
            raise
        raise refused from None


def cli_errors(func: F) -> F:
    """Wrap a `main()` so a ClflowError (or a tracking server's 401/403) prints one line to
    stderr and exits 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with refusals_named():
                return func(*args, **kwargs)
        except ClflowError as err:
            print(f"error: {err.line()}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]
