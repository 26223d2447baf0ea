import numpy as np
import pytest

from clflow.errors import ClflowError
from clflow.lingo.targets import (
    encode_names,
    load_encoder,
    random_targets,
    read_targets,
    targets_frame,
)
from clflow.util.io import write_parquet

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATE = "the handwritten digit {name}"


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


@pytest.fixture(scope="module")
def targets(encoder):
    return encode_names(NAMES, TEMPLATE, encoder)


def test_targets_are_deterministic_and_normalised(encoder, targets):
    assert targets.shape == (10, 384) and targets.dtype == np.float32
    assert np.allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(targets, encode_names(NAMES, TEMPLATE, encoder))


def test_language_structure_is_real(targets):
    # a real encoder: different names give different, not orthogonal, vectors
    cos = targets @ targets.T
    assert np.all(cos[np.triu_indices(10, 1)] < 0.999) and np.all(cos[np.triu_indices(10, 1)] > 0.2)


def test_appending_classes_keeps_earlier_targets(encoder, targets):
    more = encode_names(NAMES + ["ten", "eleven"], TEMPLATE, encoder)
    assert np.array_equal(more[:10], targets)


def test_unknown_encoder_path(tmp_path):
    with pytest.raises(ClflowError) as err:
        load_encoder(tmp_path / "nope")
    assert (
        "field 'lingo.encoder_path'" in err.value.line()
        and str(tmp_path / "nope") in err.value.line()
    )


def test_template_needs_name(encoder):
    with pytest.raises(ClflowError, match="template must contain"):
        encode_names(NAMES, "a digit", encoder)


def test_names_that_do_not_match_the_stream(tmp_path, targets):
    path = tmp_path / "t.parquet"
    write_parquet(path, targets_frame(NAMES, TEMPLATE, targets))
    assert np.array_equal(read_targets(path, NAMES), targets)
    with pytest.raises(ClflowError) as err:
        read_targets(path, NAMES[:9] + ["nine!"])
    assert err.value.line().startswith(f"{path}: field 'name': class names")


def test_random_control_is_unit_and_seeded():
    a, b = random_targets(10, 384, 0), random_targets(10, 384, 0)
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1)
