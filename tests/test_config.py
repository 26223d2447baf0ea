import pytest

from clflow.config import load_params
from clflow.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_shipped_params_are_valid():
    from conftest import ROOT

    params = load_params(ROOT / "params.yaml")
    assert params.stream.source == "digits"
    assert params.baselines.methods == ["finetune", "replay", "replay_online", "joint"]
    assert params.stream.normalize == "standard" and params.stream.duplicates == "keep"


def test_typo_names_key_and_suggests_nearest(tmp_path):
    p = write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_params(p)
    line = err.value.line()
    assert str(p) in line and "train.lrr" in line and "did you mean 'train.lr'" in line
    assert "\n" not in line


def test_unknown_section_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'stream'"):
        load_params(write(tmp_path, "streem:\n  source: digits\n"))


def test_bad_value_names_field(tmp_path):
    with pytest.raises(ConfigError, match=r"field 'stream.source'.*'svhn'"):
        load_params(write(tmp_path, "stream:\n  source: svhn\n"))


def test_file_source_needs_path(tmp_path):
    with pytest.raises(ConfigError, match="set stream.path"):
        load_params(write(tmp_path, "stream:\n  source: mnist\n"))


def test_task_ids_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"task ids \[7\]"):
        load_params(write(tmp_path, "stream:\n  experiences: 3\n  tasks: [0, 7]\n"))


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML at line \d+"):
        load_params(write(tmp_path, "train:\n  lr: [1\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
