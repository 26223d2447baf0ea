"""Bounded service checks: a dead URI is named within the timeout; a live one passes."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
from conftest import free_port

from clflow.util.services import ServiceUnavailable, check_tracking_uri, wait_for


def test_dead_uri_is_named_within_the_timeout():
    url = f"http://127.0.0.1:{free_port()}/health"
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        wait_for(url, 1.5, "the thing")
    assert time.monotonic() - t0 < 6
    assert err.value.line().startswith(f"{url}: the thing did not answer within 1.5 s")


def test_live_server_passes_and_file_stores_need_no_check():
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_tracking_uri(f"http://127.0.0.1:{server.server_port}", timeout=5)
    finally:
        server.shutdown()
    check_tracking_uri("sqlite:///nowhere/mlflow.db", timeout=0)


def test_a_dask_scheduler_address_is_checked_in_bounded_time():
    import socket

    from clflow.util.services import wait_for_port

    address = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=f"{address}: the scheduler did not answer within"):
        wait_for_port(address, 1.0, "the scheduler")
    assert time.monotonic() - t0 < 6
    with pytest.raises(ServiceUnavailable, match="not a host:port address"):
        wait_for_port("tcp://nowhere", 1.0, "the scheduler")
    with socket.socket() as listening:  # something that answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        wait_for_port(f"tcp://127.0.0.1:{listening.getsockname()[1]}", 1.0, "the scheduler")


def test_beyond_loopback_a_server_needs_its_auth(capsys):
    from clflow.util.services import bind_refusal, main

    assert bind_refusal("127.0.0.1", auth=False) is None
    assert bind_refusal("0.0.0.0", auth=True) is None
    assert "loopback only" in bind_refusal("0.0.0.0", auth=False)
    assert main(["--host", "0.0.0.0", "PREFECT_PORT=1"]) == 1
    assert capsys.readouterr().err.startswith("error: 0.0.0.0: a server without authentication")
