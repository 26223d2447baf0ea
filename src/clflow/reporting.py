"""Summaries of the metrics files the stages write."""

from __future__ import annotations

import json
from pathlib import Path

KEYS = ("avg_accuracy", "forgetting", "bwt", "fwt")


def read_metrics(metrics_dir: str | Path) -> dict[str, dict]:
    """{stage: metrics} for every metrics/<stage>.json."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(metrics_dir).glob("*.json"))}


def _walk(body: dict, path: str) -> list[tuple[str, dict]]:
    if all(k in body for k in KEYS):
        return [(path, body)]
    found = []
    for name, vals in body.items():
        if isinstance(vals, dict):
            found += _walk(vals, f"{path}/{name}" if path else name)
    return found


def method_rows(metrics: dict[str, dict]) -> list[tuple[str, str, dict]]:
    """(stage, method path, values) for every entry, at any depth, that carries the CL metrics."""
    return [
        (stage, path or stage, vals)
        for stage, body in metrics.items()
        for path, vals in _walk(body, "")
    ]


def summary_table(metrics: dict[str, dict]) -> str:
    """A markdown table: avg accuracy (± std over seeds), forgetting, BWT, FWT per method."""
    lines = [
        "| stage | method | avg accuracy | forgetting | BWT | FWT |",
        "|---|---|---|---|---|---|",
    ]
    for stage, method, v in method_rows(metrics):
        cells = []
        for key in KEYS:
            std = v.get(f"{key}_std")
            cells.append(f"{v[key]:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        lines.append(f"| {stage} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
