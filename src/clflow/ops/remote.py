"""The project's DVC remote: configure it, push a run's outs to it, pull a teammate's.

A fresh clone that pulls gets the exact outs `dvc.lock` names, so `dvc status` is clean and
`dvc repro` retrains nothing (retraining on another CPU would change the last digits of the
floats, and with them `dvc.lock`).
"""

from __future__ import annotations

from pathlib import Path

from clflow.errors import ClflowError
from clflow.ops.dvcrun import StageFailed, checked_dvc, dvc


class RemoteError(ClflowError):
    """No DVC remote, or one that cannot be reached."""


class NoRemote(RemoteError):
    """The project has no default DVC remote."""


REMOTE_NAME = "team"


def default_remote(project: Path) -> str | None:
    """The URL of the project's default DVC remote (`dvc remote list` marks it), or None."""
    for parts in map(str.split, dvc(["remote", "list"], project).stdout.splitlines()):
        if len(parts) >= 3 and parts[-1] == "(default)":
            return parts[1]
    return None


def configure_remote(
    project: Path, url: str, endpoint_url: str | None = None, local: bool = False
) -> None:
    """Make `url` the default DVC remote `team`: in .dvc/config (shared through git) or, with
    `local`, in .dvc/config.local (this workspace only, git status stays clean)."""
    scope = ["--local"] if local else []
    config = project / ".dvc" / ("config.local" if local else "config")
    steps = [["remote", "add", *scope, "-d", "-f", REMOTE_NAME, url]]
    if endpoint_url:
        steps.append(["remote", "modify", *scope, REMOTE_NAME, "endpointurl", endpoint_url])
    for args in steps:
        checked_dvc(
            args,
            project,
            None,
            60,
            what=f"dvc {' '.join(args[:2])}",
            file=config,
            field=f"remote.{REMOTE_NAME}",
        )


def _transfer(verb: str, project: Path, timeout: float) -> str:
    """`dvc push` / `dvc pull`: DVC's summary line; RemoteError with one line otherwise."""
    url = default_remote(project)
    if url is None:
        raise NoRemote(
            f"no default DVC remote to {verb}: run `make team-up`, or "
            f"`dvc remote add -d {REMOTE_NAME} URL`",
            file=project / ".dvc" / "config",
            field="core.remote",
        )
    try:
        output = checked_dvc(
            [verb],
            project,
            None,
            timeout,
            what=f"dvc {verb}",
            file=project / ".dvc" / "config",
            field="core.remote",
        )
    except StageFailed as exc:
        lines = [ln for ln in str(exc.args[0]).splitlines()[1:] if ln.strip()]
        why = lines[-1].removeprefix("ERROR: ").strip() if lines else "failed"
        kept = "the results stay in this workspace's cache" if verb == "push" else "nothing changed"
        raise RemoteError(
            f"dvc {verb} to {url} failed: {why} ({kept}; run `dvc {verb}` again when it answers)",
            file=project / ".dvc" / "config",
            field="core.remote",
        ) from None
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else "done"


def push(project: Path, timeout: float = 1800) -> str:
    """Push every out that dvc.lock names to the default remote; DVC's summary line."""
    return _transfer("push", project, timeout)


def pull(project: Path, timeout: float = 1800) -> str:
    """Fetch and check out every out that dvc.lock names from the default remote."""
    return _transfer("pull", project, timeout)
