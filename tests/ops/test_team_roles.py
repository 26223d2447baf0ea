"""Who may do what on the team's MLflow server (PostgreSQL-backed, MLflow's basic auth with
clflow's champion rule): a viewer reads, a member registers but cannot promote, a maintainer
promotes and the tags name them; wrong or missing credentials are one line naming the server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run, teammate

from clflow.ops import team as services
from clflow.tracking.registry import CHAMPION, Registry

pytestmark = pytest.mark.slow
CLFLOW = str(Path(sys.executable).with_name("clflow"))
ROLES = {"vera": "viewer", "mike": "member", "mona": "maintainer"}


@pytest.fixture(scope="module")
def crew(team_server) -> services.Team:
    """The team server with a model of its own (the pipeline tests' versions stay 1, 2, ...)."""
    return replace(team_server, model="clflow-roles")


@pytest.fixture(scope="module")
def people(crew) -> dict[str, dict[str, str]]:
    return {name: teammate(crew, name, role) for name, role in ROLES.items()}


@contextmanager
def acting(crew, who: dict[str, str]) -> Iterator[Registry]:
    """The team's registry, this process talking to it as `who`."""
    with services.logged_in(who["MLFLOW_TRACKING_USERNAME"], who["MLFLOW_TRACKING_PASSWORD"]):
        yield Registry(crew.model, crew.tracking_uri, lock_timeout=30)


def registry_cli(crew, who: dict[str, str], *args: str):
    return run(
        [CLFLOW, "registry", *args, "--model", crew.model, "--uri", crew.tracking_uri],
        Path.cwd(), check=False, env={**os.environ, **who},
    )  # fmt: skip


def one_line(proc) -> str:
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def champion(crew) -> str:
    with services.as_admin(crew):
        return str(Registry(crew.model, crew.tracking_uri).version(CHAMPION).version)


def new_version(reg: Registry, scores: list[float]):
    version = str(reg.client.create_model_version(reg.name, source="s3://team/m").version)
    reg.record_creator(version)
    return version, reg.consider(version, scores, 0.05)


def test_viewer_reads_member_registers_maintainer_promotes(crew, people):
    with acting(crew, people["mona"]) as reg:  # a maintainer's better model is promoted at once
        first, decision = new_version(reg, [0.8, 0.8])
        assert decision.promote
        tags = reg.get(first).tags
        assert tags["clflow.decided_by"] == "mona" == reg.get(first).user_id  # "Created by"

    # a viewer reads, and gets MLflow's 403 (one line) on register and promote; no alias moves
    with acting(crew, people["vera"]) as reg:
        assert [row["version"] for row in reg.table()] == [first]
    refused = one_line(registry_cli(crew, people["vera"], "promote", first))
    assert "403" in refused and "'vera'" in refused and crew.tracking_uri in refused
    with acting(crew, people["vera"]) as reg, pytest.raises(Exception, match="403"):
        reg.client.create_model_version(crew.model, source="s3://team/v")
    assert champion(crew) == first

    # a member registers a better model: challenger, awaiting a maintainer; champion unchanged
    with acting(crew, people["mike"]) as reg:
        second, decision = new_version(reg, [0.9, 0.9])
        assert not decision.promote and "mike may not move `champion`" in decision.reason
        version = reg.get(second)
        assert version.tags["clflow.decision"] == "awaiting_maintainer"
        assert version.tags["clflow.decided_by"] == "mike" == version.user_id
        assert version.tags.get("clflow.promoted_at", "") == ""  # put back: it never moved
        assert "challenger" in version.aliases
    refused = one_line(registry_cli(crew, people["mike"], "promote", second))
    assert "may not move `champion`" in refused
    assert one_line(registry_cli(crew, people["mike"], "rollback"))
    assert champion(crew) == first

    # the maintainer promotes it by hand: the tags name her, the predecessor is recorded
    promoted = registry_cli(crew, people["mona"], "promote", second)
    assert promoted.returncode == 0, promoted.stderr
    assert champion(crew) == second
    with services.as_admin(crew):
        tags = Registry(crew.model, crew.tracking_uri).get(second).tags
    assert tags["clflow.decision"] == "promoted_by_hand" and tags["clflow.decided_by"] == "mona"
    assert tags["clflow.previous_champion"] == first


def test_wrong_or_missing_credentials_are_one_line_naming_the_server(crew, people):
    wrong = {**people["mike"], "MLFLOW_TRACKING_PASSWORD": "not-it"}
    for who in (wrong, {"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}):
        refused = one_line(registry_cli(crew, who, "list"))
        assert crew.tracking_uri in refused and "(401)" in refused


def test_team_user_add_list_remove(team_server, people):
    home = ["--dir", str(team_server.home)]
    added = run([CLFLOW, "team", "user", "add", "tess", "--role", "viewer", *home], Path.cwd())
    secret = team_server.password_file("tess")
    assert f'export MLFLOW_TRACKING_PASSWORD="$(cat {secret})"' in added.stdout
    assert (secret.stat().st_mode & 0o777) == 0o600
    listed = run([CLFLOW, "team", "user", "list", *home], Path.cwd()).stdout
    assert "tess\tviewer" in listed.splitlines() and "admin\tadmin" in listed.splitlines()
    # a new role for an existing user keeps their password
    run([CLFLOW, "team", "user", "add", "tess", "--role", "member", *home], Path.cwd())
    assert secret.exists()
    assert "tess\tmember" in run([CLFLOW, "team", "user", "list", *home], Path.cwd()).stdout
    run([CLFLOW, "team", "user", "remove", "tess", *home], Path.cwd())
    assert "tess" not in run([CLFLOW, "team", "user", "list", *home], Path.cwd()).stdout
    assert not secret.exists()
    bad = run([CLFLOW, "team", "user", "add", "admin", *home], Path.cwd(), check=False)
    assert bad.returncode == 2 and "not 'admin'" in bad.stderr
