"""Atomic writes and all-or-nothing outs (clflow.util.io)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import file_hashes

from clflow.util.io import StagedOuts, write_json

# A stage in miniature: three outs (a folder, a file, a folder of two files), written in turn.
STAGE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from clflow.util.io import StagedOuts, atomic_path, write_json

    tag = sys.argv[1]
    with StagedOuts("models/m", "metrics.json", "plots") as outs:
        with atomic_path(outs["models/m"] / "seed_0.pt") as tmp:
            tmp.write_text(tag)
        write_json(outs["metrics.json"], {"tag": tag})
        for name in ("a.csv", "b.csv"):
            with atomic_path(outs["plots"] / name) as tmp:
                tmp.write_text(tag + name)
    """
)
OUTS = ("models/m", "metrics.json", "plots")


def stage(root: Path, tag: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLFLOW_TEST_KILL_AT": str(kill_at)} if kill_at else None
    return subprocess.run(
        [sys.executable, "-c", STAGE, tag], cwd=root, env=env, capture_output=True, text=True
    )


def test_outs_change_together_or_not_at_all_at_every_kill_point(tmp_path):
    assert stage(tmp_path, "old").returncode == 0
    old = file_hashes(tmp_path, *OUTS)
    inside_commit = 0
    for k in range(1, 30):
        proc = stage(tmp_path, "new", kill_at=k)
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, proc.stderr
        if (tmp_path / "models" / ".m.commit.json").exists():
            inside_commit += 1  # killed between renames: the next start undoes the commit
            StagedOuts(*(tmp_path / o for o in OUTS))
        assert file_hashes(tmp_path, *OUTS) == old, f"killed at point {k}"
    # 4 writes of outs + the journal, then a point before each of 3 renames and at the end
    assert k == 10 and inside_commit == 4
    assert (tmp_path / "metrics.json").read_text().count("new") == 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_a_first_commit_killed_half_way_removes_what_it_added(tmp_path):
    proc = stage(tmp_path, "new", kill_at=8)  # after models/m and metrics.json moved in
    assert proc.returncode == -9 and (tmp_path / "metrics.json").exists()
    StagedOuts(*(tmp_path / o for o in OUTS))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["models"]


def test_an_exception_leaves_the_previous_outs_and_no_staged_copy(tmp_path):
    out = tmp_path / "metrics.json"
    write_json(out, {"v": 1})
    with pytest.raises(RuntimeError), StagedOuts(out, tmp_path / "plots") as outs:
        write_json(outs[out], {"v": 2})
        raise RuntimeError("the stage failed")
    assert out.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_an_out_the_stage_no_longer_writes_is_removed(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "stale.png").write_text("x")
    with StagedOuts(tmp_path / "plots") as outs:
        outs[tmp_path / "plots"].mkdir()
        (outs[tmp_path / "plots"] / "fresh.png").write_text("y")
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["fresh.png"]


def outs_with_files(root: Path) -> list[Path]:
    """The three outs of STAGE, each holding something."""
    paths = [root / o for o in OUTS]
    paths[0].mkdir(parents=True)
    (paths[0] / "seed_0.pt").write_text("model")
    paths[1].write_text("{}")
    paths[2].mkdir()
    (paths[2] / "a.csv").write_text("plot")
    return paths


@pytest.mark.parametrize(
    "journal",
    [
        b'{"existed": [false, false, false]}',  # hand-made: no outs named
        b"\x00\xff garbage",
        b"[1, 2, 3]",
        b'{"outs": ["other", "../metrics.json", "../plots"], "existed": [false, false, false]}',
        b'{"outs": null, "existed": "no"}',
    ],
)
def test_a_journal_that_is_not_this_commits_is_moved_aside_and_not_acted_on(
    tmp_path, journal, caplog
):
    outs = outs_with_files(tmp_path)
    before = file_hashes(tmp_path, *OUTS)
    (tmp_path / "models" / ".m.commit.json").write_bytes(journal)
    StagedOuts(*outs)
    assert file_hashes(tmp_path, *OUTS) == before
    assert not (tmp_path / "models" / ".m.commit.json").exists()
    assert (tmp_path / "models" / ".m.commit.json.rejected").read_bytes() == journal
    assert "not acted on" in caplog.text


def test_a_junk_set_aside_copy_never_replaces_an_out(tmp_path):
    outs = outs_with_files(tmp_path)
    before = file_hashes(tmp_path, *OUTS)
    junk = tmp_path / "models" / ".m.prev"
    junk.mkdir()
    (junk / "seed_0.pt").write_text("junk")
    names = ["m", "../metrics.json", "../plots"]  # as a commit names them: from the journal
    journal = {"outs": names, "existed": [False, False, False]}
    (tmp_path / "models" / ".m.commit.json").write_text(json.dumps(journal))
    StagedOuts(*outs)
    assert file_hashes(tmp_path, *OUTS) == before and not junk.exists()


@pytest.mark.slow
def test_a_forged_journal_beside_a_real_stage_loses_nothing(built_project, tmp_path):
    """The tame stage, stopped at once by a bad params file, with a hand-made journal beside its
    outs: every out stays."""
    from conftest import ROOT, copy_project, run

    project = copy_project(built_project, tmp_path / "p")
    tame = ("models/tame", "metrics/tame.json", "plots/tame")
    before = file_hashes(project, *tame)
    (project / "models" / ".tame.commit.json").write_text('{"existed": [false, false, false]}')
    (project / "bad.yaml").write_text("train: {lrr: 1}\n")
    proc = run(
        [sys.executable, str(ROOT / "stages" / "tame.py"), "--params", "bad.yaml"],
        project,
        check=False,
    )
    assert proc.returncode == 2 and "lrr" in proc.stderr.splitlines()[-1]
    assert file_hashes(project, *tame) == before
