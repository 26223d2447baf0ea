"""Stage entry points: --help, and one readable line with exit 2 for user errors."""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import ROOT, free_port, run


def entry_points() -> list[str]:
    """Every script a user runs: stages, and the flows and benchmarks that have a `__main__`."""
    scripts = [
        p
        for d in ("stages", "flows", "bench")
        for p in sorted((ROOT / d).glob("*.py"))
        if d == "stages" or '__name__ == "__main__"' in p.read_text()
    ]
    return [f"../{p.parent.name}/{p.name}" for p in scripts]


# Runs each script as `__main__` with --help, all in one interpreter (one start instead of twenty:
# each would import torch and MLflow again).
HELP_HARNESS = """
import runpy, sys
for script in sys.argv[1:]:
    sys.argv, sys.path[0] = [script, "--help"], script.rsplit("/", 1)[0]
    try:
        runpy.run_path(script, run_name="__main__")
        code = "none"
    except SystemExit as exc:
        code = exc.code
    print(f"@@ {script} exit {code}", flush=True)
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    scripts = [str((ROOT / "stages" / s).resolve()) for s in entry_points()]
    out = run([sys.executable, "-c", HELP_HARNESS, *scripts], ROOT).stdout
    texts, text = {}, ""
    for line in out.splitlines(keepends=True):
        if line.startswith("@@ "):
            _, script, _, code = line.split(maxsplit=3)  # a SystemExit message has spaces
            code = code.strip()
            texts[script] = text if code in ("0", "None") else f"exit {code}\n{text}"
            text = ""
        else:
            text += line
    return texts


@pytest.mark.parametrize("script", entry_points())
def test_help(script, helps):
    text = helps[str((ROOT / "stages" / script).resolve())]
    assert text.startswith("usage:") and "--help" in text, text


def test_bad_stream_dir_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n")
    proc = run(
        [sys.executable, str(ROOT / "stages" / "baselines.py"), "--stream", str(tmp_path / "nope")],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: stream directory not found"


def test_an_unreachable_dask_scheduler_is_one_line_naming_it_and_outs_stay(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    (tmp_path / "params.yaml").write_text(f"train:\n  runner: dask\n  address: {address}\n")
    metrics = tmp_path / "metrics" / "baselines.json"
    metrics.parent.mkdir()
    metrics.write_text('{"kept": 1}')
    proc = run(
        [sys.executable, str(ROOT / "stages" / "baselines.py")],
        tmp_path, check=False, env={**os.environ, "CLFLOW_SERVICE_TIMEOUT": "1"},
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(
        f"error: {address}: field 'train.address': the Dask scheduler did not answer"
    )
    assert metrics.read_text() == '{"kept": 1}'


def test_prepare_rejects_impossible_split(tmp_path):
    (tmp_path / "params.yaml").write_text("stream:\n  experiences: 11\n")
    proc = run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "--out", str(tmp_path / "s")],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: params.yaml: field 'stream': 11 experiences need")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # runs the tame and prepare stages
def test_a_cnn_without_a_stream_shape_is_one_line_naming_it(tmp_path):
    from dataclasses import replace

    from clflow.config import StreamConfig
    from clflow.streams import build_stream, write_stream

    digits = build_stream(StreamConfig(source="digits", experiences=2, limit=200))
    write_stream(replace(digits, shape=None), tmp_path / "s")  # a user's parquet stream
    (tmp_path / "params.yaml").write_text(
        "train:\n  epochs: 1\n  seeds: [0]\ntame:\n  selector_backbone: cnn\n"
    )
    tame = [sys.executable, str(ROOT / "stages" / "tame.py"), "--stream", "s"]
    proc = run(tame, tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: field 'stream.shape': a cnn network needs the stream's"), line
    assert "Traceback" not in proc.stderr and not (tmp_path / "metrics" / "tame.json").exists()
    # the fix the line names: `prepare` stores stream.shape in the stream's meta.json
    (tmp_path / "params.yaml").write_text(
        "stream:\n  source: parquet\n  path: s\n  shape: [1, 64]\n"
    )
    run([sys.executable, str(ROOT / "stages" / "prepare.py"), "--out", "shaped"], tmp_path)
    assert json.loads((tmp_path / "shaped" / "meta.json").read_text())["shape"] == [1, 64]


def test_a_stage_help_loads_no_heavy_library():
    """`--help` answers before torch, MLflow, polars or matplotlib load (each takes a second)."""
    scripts = [str(p) for p in sorted((ROOT / "stages").glob("*.py"))]
    code = HELP_HARNESS + (
        "heavy = ('torch', 'mlflow', 'polars', 'matplotlib', 'faiss', 'prefect', 'pydantic')\n"
        "print('@@ loaded', sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = run([sys.executable, "-c", code, *scripts], ROOT).stdout
    assert out.count("exit 0") == len(scripts), out
    assert out.splitlines()[-1] == "@@ loaded []"
