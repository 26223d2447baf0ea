"""User-facing errors: one readable line naming the file and the field."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
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


def cli_errors(func: F) -> F:
    """Wrap a `main()` so a ClflowError prints one line to stderr and exits 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ClflowError as err:
            print(f"error: {err.line()}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]
