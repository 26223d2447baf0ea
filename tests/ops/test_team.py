"""`clflow team` on the real PostgreSQL 15 and `mlflow server`: up prints the exports and
upgrades an old schema, the data survives down/up, and each fault is one line."""

from __future__ import annotations

import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, need_postgres, run, team_home

from clflow.ops import team as services

pytestmark = pytest.mark.slow
CLFLOW = str(Path(sys.executable).with_name("clflow"))


def old_schema(crew: services.Team, steps: int = 3) -> None:
    """MLflow's tables as a release `steps` migrations older than this one left them."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase
    from sqlalchemy import create_engine

    config = _get_alembic_config(crew.backend_uri)
    revision = _get_latest_schema_revision()
    for _ in range(steps):
        revision = ScriptDirectory.from_config(config).get_revision(revision).down_revision
    engine = create_engine(crew.backend_uri, connect_args={"passfile": str(crew.pgpass)})
    InitialBase.metadata.create_all(engine)  # what MLflow creates before its migrations
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def team_cli(action: str, crew: services.Team, project: Path, **kw):
    return run(
        [CLFLOW, "team", action, "--project", str(project), "--dir", str(crew.home),
         "--pg-port", str(crew.pg_port), "--mlflow-port", str(crew.mlflow_port)],
        project, **kw,
    )  # fmt: skip


def test_team_up_down_keeps_data_upgrades_old_schema_and_names_faults(tmp_path):
    from mlflow import MlflowClient

    need_postgres()
    home = team_home()
    crew = services.Team.load(home / ".team", pg_port=free_port(), mlflow_port=free_port())
    project = tmp_path / "project"
    project.mkdir()
    run(["git", "init", "-q"], project)
    run([sys.executable, "-m", "dvc", "init", "-q"], project)
    try:
        services.start_postgres(crew)
        old_schema(crew)  # a database an older MLflow made
        assert services.schema_state(crew) == "stale"

        out = team_cli("up", crew, project).stdout
        assert "schema upgraded by mlflow db upgrade" in out
        assert (
            out.splitlines()[-1]
            == f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{crew.mlflow_port}"
        )
        assert services.schema_state(crew) == "current"
        remote = (project / ".dvc" / "config").read_text()
        assert f"url = {crew.remote}" in remote and "remote = team" in remote
        assert (crew.admin_password.stat().st_mode & 0o777) == 0o600
        client = MlflowClient(crew.tracking_uri)
        with services.as_admin(crew):
            client.create_registered_model("kept")
        with pytest.raises(urllib.error.HTTPError) as anonymous:  # the UI asks for a login
            urllib.request.urlopen(crew.tracking_uri, timeout=10)
        assert anonymous.value.code == 401

        assert "data kept" in team_cli("down", crew, project).stdout
        status = team_cli("status", crew, project).stdout
        assert "postgres: stopped" in status and "mlflow: stopped" in status
        # server down: one line naming it
        down = run(
            [CLFLOW, "registry", "list", "--model", "kept", "--uri", crew.tracking_uri],
            project, check=False, env={**__import__("os").environ, "CLFLOW_SERVICE_TIMEOUT": "2"},
        )  # fmt: skip
        assert down.returncode != 0 and down.stderr.count("\n") == 1
        assert crew.tracking_uri in down.stderr and "did not answer" in down.stderr

        # wrong password: one line, nothing lost
        saved = crew.pgpass.read_text()
        crew.pgpass.write_text(saved.rsplit(":", 1)[0] + ":wrong\n")
        bad = team_cli("up", crew, project, check=False)
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1, bad.stderr
        assert "password authentication failed" in bad.stderr
        crew.pgpass.write_text(saved)
        with socket.socket() as squatter:  # another program on the MLflow port
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", crew.mlflow_port))
            squatter.listen()
            taken = team_cli("up", crew, project, check=False)
        assert taken.returncode != 0 and taken.stderr.count("\n") == 1, taken.stderr
        assert f"port {crew.mlflow_port} is in use" in taken.stderr

        team_cli("up", crew, project)  # the data survived down and a failed up
        with services.as_admin(crew):  # the admin too: its password was made once
            assert client.get_registered_model("kept").name == "kept"
        assert "(default, kept)" in team_cli("up", crew, project).stdout  # idempotent
    finally:
        services.down(crew)
        shutil.rmtree(home, ignore_errors=True)
