"""What a flow run shows in the Prefect UI: a markdown report and the accuracy matrix table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clflow.reporting import method_rows, summary_table
from clflow.tracking.provenance import EXPERIMENT_ENV, PARENT_ENV
from clflow.tracking.store import run_url


def mlflow_link(env: Mapping[str, str]) -> str:
    """A link to the pipeline's parent run in the MLflow UI (CLFLOW_MLFLOW_UI, default
    127.0.0.1:5000)."""
    return run_url(env.get(EXPERIMENT_ENV, ""), env.get(PARENT_ENV, ""))


def run_markdown(
    title: str, stages: Mapping[str, str], metrics: dict[str, dict], link: str, extra: str = ""
) -> str:
    """The markdown artifact of a run: what each stage did, the metrics table, the MLflow link."""
    lines = [f"# {title}", "", "| stage | result |", "|---|---|"]
    lines += [f"| {s} | {r} |" for s, r in stages.items()]
    lines += [
        "",
        summary_table(metrics) if method_rows(metrics) else "_no metrics yet_",
        "",
        *outcomes(metrics),
        f"MLflow run: [{link}]({link})",
    ]
    return "\n".join(lines + ([extra] if extra else [])) + "\n"


def outcomes(metrics: dict[str, dict]) -> list[str]:
    """Markdown lines for the registry decision and the federated merge, when the run has them."""
    lines = []
    reg = metrics.get("register") or {}
    if "version" in reg:
        alias = "champion" if reg.get("promoted") else "challenger"
        decision = "promoted" if reg.get("promoted") else "rejected"
        lines += [
            f"**Registry:** version {int(reg['version'])}, alias `{alias}`: {decision} "
            f"({reg.get('reason', '')})",
            "",
        ]
    fed = metrics.get("federated") or {}
    if "merged_accuracy" in fed:
        lines += [
            f"**Federated:** merged prototypes {fed['merged_accuracy']:.3f} "
            f"(centralised {fed.get('central_accuracy', float('nan')):.3f}, each client alone "
            f"{fed.get('local_only_accuracy_mean', float('nan')):.3f}), "
            f"{int(fed.get('rejected_updates', 0))} updates rejected",
            "",
        ]
    return lines


def matrix_table(path: Path) -> list[dict[str, Any]]:
    """The accuracy matrix CSV (rows: trained through experience i) as table-artifact rows."""
    import polars as pl

    if not path.exists():
        return []
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        for row in pl.read_csv(path).to_dicts()
    ]


def publish(
    title: str,
    key: str,
    stages: Mapping[str, str],
    metrics: dict[str, dict],
    env: Mapping[str, str],
    project: Path,
    extra: str = "",
) -> None:
    """Markdown and table artifacts of a flow run (shown in the Prefect UI)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(
        run_markdown(title, stages, metrics, mlflow_link(env), extra), key=key, description=title
    )
    table = matrix_table(project / "plots" / "tame" / "matrix.csv")
    if table:
        create_table_artifact(
            table,
            key=f"{key}-accuracy-matrix",
            description="TAME accuracy matrix R[i][j]: trained through i, tested on j",
        )
