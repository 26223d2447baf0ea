"""Team mode on loopback: PostgreSQL 15, an MLflow tracking server on it, and a DVC remote.

`clflow team up` (`make team-up`) starts both servers and prints the exports; `clflow team down`
stops them and keeps the data (`.team/` by default): the database, the proxied artifacts, the
local DVC remote and the ports in `team.json`. PostgreSQL refuses to run as root, so as root its
commands run as the `postgres` user (`runuser`), which then owns the data directory. Passwords
never reach a command line: the MLflow server and clflow read `pgpass` (libpq's PGPASSFILE).

The MLflow server requires a user (MLflow's basic auth, its users in the team's PostgreSQL, and
clflow's rule that only a maintainer moves `champion`: clflow.tracking.authz). `team up` makes
the admin (password in `mlflow-admin`, mode 0600) and the team's experiment and model;
`clflow team user add NAME --role R` gives a teammate a password and R's permissions on both.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from clflow.errors import ClflowError
from clflow.ops.remote import REMOTE_NAME, configure_remote, default_remote
from clflow.util.io import atomic_path, write_json
from clflow.util.services import ServiceUnavailable, wait_for, wait_for_port

TEAM_FILE = "team.json"
DB_OWNER = "postgres"  # the unprivileged user PostgreSQL runs as when clflow runs as root
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)
SchemaState = Literal["empty", "current", "stale"]
ServiceState = Literal["running", "stopped"]
Role = Literal["viewer", "member", "maintainer"]
# MLflow permission on the team's (experiment, registered model) for each role: a viewer reads,
# a member logs runs and registers versions, a maintainer also moves `champion` (MANAGE)
ROLES: dict[Role, tuple[str, str]] = {
    "viewer": ("READ", "READ"),
    "member": ("EDIT", "EDIT"),
    "maintainer": ("MANAGE", "MANAGE"),
}
ADMIN = "admin"


class TeamError(ClflowError):
    """A team service that cannot be started, reached or configured."""


@dataclass(frozen=True)
class Team:
    """Where a team's services keep their data, and the loopback ports they listen on."""

    home: Path
    pg_port: int = 5433
    mlflow_port: int = 5050
    user: str = "mlflow"
    database: str = "mlflow"
    auth_database: str = "mlflow_auth"  # MLflow's users and permissions
    host: str = "127.0.0.1"  # where the MLflow server listens (beyond loopback: TLS proxy)
    experiment: str = "clflow"  # params.yaml tracking.experiment
    model: str = "clflow-tame"  # params.yaml register.model_name

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres"

    @property
    def pgpass(self) -> Path:
        return self.home / "pgpass"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def remote(self) -> Path:
        return self.home / "dvc-remote"

    @property
    def prefect_auth(self) -> Path:
        return self.home / "prefect-auth"

    @property
    def admin_password(self) -> Path:
        return self.home / "mlflow-admin"

    @property
    def auth_config(self) -> Path:
        return self.home / "mlflow-auth.ini"

    def password_file(self, user: str) -> Path:
        return self.home / "users" / user

    @property
    def mlflow_pid(self) -> Path:
        return self.home / "mlflow.pid"

    @property
    def mlflow_log(self) -> Path:
        return self.home / "mlflow.log"

    @property
    def tracking_uri(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.mlflow_port}"

    @property
    def backend_uri(self) -> str:
        """The MLflow backend store; the password comes from `pgpass`, not the URI."""
        return f"postgresql://{self.user}@127.0.0.1:{self.pg_port}/{self.database}"

    @classmethod
    def load(cls, home: str | Path, **ports: int | None) -> Team:
        """The team in `home` (its saved ports), with `ports` given explicitly taking over."""
        home = Path(home).resolve()
        saved = home / TEAM_FILE
        team = cls(home)
        if saved.exists():
            fields = json.loads(saved.read_text())
            team = cls(home, **{k: v for k, v in fields.items() if k != "home"})
        return replace(team, **{k: v for k, v in ports.items() if v is not None})

    def save(self) -> None:
        write_json(self.home / TEAM_FILE, {k: v for k, v in asdict(self).items() if k != "home"})

    def env(self) -> dict[str, str]:
        """The environment for a process that talks to the database (libpq reads PGPASSFILE)."""
        return {**os.environ, "PGPASSFILE": str(self.pgpass), "PGCONNECT_TIMEOUT": "10"}


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL 15 program (Debian's, else on PATH)."""
    for folder in PG_BIN_DIRS:
        if (Path(folder) / name).exists():
            return str(Path(folder) / name)
    found = shutil.which(name)
    if found is None:
        raise TeamError(
            f"PostgreSQL's {name} is not installed: run `apt-get install -y postgresql-15`",
            field="postgres",
        )
    return found


def _as_owner(cmd: list[str]) -> list[str]:
    """`cmd` run as the database's owner: PostgreSQL's server programs refuse root."""
    return ["runuser", "-u", DB_OWNER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str, where: Path, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"]
        raise TeamError(f"{what} failed: {lines[-1].strip()}", file=where)
    return proc.stdout


def postgres_state(team: Team) -> ServiceState:
    if not (team.pgdata / "PG_VERSION").exists():
        return "stopped"
    proc = subprocess.run(
        _as_owner([pg_tool("pg_ctl"), "status", "-D", str(team.pgdata)]), capture_output=True
    )
    return "running" if proc.returncode == 0 else "stopped"


def _write_private(path: Path, text: str) -> None:
    """Write a secret readable by its owner alone (mode 0600 from the start, never wider)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)


def _ensure_secret(path: Path, text: str) -> str:
    """The secret in `path`, made once from `text` (mode 0600); whole or absent: a reader never
    sees half a secret (mkstemp's file is 0600 already)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            _write_private(tmp, text)
    return path.read_text().strip()


def ensure_prefect_auth(team: Team) -> Path:
    """The team Prefect server's auth string (`clflow:<random>`, made once, mode 0600): `make ui`
    starts the server with it as PREFECT_SERVER_API_AUTH_STRING, and every client (flows,
    workers, `make serve`) sends it as PREFECT_API_AUTH_STRING; without it the API answers 401,
    event websockets included."""
    _ensure_secret(team.prefect_auth, f"clflow:{secrets.token_urlsafe(24)}")
    return team.prefect_auth


def _write_auth_config(team: Team) -> None:
    """MLflow's auth settings: users in the team's PostgreSQL, READ for whoever has no grant.
    No secret in it: the admin's first password comes from the environment."""
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = postgresql://{team.user}@127.0.0.1:{team.pg_port}/{team.auth_database}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a login checked once a minute, not on every request (PBKDF2 is slow by design: a
        # pipeline makes hundreds of requests). One server worker, so a password change or a
        # removed user takes effect at once on the server that made it
        "auth_cache_ttl_seconds = 60\n"
    )
    with atomic_path(team.auth_config) as tmp:
        tmp.write_text(text)


def _init_postgres(team: Team) -> None:
    """A new cluster whose superuser is `team.user`, with a random password in `team.pgpass`."""
    password = secrets.token_urlsafe(24)
    team.pgdata.mkdir(parents=True, exist_ok=True)
    pwfile = team.home / ".initdb-password"  # mode 0600, its owner the database owner
    _write_private(pwfile, password + "\n")
    try:
        if os.geteuid() == 0:
            shutil.chown(team.pgdata, DB_OWNER)
            shutil.chown(pwfile, DB_OWNER)
            team.pgdata.chmod(0o700)
            if subprocess.run(_as_owner(["test", "-w", str(team.pgdata)])).returncode != 0:
                raise TeamError(
                    f"the `{DB_OWNER}` user cannot reach the data directory: put the team "
                    "directory where it can (make team-up TEAM_DIR=/var/tmp/clflow-team)",
                    file=team.pgdata,
                )
        _run(
            _as_owner(
                [
                    pg_tool("initdb"),
                    "-D",
                    str(team.pgdata),
                    "-U",
                    team.user,
                    "--pwfile",
                    str(pwfile),
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ]
            ),
            "initdb",
            team.pgdata,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    # libpq ignores a password file that others can read
    _write_private(team.pgpass, f"127.0.0.1:*:*:{team.user}:{password}\n")


def start_postgres(team: Team) -> None:
    """Initialise (first time), start on 127.0.0.1:pg_port (TCP only), create the database."""
    if not (team.pgdata / "PG_VERSION").exists():
        _init_postgres(team)
    if not team.pgpass.exists():
        raise TeamError(
            "the database password file is missing: restore it, or remove the team directory "
            "to start over",
            file=team.pgpass,
        )
    if postgres_state(team) == "stopped":
        options = f"-p {team.pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        log = team.pgdata / "server.log"
        try:
            _run(
                _as_owner(
                    [
                        pg_tool("pg_ctl"),
                        "start",
                        "-D",
                        str(team.pgdata),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        options,
                    ]
                ),
                "pg_ctl start",
                team.pgdata,
            )
        except TeamError as exc:
            raise TeamError(f"{exc.args[0]}; {_last_error(log)}", file=team.pgdata) from None
    _ensure_database(team)


def _last_error(log: Path) -> str:
    """The last FATAL/ERROR line of a server log (why it stopped)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"no log at {log}"
    errors = [ln for ln in lines if any(k in ln for k in ("FATAL", "ERROR", "Error", "error"))]
    return (errors or lines or ["(empty log)"])[-1].strip()


def connect(team: Team, database: str | None = None):
    """A psycopg connection over TCP with the team's password file."""
    import psycopg

    try:
        return psycopg.connect(
            host="127.0.0.1",
            port=team.pg_port,
            user=team.user,
            dbname=database or team.database,
            passfile=str(team.pgpass),
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        detail = " ".join(str(exc).split())
        raise TeamError(f"cannot connect to PostgreSQL: {detail}", file=team.backend_uri) from None


def _ensure_database(team: Team) -> None:
    with connect(team, "postgres") as conn:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        for name in (team.database, team.auth_database):
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')


def stop_postgres(team: Team) -> None:
    if postgres_state(team) == "running":
        _run(
            _as_owner([pg_tool("pg_ctl"), "stop", "-D", str(team.pgdata), "-m", "fast", "-w"]),
            "pg_ctl stop",
            team.pgdata,
        )


def schema_state(team: Team) -> SchemaState:
    """Whether the MLflow tables are absent, at MLflow's newest revision, or older."""
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version
    from sqlalchemy import create_engine, inspect

    engine = create_engine(
        team.backend_uri, connect_args={"passfile": str(team.pgpass), "connect_timeout": 10}
    )
    try:
        if not inspect(engine).get_table_names():
            return "empty"
        current = _get_schema_version(engine)
        return "current" if current == _get_latest_schema_revision() else "stale"
    finally:
        engine.dispose()


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def upgrade_schema(team: Team) -> bool:
    """`mlflow db upgrade` when the schema is older than this MLflow's; True when it ran."""
    if schema_state(team) != "stale":
        return False  # an empty database gets its tables from the server itself
    _run(
        [_bin("mlflow"), "db", "upgrade", team.backend_uri],
        "mlflow db upgrade",
        team.home,
        env=team.env(),
    )
    return True


def mlflow_state(team: Team) -> ServiceState:
    return "running" if _pid(team.mlflow_pid) is not None else "stopped"


def _listening(port: int) -> bool:
    """Whether a program accepts connections on 127.0.0.1:`port` (one try; a port whose last
    server has just stopped is free, though a plain bind would fail while its connections
    linger)."""
    try:
        wait_for_port(f"127.0.0.1:{port}", 0, "a program")
        return True
    except ServiceUnavailable:
        return False


def _pid(path: Path) -> int | None:
    """The pid in `path` if that process is alive and still an MLflow server (after a reboot
    the number may belong to another program, which `team down` must not stop)."""
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"mlflow" in cmdline else None


def start_mlflow(team: Team, timeout: float = 120.0) -> None:
    """`mlflow server` on the database, artifacts proxied to `team.artifacts` (detached)."""
    if mlflow_state(team) == "running":
        return
    if _listening(team.mlflow_port):  # else /health would answer for another program
        raise TeamError(
            f"port {team.mlflow_port} is in use: stop what listens there, or pick another "
            "(make team-up TEAM_MLFLOW_PORT=...)",
            file=team.tracking_uri,
        )
    team.artifacts.mkdir(parents=True, exist_ok=True)
    _write_auth_config(team)
    cmd = [
        _bin("mlflow"),
        "server",
        "--app-name",
        "clflow-auth",  # MLflow's basic auth + clflow's champion rule (clflow.tracking.authz)
        "--backend-store-uri",
        team.backend_uri,
        "--artifacts-destination",
        str(team.artifacts),
        "--host",
        team.host,
        "--port",
        str(team.mlflow_port),
        "--workers",
        "1",
    ]
    # no GenAI job runner (clflow has no jobs for it): a lighter server
    env = {
        **team.env(),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_AUTH_CONFIG_PATH": str(team.auth_config),
        # read once, when the user store is new (the admin is made then)
        "MLFLOW_AUTH_ADMIN_PASSWORD": _ensure_secret(
            team.admin_password, secrets.token_urlsafe(24)
        ),
        # the auth app's CSRF key (its sign-up form): the same across restarts
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _ensure_secret(
            team.home / "mlflow-secret-key", secrets.token_urlsafe(32)
        ),
    }
    with open(team.mlflow_log, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `clflow team up`; team down stops its group
        )
    with atomic_path(team.mlflow_pid) as tmp:
        tmp.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            team.mlflow_pid.unlink(missing_ok=True)
            raise TeamError(
                f"mlflow server exited ({proc.returncode}): {_last_error(team.mlflow_log)}",
                file=team.mlflow_log,
            )
        try:
            wait_for(f"{team.tracking_uri}/health", 2.0, "the MLflow server")
            return
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                stop_mlflow(team)
                raise TeamError(
                    f"mlflow server did not answer within {timeout:g} s", file=team.mlflow_log
                ) from None


def stop_mlflow(team: Team) -> None:
    pid = _pid(team.mlflow_pid)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if _pid(team.mlflow_pid) is None:
                break
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
            except ChildProcessError:
                pass
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
    team.mlflow_pid.unlink(missing_ok=True)


def up(
    team: Team, project: Path, remote: str | None = None, endpoint_url: str | None = None
) -> list[str]:
    """Start PostgreSQL and MLflow, configure the DVC remote; the lines to paste."""
    team.home.mkdir(parents=True, exist_ok=True)
    team.save()
    start_postgres(team)
    upgraded = upgrade_schema(team)
    start_mlflow(team)
    lines = [
        f"# PostgreSQL on 127.0.0.1:{team.pg_port} ({team.pgdata})"
        + (" - schema upgraded by mlflow db upgrade" if upgraded else "")
    ]
    lines.append(f"# MLflow UI and tracking server: {team.tracking_uri}")
    if (project / ".dvc").is_dir():
        current = default_remote(project)
        if remote or current is None:
            current = remote or str(team.remote)
            configure_remote(project, current, endpoint_url)
            lines.append(
                f"# DVC remote `{REMOTE_NAME}` -> {current}: commit .dvc/config so "
                "teammates pull from it"
            )
        else:
            lines.append(f"# DVC remote (default, kept): {current}")
    ensure_team_resources(team)
    lines.append(
        f"# MLflow requires a user; you are its admin ({team.admin_password}). Give teammates "
        "their own: clflow team user add NAME --role viewer|member|maintainer"
    )
    auth = ensure_prefect_auth(team)
    lines.append(f"# the team Prefect server (make ui) requires this auth string: {auth}")
    lines.append(f'export PREFECT_API_AUTH_STRING="$(cat {auth})"')
    lines.append(f"export MLFLOW_TRACKING_USERNAME={ADMIN}")
    lines.append(f'export MLFLOW_TRACKING_PASSWORD="$(cat {team.admin_password})"')
    lines.append(f"export MLFLOW_TRACKING_URI={team.tracking_uri}")
    return lines


@contextmanager
def logged_in(username: str, password: str) -> Iterator[None]:
    """MLflow clients in this block talk to a server as `username` (they read the credentials
    from the environment on every request); the caller's own are put back afterwards."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(zip(keys, (username, password), strict=True))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def as_admin(team: Team):
    """`logged_in` as the team server's admin."""
    return logged_in(ADMIN, team.admin_password.read_text().strip())


def ensure_team_resources(team: Team) -> str:
    """The team's experiment and registered model, made by the admin (whoever creates one in
    MLflow manages it, so a member must not be first); returns the experiment id."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from clflow.tracking.store import EXPERIMENT_KIND

    with as_admin(team):
        client = MlflowClient(team.tracking_uri)
        found = client.get_experiment_by_name(team.experiment)
        experiment = (
            found.experiment_id
            if found is not None
            else client.create_experiment(team.experiment, tags=EXPERIMENT_KIND)
        )
        try:
            client.create_registered_model(team.model)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    return experiment


def _check_user_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name) or name == ADMIN:
        raise TeamError(
            f"user name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-', not '{ADMIN}'",
            field="user",
        )


def _users(team: Team):
    """MLflow's client of the auth app's REST API (imported quietly: its Starlette
    deprecation warning is MLflow's, not the user's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient
    return AuthServiceClient(team.tracking_uri)


def add_user(team: Team, name: str, role: Role) -> Path:
    """Make user `name` with a new password (in `users/NAME`, mode 0600) and `role`'s
    permissions; an existing user keeps their password and gets `role` instead of theirs."""
    from mlflow.exceptions import MlflowException

    _check_user_name(name)
    experiment = ensure_team_resources(team)
    with as_admin(team):
        users = _users(team)
        try:
            users.get_user(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            password = secrets.token_urlsafe(18)
            users.create_user(name, password)
            with atomic_path(team.password_file(name)) as tmp:
                _write_private(tmp, password + "\n")
        for kind, key, permission in zip(
            ("experiment", "registered_model"), (experiment, team.model), ROLES[role], strict=True
        ):
            try:
                users.revoke_user_permission(name, kind, key)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            users.grant_user_permission(name, kind, key, permission)
    return team.password_file(name)


def remove_user(team: Team, name: str) -> None:
    """Delete user `name` (their runs and versions stay, with their name on them)."""
    _check_user_name(name)
    with as_admin(team):
        _users(team).delete_user(name)
    team.password_file(name).unlink(missing_ok=True)


def list_users(team: Team) -> list[dict[str, str]]:
    """Every user with their role (read back from their permission on the team's model)."""
    by_permission = {model: role for role, (_, model) in ROLES.items()}
    with as_admin(team):
        users = _users(team)  # first: it imports MLflow's auth package quietly
        from mlflow.server.auth.routes import LIST_USERS

        rows = []
        for user in users._request(LIST_USERS, "GET")["users"]:
            name = user["username"]
            if user["is_admin"]:
                role = "admin"
            else:
                held = users.get_user_permission(name, "registered_model", team.model)
                role = by_permission.get(held.permission, f"({held.permission})")
            rows.append({"user": name, "role": role})
    return rows


def down(team: Team) -> list[str]:
    """Stop MLflow, then PostgreSQL; the data stays in `team.home`."""
    stop_mlflow(team)
    stop_postgres(team)
    return [f"# stopped; data kept in {team.home} (make team-up starts it again)"]


def status(team: Team) -> dict[str, str]:
    return {
        "postgres": f"{postgres_state(team)} (127.0.0.1:{team.pg_port}, {team.pgdata})",
        "mlflow": f"{mlflow_state(team)} ({team.tracking_uri})",
    }
