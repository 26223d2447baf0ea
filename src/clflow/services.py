"""Bounded checks of the services a run talks to (MLflow tracking server, Prefect API).

A URI that does not answer gives one line naming it within a bounded time
(`CLFLOW_SERVICE_TIMEOUT`, default 15 s), with exponential backoff between tries,
instead of a client library's long retry loop or a traceback.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from clflow.errors import ClflowError

TIMEOUT_ENV = "CLFLOW_SERVICE_TIMEOUT"


class ServiceUnavailable(ClflowError):
    """A service (Prefect API, MLflow tracking server) did not answer."""


def default_timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "15"))


def wait_for(url: str, timeout: float, what: str) -> None:
    """GET `url` until it answers 200, with exponential backoff; ServiceUnavailable after `timeout`
    s."""
    deadline, delay, last = time.monotonic() + timeout, 0.25, "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(5.0, max(timeout, 0.5))) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() + delay > deadline:
            raise ServiceUnavailable(
                f"{what} did not answer within {timeout:g} s ({last})", file=url
            )
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def check_tracking_uri(uri: str, timeout: float | None = None) -> None:
    """An http(s) MLflow tracking URI must answer /health; file and database stores need no
    check."""
    if uri.startswith(("http://", "https://")):
        wait_for(
            uri.rstrip("/") + "/health",
            default_timeout() if timeout is None else timeout,
            "the MLflow tracking server",
        )


def check_prefect_api(url: str | None = None, timeout: float | None = None) -> str | None:
    """A configured PREFECT_API_URL must answer /health; unset means the ephemeral API (nothing to
    check)."""
    from prefect.settings import PREFECT_API_URL

    url = url or PREFECT_API_URL.value()
    if url:
        wait_for(
            url.rstrip("/") + "/health",
            default_timeout() if timeout is None else timeout,
            "the Prefect API",
        )
    return url
