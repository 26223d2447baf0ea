"""prefect.yaml's deployments as flows/serve.py reads them: the drift trigger is wired to the event
drift-watch emits, and a bad trigger is one line naming it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from clflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"flows_{name}_spec", ROOT / "flows" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def deployment(name: str) -> dict:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return next(d for d in spec["deployments"] if d["name"] == name)


def test_continual_update_is_triggered_by_the_drift_event():
    import inspect

    serve, watch = module("serve"), module("drift_watch")
    (trigger,) = serve.triggers(deployment("continual-update"), ROOT / "prefect.yaml")
    assert trigger.expect == {watch.EVENT}
    assert trigger.posture == "Reactive" and trigger.within.total_seconds() == 300
    flow_params = inspect.signature(module("continual").continual_update.fn).parameters
    assert set(trigger.parameters) <= set(flow_params)  # every trigger parameter is the flow's
    assert trigger.parameters["wait_for_files"] > 0
    watch_params = inspect.signature(watch.drift_watch.fn).parameters
    assert set(deployment("drift-watch")["parameters"]) <= set(watch_params)


def test_a_bad_trigger_names_its_deployment_and_field():
    serve = module("serve")
    bad = {"name": "x", "triggers": [{"type": "event", "posture": "Sideways"}]}
    with pytest.raises(ConfigError) as err:
        serve.triggers(bad, Path("prefect.yaml"))
    assert "field 'deployments.x.triggers[0].posture'" in err.value.line()
