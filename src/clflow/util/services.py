"""Bounded checks of the services a run talks to (MLflow tracking server, Prefect API, a Dask
scheduler).

A URI that does not answer gives one line naming it within a bounded time
(`CLFLOW_SERVICE_TIMEOUT`, default 15 s), with exponential backoff between tries,
instead of a client library's long retry loop or a traceback.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from clflow.errors import ClflowError

TIMEOUT_ENV = "CLFLOW_SERVICE_TIMEOUT"


class ServiceUnavailable(ClflowError):
    """A service (Prefect API, MLflow tracking server, Dask scheduler) did not answer."""


def default_timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "15"))


def _retry(probe: Callable[[float], str | None], where: str, timeout: float, what: str) -> None:
    """Call `probe(per_try_timeout)` (None = answered, else why not) with exponential backoff;
    ServiceUnavailable naming `where` after `timeout` s."""
    deadline, delay = time.monotonic() + timeout, 0.25
    while True:
        last = probe(min(5.0, max(timeout, 0.5)))
        if last is None:
            return
        if time.monotonic() + delay > deadline:
            raise ServiceUnavailable(
                f"{what} did not answer within {timeout:g} s ({last})", file=where
            )
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def wait_for(url: str, timeout: float, what: str) -> None:
    """GET `url` until it answers 200 (see _retry)."""

    def probe(each: float) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=each) as resp:
                return None if resp.status == 200 else f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            return str(getattr(exc, "reason", exc))

    _retry(probe, url, timeout, what)


def wait_for_port(address: str, timeout: float, what: str) -> None:
    """Open a TCP connection to `address` (`tcp://host:port` or `host:port`) (see _retry)."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ServiceUnavailable(f"{what}: not a host:port address", file=address)

    def probe(each: float) -> str | None:
        try:
            socket.create_connection((host, int(port)), timeout=each).close()
            return None
        except OSError as exc:
            return exc.strerror or type(exc).__name__

    _retry(probe, address, timeout, what)


def check_tracking_uri(uri: str, timeout: float | None = None) -> None:
    """An http(s) MLflow tracking URI must answer /health; file and database stores need no
    check."""
    if uri.startswith(("http://", "https://")):
        wait_for(
            uri.rstrip("/") + "/health",
            default_timeout() if timeout is None else timeout,
            "the MLflow tracking server",
        )


def check_prefect_api(
    url: str | None = None, timeout: float | None = None, auth: str | None = None
) -> str | None:
    """A configured PREFECT_API_URL must answer /health and take this client's credentials
    (`auth`, default PREFECT_API_AUTH_STRING: a team server started with an auth string answers
    401 without it); unset means the ephemeral API (nothing to check)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    url = url or PREFECT_API_URL.value()
    if url:
        wait_for(
            url.rstrip("/") + "/health",
            default_timeout() if timeout is None else timeout,
            "the Prefect API",
        )
        auth = PREFECT_API_AUTH_STRING.value() if auth is None else auth
        if _refused(url.rstrip("/") + "/admin/version", auth):
            said = "a wrong auth string" if auth else "no auth string"
            raise ServiceUnavailable(
                f"the Prefect API refused {said} (HTTP 401): export PREFECT_API_AUTH_STRING, "
                'the server\'s (team mode: "$(cat .team/prefect-auth)")',
                file=url,
            )
    return url


def _refused(url: str, auth: str | None) -> bool:
    """Does `url` answer 401 to these credentials (HTTP basic, as Prefect's clients send)?"""
    import base64

    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=15):
            return False
    except urllib.error.HTTPError as err:
        return err.code == 401
    except (urllib.error.URLError, OSError):
        return False  # /health answered: a flaky probe is not a refusal


def taken_ports(ports: dict[str, int], host: str = "127.0.0.1") -> list[str]:
    """`NAME=PORT` for each port something already listens on (a bind would fail)."""
    import socket

    taken = []
    for name, port in ports.items():
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                taken.append(f"{name}={port}")
    return taken


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind_refusal(host: str, auth: bool) -> str | None:
    """Why a server must not listen on `host` (None: it may): beyond loopback, anyone who
    reaches the address could use it, so it needs its auth on."""
    if host in LOOPBACK or auth:
        return None
    return (
        f"{host}: a server without authentication listens on loopback only: run make team-up "
        "first (its Prefect auth string), or keep UI_HOST=127.0.0.1"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m clflow.util.services [--host H [--auth]] NAME=PORT ...`: exit 1 with one line
    if a port is taken, or if H is beyond loopback without auth (`make ui` checks before it
    starts a server)."""
    args = list(sys.argv[1:] if argv is None else argv)
    host = args.pop(args.index("--host") + 1) if "--host" in args else "127.0.0.1"
    auth = "--auth" in args
    refused = bind_refusal(host, auth)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 1
    args = [a for a in args if a not in ("--host", "--auth")]
    ports = {name: int(port) for name, _, port in (a.partition("=") for a in args)}
    taken = taken_ports(ports)
    if taken:
        print(
            f"error: 127.0.0.1: port {', '.join(taken)} is in use: stop what listens there, or "
            "pick another port (make ui PREFECT_PORT=... MLFLOW_PORT=...)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
