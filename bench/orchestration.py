"""Benchmark the orchestration layer; prints a markdown table.

    python bench/orchestration.py [--fast]

On two fresh copies of this project (same params; `--fast`: one seed, two epochs):
1. a bare `dvc repro` of every stage (copy A), then a no-op `dvc repro` (median of 3;
   target <= 3 s);
2. the `clflow-pipeline` Prefect flow over the same stages (copy B), called in this
   process with the ephemeral API already started (target: overhead <= 15 % over 1);
   the API's one-off start is timed separately;
3. on copy A, the `continual-update` flow with one new experience file (a rotated
   copy of 400 stream rows) against the full pipeline time of 1 (target <= 0.4x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clflow.scaffold import new_project

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(
    {
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "ERROR",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))


def sh(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def project_copy(dest: Path, fast: bool) -> Path:
    return new_project(ROOT, dest, {"train": {"seeds": [0], "epochs": 2}} if fast else {})


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fast", action="store_true", help="one seed, two epochs (the test-suite params)"
    )
    args = parser.parse_args()
    from prefect import flow

    from clflow.streams import load_stream
    from clflow.streams.demo import example_experience
    from clflow.util.io import write_parquet
    from flows.continual import continual_update
    from flows.pipeline import pipeline

    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory(prefix="clflow-bench-") as tmp:
        a, b = project_copy(Path(tmp) / "a", args.fast), project_copy(Path(tmp) / "b", args.fast)
        print("running: bare dvc repro ...", file=sys.stderr)
        bare = sh([*dvc, "repro"], a)
        noop = statistics.median(sh([*dvc, "repro"], a) for _ in range(3))

        api_start, _ = timed(flow(name="bench-warmup")(lambda: None))  # starts the ephemeral API
        print("running: the pipeline flow ...", file=sys.stderr)
        flow_time, _ = timed(pipeline, project=str(b))

        stream = load_stream(a / "data" / "stream")
        write_parquet(
            a / "data" / "incoming" / "new.parquet",
            example_experience(stream, rotate=25, limit=400),
        )
        print("running: continual update ...", file=sys.stderr)
        update_time, result = timed(continual_update, project=str(a))
        assert result["accepted"], result

    overhead = flow_time / bare - 1
    rows = [
        ("no-op `dvc repro` (median of 3)", f"{noop:.2f} s", "≤ 3 s", noop <= 3),
        ("bare `dvc repro`, all stages", f"{bare:.1f} s", "", None),
        ("Prefect flow, same stages (API warm)", f"{flow_time:.1f} s", "", None),
        ("flow overhead", f"{overhead:+.1%}", "≤ 15 %", overhead <= 0.15),
        ("ephemeral Prefect API start (once per process)", f"{api_start:.1f} s", "", None),
        ("continual update, 1 new experience", f"{update_time:.1f} s", "", None),
        (
            "continual update / full pipeline",
            f"{update_time / bare:.2f}×",
            "≤ 0.4×",
            update_time / bare <= 0.4,
        ),
    ]
    print(
        f"\nparams: {'--fast (1 seed, 2 epochs)' if args.fast else 'params.yaml'}; "
        f"continual stages: {result['stages']}\n"
    )
    print("| measure | value | target | met |\n|---|---|---|---|")
    for name, value, target, met in rows:
        print(
            f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |"
        )


if __name__ == "__main__":
    main()
