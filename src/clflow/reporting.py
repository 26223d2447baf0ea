"""Summaries of the metrics files the stages write."""

from __future__ import annotations

from pathlib import Path

from clflow.errors import ClflowError
from clflow.util.io import read_json

KEYS = ("avg_accuracy", "forgetting", "bwt", "fwt")


MAX_METRICS_BYTES = 64 << 20  # a stage's metrics are a page of numbers


def read_metrics(metrics_dir: str | Path) -> dict[str, dict]:
    """{stage: metrics} for every metrics/<stage>.json; a file that is not a JSON object of
    metrics is one line naming it."""
    found = {}
    for path in sorted(Path(metrics_dir).glob("*.json")):
        body = read_json(path, MAX_METRICS_BYTES, symlinks=True)
        if not isinstance(body, dict):
            raise ClflowError(f"expected a JSON object, got a {type(body).__name__}", file=path)
        found[path.stem] = body
    return found


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


def _scalars(body: dict, prefix: str = "") -> dict[str, object]:
    """The numbers and strings of a metrics file outside its CL-metric entries (dotted keys);
    lists, `*_std` (shown as ±) and CL entries are left out."""
    out: dict[str, object] = {}
    in_table = all(k in body for k in KEYS)  # a CL entry with numbers of its own (tame's)
    for key, value in body.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if not all(k in value for k in KEYS):
                out.update(_scalars(value, name + "."))
        elif isinstance(value, bool | int | float | str) and not key.endswith("_std"):
            if not (in_table and key in KEYS):
                out[name] = value
    return out


def _number(value: object) -> str:
    if isinstance(value, float):
        if abs(value) >= 1000:  # parameter counts, sizes: whole numbers with separators
            return f"{value:,.0f}"
        return f"{value:.3f}"
    return str(value)


def report(metrics: dict[str, dict], width: int = 100) -> str:
    """The metrics that matter, one block per stage, in `width` columns: the CL metrics per
    method (± std over seeds), then the stage's own numbers, then its notes (strings)."""
    import textwrap

    blocks = []
    rows = method_rows(metrics)
    for stage, body in metrics.items():
        lines = [f"== {stage} " + "=" * max(0, width - len(stage) - 4)]
        mine = [(method, v) for s, method, v in rows if s == stage]
        if mine:
            name_w = min(max(len("method"), *(len(m) for m, _ in mine)), width - 52)
            lines.append(
                f"{'method':<{name_w}}  {'avg accuracy':<14}{'forgetting':>11}{'BWT':>9}{'FWT':>9}"
            )
            for method, v in mine:
                std = v.get("avg_accuracy_std")
                acc = f"{v['avg_accuracy']:.3f}" + (f" ± {std:.3f}" if std is not None else "")
                label = method if len(method) <= name_w else "…" + method[-(name_w - 1) :]
                lines.append(
                    f"{label:<{name_w}}  {acc:<14}{v['forgetting']:>11.3f}{v['bwt']:>9.3f}"
                    f"{v['fwt']:>9.3f}"
                )
        scalars = _scalars(body)
        cells = [f"{k} {_number(v)}" for k, v in scalars.items() if not isinstance(v, str)]
        if cells:
            cell_w = min(max(len(c) for c in cells) + 3, width)
            per_line = max(1, width // cell_w)
            for start in range(0, len(cells), per_line):
                chunk = cells[start : start + per_line]
                lines.append("".join(c.ljust(cell_w) for c in chunk).rstrip()[:width])
        for key, value in scalars.items():
            if isinstance(value, str):
                lines += textwrap.wrap(f"{key}: {value}", width, subsequent_indent="  ")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
