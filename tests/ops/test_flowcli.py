"""Flow scripts carry their own settings (clflow.ops.quiet) and say in one line when Prefect's
temporary API does not start."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

from clflow.ops.quiet import DEFAULTS, STARTUP_TIMEOUT

SETTINGS = (
    "from prefect.settings import get_current_settings as g; s = g(); import os; "
    "print(s.server.ephemeral.startup_timeout_seconds, s.server.analytics_enabled, "
    "os.environ['PREFECT_HOME'], os.environ['MLFLOW_DISABLE_TELEMETRY'])"
)


def bare_env(tmp_path) -> dict[str, str]:
    """The environment of a user who runs `python flows/...` outside `make`."""
    drop = set(DEFAULTS) | {"PREFECT_HOME", "PREFECT_API_URL"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PYTHONPATH": str(ROOT)}


def test_a_flow_script_sets_prefect_up_before_prefect_reads_its_settings(tmp_path):
    code = f"import flows.pipeline; {SETTINGS}"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=bare_env(tmp_path), capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    timeout, analytics, home, telemetry = out.stdout.split()
    assert float(timeout) == float(DEFAULTS[STARTUP_TIMEOUT])
    assert analytics == "False" and telemetry == "true"
    assert home == str(ROOT / ".prefect")


def test_a_user_setting_wins(tmp_path):
    env = {**bare_env(tmp_path), STARTUP_TIMEOUT: "300", "PREFECT_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", f"import flows.pipeline; {SETTINGS}"], cwd=ROOT, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    timeout, _, home, _ = out.stdout.split()
    assert float(timeout) == 300 and home == str(tmp_path)


def test_a_prefect_api_that_does_not_start_in_time_is_one_line(tmp_path):
    env = {**bare_env(tmp_path), STARTUP_TIMEOUT: "1", "PREFECT_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "flows/pipeline.py", "--project", str(ROOT), "--stage", "prepare"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and STARTUP_TIMEOUT in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
