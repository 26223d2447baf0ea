"""clflow's rules on top of MLflow's basic auth, as pure functions (the team tests run them on
the real server: tests/ops/test_team_roles.py)."""

from __future__ import annotations

import pytest

from clflow.errors import access_refused, refusals_named
from clflow.tracking.authz import Need, created, need

ALIAS = "/api/2.0/mlflow/registered-models/alias"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_moving_or_deleting_champion_needs_manage(method):
    rule = need(method, ALIAS, {"name": "clflow-tame", "alias": "champion"})
    assert rule == Need("clflow-tame", "can_manage", False, "moving `champion` of clflow-tame")
    ajax = need(method, ALIAS.replace("/api/", "/ajax-api/"), {"name": "m", "alias": "champion"})
    assert ajax is not None and ajax.capability == "can_manage"


def test_other_aliases_reading_champion_and_other_routes_keep_mlflows_rule():
    assert need("POST", ALIAS, {"name": "m", "alias": "challenger"}) is None
    assert need("GET", ALIAS, {"name": "m", "alias": "champion"}) is None  # reading it
    assert need("POST", "/api/2.0/mlflow/runs/create", {"name": "x.lease"}) is None
    assert need("GET", "/api/2.0/mlflow/registered-models/search", {}) is None
    assert need("POST", ALIAS, {"name": ["m"], "alias": "champion"}) is None  # MLflow refuses it


@pytest.mark.parametrize("route", ["create", "get", "delete", "set-tag"])
def test_the_lease_is_governed_by_its_model(route):
    rule = need("POST", f"/api/2.0/mlflow/registered-models/{route}", {"name": "clflow-tame.lease"})
    assert rule == Need("clflow-tame", "can_update", True, "the promotion lease of clflow-tame")
    assert need("POST", "/api/2.0/mlflow/registered-models/create", {"name": ".lease"}) is None


def test_creations_whose_user_is_recorded():
    assert created("POST", "/api/2.0/mlflow/runs/create") == "run"
    assert created("POST", "/ajax-api/2.0/mlflow/model-versions/create") == "model_version"
    assert created("GET", "/api/2.0/mlflow/runs/create") is None
    assert created("POST", "/api/2.0/mlflow/registered-models/create") is None


class Refusal(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.error_code, self.message = code, message


def test_refusals_are_one_line_naming_server_and_user(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "vera")
    denied = Refusal("PERMISSION_DENIED", "PERMISSION_DENIED: moving `champion` of m needs\nMANAGE")
    line = access_refused(denied, "http://team:5050").line()
    assert line == (
        "http://team:5050: the MLflow server denied this to user 'vera' (403): moving "
        "`champion` of m needs MANAGE"
    )
    plain = Refusal("UNAUTHENTICATED", "API request failed. Response body: 'You are not'")
    assert "refused the credentials of user 'vera' (401)" in access_refused(plain, "u").line()
    assert access_refused(Refusal("RESOURCE_DOES_NOT_EXIST", "no")) is None
    with pytest.raises(Exception, match="http://team:5050: the MLflow server denied"):
        with refusals_named("http://team:5050"):
            raise denied
    with pytest.raises(KeyError):  # anything else passes through as it was
        with refusals_named("http://team:5050"):
            raise KeyError("x")
