"""The team MLflow server's permissions: MLflow's basic-auth app plus clflow's two rules.

MLflow's own app (users, passwords, permissions READ < EDIT < MANAGE per experiment and
registered model) lets anyone with EDIT on a model both register versions and move its aliases.
clflow's roles need the two apart, so `mlflow server --app-name clflow-auth` (team mode) runs
MLflow's app with two rules in front of its check:

- moving or deleting the `champion` alias of model X needs MANAGE on X (the maintainer role);
  other aliases (`challenger`) keep MLflow's rule, EDIT;
- the registry lease of X (the registered model `X.lease`, clflow.tracking.lease) is governed by
  X: EDIT on X takes, reads and breaks it. A member may thus break the expired lease of a
  teammate who died, and a viewer cannot take it at all.

It also names who created each run and model version: MLflow's server stores the user the
client claims for a run (its OS login) and none for a version, so the registry's "Created by"
stayed empty. After a create succeeds, the authenticated user is written on the new row.

This module runs inside the MLflow server process (the `mlflow.app` entry point); `need` and
`created` are the pure rules, `create_app` the wiring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from clflow.tracking.lease import SUFFIX as LEASE_SUFFIX
from clflow.tracking.registry import CHAMPION  # the one alias only maintainers move

REGISTRY_ROUTES = "/mlflow/registered-models/"
Created = Literal["run", "model_version"]
CREATE_ROUTES: dict[str, Created] = {
    "/mlflow/runs/create": "run",
    "/mlflow/model-versions/create": "model_version",
}
Capability = Literal["can_update", "can_manage"]
ROLE_NEEDED: dict[Capability, str] = {"can_update": "EDIT", "can_manage": "MANAGE"}


@dataclass(frozen=True)
class Need:
    """What a request needs on a registered model, and whether it replaces MLflow's own check
    (True for the lease, whose permissions are its model's) or comes on top of it."""

    model: str
    capability: Capability
    replaces_mlflow: bool
    what: str


def need(method: str, path: str, params: Mapping[str, Any]) -> Need | None:
    """clflow's rule for a request (None: MLflow's own check alone decides)."""
    if REGISTRY_ROUTES not in path:
        return None
    name = params.get("name")
    if not isinstance(name, str) or not name:
        return None
    if name.endswith(LEASE_SUFFIX) and len(name) > len(LEASE_SUFFIX):
        model = name[: -len(LEASE_SUFFIX)]
        return Need(model, "can_update", True, f"the promotion lease of {model}")
    moves = method in ("POST", "DELETE")  # GET reads which version the alias names
    if moves and path.endswith("/registered-models/alias") and params.get("alias") == CHAMPION:
        return Need(name, "can_manage", False, f"moving `{CHAMPION}` of {name}")
    return None


def created(method: str, path: str) -> Created | None:
    """What a request creates, when it is one whose creator clflow records."""
    if method != "POST":
        return None
    return next((kind for route, kind in CREATE_ROUTES.items() if path.endswith(route)), None)


def _params() -> dict[str, Any]:
    """The request's `name` and `alias`, read as MLflow's own validators read them."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth

    found = {}
    for key in ("name", "alias"):
        try:
            found[key] = auth._get_request_param(key)
        except MlflowException:  # absent: a search, or a malformed request MLflow refuses itself
            pass
    return found


def _forbidden(rule: Need, user: str):
    from flask import jsonify

    needed = ROLE_NEEDED[rule.capability]
    response = jsonify(
        error_code="PERMISSION_DENIED",
        message=f"{rule.what} needs {needed} on {rule.model}; user '{user}' does not have it",
    )
    response.status_code = 403
    return response


def gate(mlflow_check: Callable[[], Any]) -> Callable[[], Any]:
    """MLflow's before-request check with clflow's rules in front of it."""

    def check():
        from flask import Response, g, request
        from mlflow.server import auth

        rule = need(request.method, request.path, _params())
        if rule is None or not rule.replaces_mlflow:
            refused = mlflow_check()  # authentication, then MLflow's permission check
            if refused is not None or rule is None:
                return refused
        else:  # the lease: authenticate as MLflow does, then judge by its model
            who = auth.authenticate_request()
            if isinstance(who, Response):
                return who
            g.mlflow_authenticated_user = who.username
        if auth.sender_is_admin():
            return None
        permission = auth._get_registered_model_permission(rule.model)
        if getattr(permission, rule.capability):
            return None
        return _forbidden(rule, auth.authenticate_request().username)

    return check


def stamp_creator(response):
    """After a run or a model version is created: its user is the one who authenticated."""
    from flask import g, request
    from mlflow.server import handlers

    kind = created(request.method, request.path)
    user = g.get("mlflow_authenticated_user")
    if kind is None or response.status_code != 200 or not user:
        return response
    body = response.get_json(silent=True) or {}
    if kind == "model_version":
        from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

        row = body.get("model_version", {})
        query = dict(name=row.get("name"), version=int(row.get("version", 0)))
        store, table = handlers._get_model_registry_store(), SqlModelVersion
    else:
        from mlflow.entities import RunTag
        from mlflow.store.tracking.dbmodels.models import SqlRun

        run_id = body.get("run", {}).get("info", {}).get("run_id", "")
        query, store, table = dict(run_uuid=run_id), handlers._get_tracking_store(), SqlRun
        store.set_tag(run_id, RunTag("mlflow.user", user))  # the runs table's "User" column
    with store.ManagedSessionMaker() as session:
        session.query(table).filter_by(**query).update({"user_id": user})
    return response


def create_app():
    """The MLflow server app with basic auth and clflow's rules (uvicorn calls this)."""
    from mlflow.server import app as flask_app
    from mlflow.server import auth

    served = auth.create_app(flask_app)
    checks = flask_app.before_request_funcs.setdefault(None, [])
    checks[checks.index(auth._before_request)] = gate(auth._before_request)
    flask_app.after_request(stamp_creator)
    return served
