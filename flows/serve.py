"""Serve the deployments in `prefect.yaml` from this process (what `make serve` runs).

Needs a Prefect server (`make ui` starts one on 127.0.0.1:4200; PREFECT_API_URL
points at it). Schedules, parameters and concurrency limits come from
`prefect.yaml`, so `prefect deploy --all` and this script register the same
deployments. Stop with Ctrl-C.
"""

from __future__ import annotations

import clflow.ops.quiet  # noqa: F401  (first: Prefect reads its settings when imported)

# isort: split
import argparse
import os
import sys
from pathlib import Path

import yaml

from clflow.errors import ConfigError, cli_errors
from clflow.util.services import ServiceUnavailable, check_prefect_api


def deployments(spec_path: Path) -> list:
    """`flow.to_deployment(...)` for every deployment in prefect.yaml."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load(spec_path.read_text()) or {}
    out = []
    for d in spec.get("deployments") or []:
        try:
            flow = load_flow_from_entrypoint(d["entrypoint"])
        except Exception as exc:  # a wrong path or name in prefect.yaml
            raise ConfigError(
                f"cannot load {d.get('entrypoint')!r}: {exc}",
                file=spec_path,
                field=f"deployments.{d.get('name')}.entrypoint",
            ) from None
        sched = (d.get("schedules") or [{}])[0]
        out.append(
            flow.to_deployment(
                name=d["name"],
                description=d.get("description"),
                parameters=d.get("parameters") or {},
                cron=sched.get("cron"),
                interval=sched.get("interval"),
                tags=d.get("tags"),
                concurrency_limit=d.get("concurrency_limit"),
                triggers=triggers(d, spec_path),
            )
        )
    if not out:
        raise ConfigError("no deployments", file=spec_path, field="deployments")
    return out


def triggers(deployment: dict, spec_path: Path) -> list:
    """A deployment's `triggers:` as `prefect deploy` reads them (named after the deployment
    when unnamed)."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(DeploymentTriggerTypes)
    out = []
    for i, spec in enumerate(deployment.get("triggers") or [], start=1):
        spec = {"name": f"{deployment['name']}__automation_{i}", **spec}
        try:
            out.append(adapter.validate_python(spec))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"][1:])  # [0] is the trigger type
            raise ConfigError(
                first["msg"],
                file=spec_path,
                field=f"deployments.{deployment['name']}.triggers[{i - 1}].{where}".rstrip("."),
            ) from None
    return out


@cli_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--project", default=".", help="clflow project directory (holds prefect.yaml)"
    )
    parser.add_argument(
        "--api-timeout", type=float, default=30.0, help="seconds to wait for the Prefect API"
    )
    args = parser.parse_args(argv)
    os.chdir(args.project)  # deployments run with project "." and relative entrypoints
    if not check_prefect_api(timeout=args.api_timeout):
        raise ServiceUnavailable(
            "PREFECT_API_URL is not set: start a server (`make ui`) and point it there",
            field="PREFECT_API_URL",
        )
    from prefect import serve

    serve(*deployments(Path("prefect.yaml")))


if __name__ == "__main__":
    sys.exit(main())
