import pytest

from clflow.config import BaselinesConfig, TameConfig, load_params
from clflow.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_shipped_params_are_valid():
    from conftest import ROOT

    params = load_params(ROOT / "params.yaml")
    assert params.stream.source == "digits"
    assert params.baselines == BaselinesConfig()  # params.yaml shows the defaults
    assert params.tame == TameConfig() and params.tame.selector_backbone == "auto"
    assert params.stream.normalize == "standard" and params.stream.duplicates == "keep"


def test_a_renamed_key_says_what_it_became(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("tame:\n  min_jump: 1.0\n")
    with pytest.raises(ConfigError, match="tame.min_jump.*became tame.min_rise"):
        load_params(p)


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


@pytest.mark.parametrize(
    "text, field, message",
    [
        ("train:\n  lr: .inf\n", "train.lr", "finite number"),
        ("tame:\n  min_rise: .inf\n", "tame.min_rise", "finite number"),
        ("stream:\n  rotation_step: .nan\n", "stream.rotation_step", "finite number"),
        ("train:\n  epochs: 1000000000\n", "train.epochs", "less than or equal to 1000"),
        ("train:\n  seeds: [99999999999999999999999]\n", "train.seeds.0", "less than or equal"),
        ("train:\n  seeds: [0, 0]\n", "train", "seeds repeat"),
        ('tracking:\n  experiment: ""\n', "tracking.experiment", "at least 1 character"),
        ("register:\n  model_name: a/b\n", "register.model_name", "should match pattern"),
        ("train:\n  lr: 0.1\n  lr: 0.2\n", "lr", "key given twice (line 3)"),
    ],
)
def test_careless_values_are_refused_in_one_line(tmp_path, text, field, message):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, text))
    line = err.value.line()
    assert f"field '{field}'" in line and message in line and "\n" not in line, line


def test_the_file_itself_is_checked_before_it_is_parsed(tmp_path):
    p = tmp_path / "params.yaml"
    for content, message in [
        (b"", "empty: no sections"),
        (b"train:\n  lr: 0.1\xff\n", r"not UTF-8 text \(byte 0xff, line 2\)"),
        (b"a: &a [x, x]\n" + b"".join(b"b%d: [*a, *a]\n" % i for i in range(60)), "aliases"),
        (b"# " + b"x" * (1 << 20) + b"\n", "bytes, at most"),
    ]:
        p.write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            load_params(p)
    p.unlink()
    p.mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_params(p)


def test_bad_yaml_in_an_override_names_the_key(tmp_path):
    from clflow.config import check_overrides

    p = write(tmp_path, "train:\n  lr: 0.1\n")
    for value in ("[unclosed", "!!python/object/apply:os.system ['true']"):
        with pytest.raises(ConfigError, match=r"field 'train.seeds': not valid YAML"):
            check_overrides(p, {"train.seeds": value})


def test_stream_shape_is_for_parquet_streams(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("stream:\n  source: parquet\n  path: s\n  shape: [1, 40]\n")
    assert load_params(p).stream.shape == [1, 40]
    p.write_text("stream:\n  shape: [1, 64]\n")
    with pytest.raises(ConfigError, match="stream.shape is for parquet"):
        load_params(p)
    p.write_text("stream:\n  source: parquet\n  path: s\n  shape: [40]\n")
    with pytest.raises(ConfigError, match="stream.shape"):
        load_params(p)
