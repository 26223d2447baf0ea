"""The registry lease on a real MLflow registry: exclusive, one readable line on timeout, a dead
holder's lease broken once expired, a lost lease moves nothing; two workspaces on one PostgreSQL
MLflow server never promote a worse model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import make_project, teammate

from clflow.ops.team import as_admin
from clflow.tracking.lease import SUFFIX, TAG_EXPIRES, TAG_OWNER, LeaseLost, registry_lease
from clflow.tracking.registry import CHAMPION, Registry
from clflow.util.locks import LockTimeout


@pytest.fixture
def client(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_lease_is_exclusive_and_times_out_with_one_line(client):
    with registry_lease(client, "m", timeout=5):
        with pytest.raises(LockTimeout) as err:
            with registry_lease(client, "m", timeout=0.3):
                pass
    line = err.value.line()
    assert "\n" not in line and f"m{SUFFIX}" in line and "waited 0.3 s" in line
    with registry_lease(client, "m", timeout=0.3):  # released: free again
        pass
    assert not client.search_registered_models(f"name='m{SUFFIX}'")


def test_an_expired_lease_of_a_dead_holder_is_broken(client):
    client.create_registered_model(
        f"m{SUFFIX}", tags={TAG_OWNER: "gone:1:x", TAG_EXPIRES: f"{time.time() - 1:.3f}"}
    )
    with registry_lease(client, "m", timeout=2) as lease:
        assert lease.owner != "gone:1:x"


def test_a_lease_taken_over_moves_nothing(client):
    reg = Registry("m", "http://unused", lease_seconds=600)
    reg.client = client  # the registry of this test (the lease path is the server's)
    client.create_registered_model("m")
    v1 = client.create_model_version("m", source="s", run_id=None).version
    reg.consider(v1, [0.5, 0.5], 0.05)
    v2 = client.create_model_version("m", source="s", run_id=None).version
    reg.lease_seconds = 0.0  # expires at once: another workspace breaks it and takes it

    def evaluate(uri: str) -> list[float]:
        with registry_lease(client, "m", timeout=2):  # the other workspace, mid-decision
            return [0.5, 0.5]

    with pytest.raises(LeaseLost):
        reg.consider(v2, [0.9, 0.9], 0.05, evaluate=evaluate)
    assert str(reg.version(CHAMPION).version) == str(v1)
    assert "clflow.decision" not in reg.get(v2).tags  # no "promoted" on a version never moved


ROUNDS = 10
WORKSPACE = """
import json, random, sys, time
from clflow.tracking.registry import Registry
uri, seed, out, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
reg = Registry("clflow-team", uri, lock_timeout=300)
rng, done = random.Random(seed), []
def rescore(uri):  # re-scoring the champion takes time (the flow downloads and evaluates it)
    time.sleep(0.3)
    return reg.recorded_scores(reg.get(uri.rsplit("/", 1)[1]))
for i in range(rounds):
    v = str(reg.client.create_model_version("clflow-team", source=f"s3://team/ws{seed}/{i}").version)
    acc = round(rng.uniform(0.5, 0.95), 4)
    reg.consider(v, [acc, acc * 0.98], 0.05, evaluate=rescore)
    done.append([v, acc])
json.dump(done, open(out, "w"))
"""


@pytest.mark.slow
def test_two_workspaces_register_into_one_server_concurrently(team_server, tmp_path):

    uri = team_server.tracking_uri
    team = replace(team_server, model="clflow-team")  # made by the admin, as team up makes it
    names = ("carla", "dan")  # two maintainers, each with their own MLflow user and clone
    clones = [make_project(tmp_path / name) for name in names]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKSPACE, uri, str(seed), clone / "done.json", str(ROUNDS)],
            cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **teammate(team, name)},
        )
        for seed, (name, clone) in enumerate(zip(names, clones))
    ]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out
    accs = {v: acc for c in clones for v, acc in json.loads((c / "done.json").read_text())}
    assert len(accs) == 2 * ROUNDS
    with as_admin(team_server):
        lease_race_verdict(Registry("clflow-team", uri), accs)


def lease_race_verdict(reg: Registry, accs: dict[str, float]) -> None:
    """The champion is the best; every promotion beat the one it replaced; the lease is gone;
    each decision names the user who made it."""
    champion = str(reg.version(CHAMPION).version)
    assert accs[champion] == max(accs.values())  # always the better one
    for v in accs:  # no decision lost; every promotion beat the champion it replaced
        tags = reg.get(v).tags
        assert tags["clflow.decision"] in ("promoted", "rejected"), (v, tags)
        assert tags["clflow.decided_by"] in ("carla", "dan")
        previous = tags.get("clflow.previous_champion")
        if tags["clflow.decision"] == "promoted" and previous:
            assert accs[v] >= accs[previous]
    assert not reg.client.search_registered_models("name='clflow-team.lease'")  # released
