"""Stage entry points: --help, and one readable line with exit 2 for user errors."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, run


def entry_points() -> list[str]:
    """Every script a user runs: stages, and the flows and benchmarks that have a `__main__`."""
    scripts = [
        p
        for d in ("stages", "flows", "bench")
        for p in sorted((ROOT / d).glob("*.py"))
        if d == "stages" or '__name__ == "__main__"' in p.read_text()
    ]
    return [f"../{p.parent.name}/{p.name}" for p in scripts]


@pytest.mark.parametrize("script", entry_points())
def test_help(script):
    out = run([sys.executable, str(ROOT / "stages" / script), "--help"], ROOT).stdout
    assert "usage:" in out


def test_bad_stream_dir_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n")
    proc = run(
        [sys.executable, str(ROOT / "stages" / "baselines.py"), "--stream", str(tmp_path / "nope")],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: stream directory not found"


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
