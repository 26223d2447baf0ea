"""The team Prefect server's auth string: made once and private; a real Prefect server started
with it (as `make ui` starts it in team mode) refuses clients without it, over HTTP and on its
event websocket, and serves those that send it."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from conftest import ROOT, run, running_prefect_server

from clflow.ops.team import Team, ensure_prefect_auth
from clflow.util.services import ServiceUnavailable, check_prefect_api


def test_the_auth_string_is_made_once_and_private(tmp_path):
    team = Team.load(tmp_path / "team")
    path = ensure_prefect_auth(team)
    secret = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600 and secret.startswith("clflow:")
    assert len(secret) > 30 and ensure_prefect_auth(team).read_text() == secret  # kept


def test_make_passes_the_auth_string_to_the_server_and_its_clients(tmp_path):
    ensure_prefect_auth(Team.load(tmp_path))
    auth = tmp_path / "prefect-auth"
    ui = run(["make", "-n", "ui", f"TEAM_DIR={tmp_path}"], ROOT).stdout
    assert f'PREFECT_SERVER_API_AUTH_STRING="$(cat {auth})"' in ui
    for target in ("serve", "worker"):
        out = run(["make", "-n", target, f"TEAM_DIR={tmp_path}"], ROOT).stdout
        assert f'PREFECT_API_AUTH_STRING="${{PREFECT_API_AUTH_STRING:-$(cat {auth})}}"' in out
    alone = run(["make", "-n", "ui", f"TEAM_DIR={tmp_path / 'none'}"], ROOT).stdout
    assert "AUTH_STRING" not in alone  # no team: no auth string (loopback only)


def post(url: str, token: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    req = urllib.request.Request(url, data=b"{}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


async def events_socket(url: str, token: str | None, subprotocol: bool = True) -> str:
    """What the event websocket does with a client: "auth_success", "closed <code>" or "refused
    <HTTP status>"."""
    import websockets

    protocols = ["prefect"] if subprotocol else None
    try:
        connecting = websockets.connect(url, subprotocols=protocols, open_timeout=30)
        ws = await connecting.__aenter__()
    except websockets.InvalidStatus as refused:  # closed before the handshake completed
        return f"refused {refused.response.status_code}"
    async with ws:
        try:
            if subprotocol:
                await ws.send(json.dumps({"type": "auth", "token": token}))
            return json.loads(await asyncio.wait_for(ws.recv(), 30))["type"]
        except websockets.ConnectionClosed as closed:
            return f"closed {closed.rcvd.code if closed.rcvd else None}"


@pytest.mark.slow
def test_a_prefect_server_with_the_auth_string_refuses_clients_without_it(tmp_path):
    secret = ensure_prefect_auth(Team.load(tmp_path / "team")).read_text()
    with running_prefect_server(tmp_path, PREFECT_SERVER_API_AUTH_STRING=secret) as env:
        api = env["PREFECT_API_URL"]
        assert post(f"{api}/flows/filter", None) == 401  # (its /health stays open to probes)
        assert post(f"{api}/flows/filter", "clflow:wrong") == 401
        assert post(f"{api}/flows/filter", secret) == 200
        events = api.replace("http://", "ws://") + "/events/out"
        assert asyncio.run(events_socket(events, None)) == "closed 1008"
        assert asyncio.run(events_socket(events, "clflow:wrong")) == "closed 1008"
        assert asyncio.run(events_socket(events, None, subprotocol=False)) == "refused 403"
        assert asyncio.run(events_socket(events, secret)) == "auth_success"
        # a flow, as the pipeline's clients run one: with the string it runs; without, refused
        flow = [sys.executable, "-c", "from prefect import flow\nflow(name='f')(lambda: 1)()\n"]
        client = {k: v for k, v in env.items() if k != "PREFECT_SERVER_API_AUTH_STRING"}
        authed = {**client, "PREFECT_API_AUTH_STRING": secret}
        ok = subprocess.run(flow, env=authed, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr[-2000:]
        refused = subprocess.run(flow, env=client, capture_output=True, text=True)
        assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout
        # clflow's flows check the credentials first: one line naming the server, exit 2
        assert check_prefect_api(api, 10, auth=secret) == api
        for auth, said in (("", "no auth string"), ("clflow:wrong", "a wrong auth string")):
            with pytest.raises(ServiceUnavailable, match=f"refused {said} \\(HTTP 401\\)"):
                check_prefect_api(api, 10, auth=auth)
        pipeline = [sys.executable, "flows/pipeline.py"]
        done = subprocess.run(pipeline, cwd=ROOT, env=client, capture_output=True, text=True)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and api in last and "refused no auth string" in last
        assert "Traceback" not in done.stderr
